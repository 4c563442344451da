"""Lowerings of the loss op family (``ir/ops/loss.py``): cross-entropy and its gradient on the
vector unit (labels stored as one-hot rows)."""

from __future__ import annotations

from satc.backends.sat.codegen.lowering import LowerCtx, chunks, lowering
from satc.backends.sat.codegen.memory import OneHot
from satc.backends.sat.codegen.tensor import _tile_bytes
from satc.ir.graph import Node


# ---------------------------------------------------------------- loss
def _loss_tiles(ctx: LowerCtx, node: Node):
    logits, labels = node.inputs[0], node.inputs[1]
    lv = ctx.dense(logits).view3()
    yv = ctx.st(labels)
    if len(logits.shape) != 2 or not isinstance(yv, OneHot):
        raise ctx.fail("cross-entropy needs [N, classes] logits and one-hot labels",
                       "the memory planner stores int64 labels one-hot")
    return lv, yv.region


@lowering("cross_entropy")
def lower_cross_entropy(ctx: LowerCtx, node: Node) -> None:
    """Mean softmax cross-entropy: vec xent per row, reduce_sum over rows, scale 1/N."""
    lv, yreg = _loss_tiles(ctx, node)
    batch, classes = lv.planes, lv.cols
    step = ctx.plane_chunk(lv, 3)
    tl = ctx.alloc("vec", _tile_bytes(step, classes), "logits tile")
    ty = ctx.alloc("vec", _tile_bytes(step, classes), "labels tile")
    tr = ctx.alloc("vec", _tile_bytes(step, 1), "per-row loss")
    total = ctx.alloc("vec", _tile_bytes(1, 1), "loss")
    for i, (r0, r1) in enumerate(chunks(batch, step)):
        ctx.dma3("load", lv, r0, r1, "vec", tl)
        ctx.b.load("vec", ty, yreg.addr + r0 * classes * 4, r1 - r0, classes)
        ctx.b.vec("xent", r1 - r0, classes, s0_addr=tl, s1_addr=ty, d_addr=tr, axis=1)
        ctx.b.vec("reduce_sum", r1 - r0, 1, s0_addr=tr, d_addr=total, axis=0, accumulate=i > 0)
    ctx.b.vec("mul_imm", 1, 1, s0_addr=total, d_addr=total, imm=1.0 / batch)
    ctx.b.store("vec", total, ctx.dense(node.outputs[0]).view3().addr, 1, 1)


@lowering("cross_entropy_grad")
def lower_cross_entropy_grad(ctx: LowerCtx, node: Node) -> None:
    """dlogits = (softmax - onehot) * dloss / N: vec xent_grad; dloss must be a constant."""
    lv, yreg = _loss_tiles(ctx, node)
    seed = node.inputs[2]
    init = ctx.graph_constants.get(seed.name)
    if init is None:
        raise ctx.fail(f"the loss gradient seed %{seed.name} is not a compile-time constant",
                       "build the training graph with build_training_graph (seed 1.0)")
    batch, classes = lv.planes, lv.cols
    out = ctx.dense(node.outputs[0]).view3()
    step = ctx.plane_chunk(lv, 2)
    tl = ctx.alloc("vec", _tile_bytes(step, classes), "logits tile")
    ty = ctx.alloc("vec", _tile_bytes(step, classes), "labels tile")
    for r0, r1 in chunks(batch, step):
        ctx.dma3("load", lv, r0, r1, "vec", tl)
        ctx.b.load("vec", ty, yreg.addr + r0 * classes * 4, r1 - r0, classes)
        ctx.b.vec("xent_grad", r1 - r0, classes, s0_addr=tl, s1_addr=ty, d_addr=tl, axis=1,
                  imm=float(init) / batch)
        ctx.dma3("store", out, r0, r1, "vec", tl)
