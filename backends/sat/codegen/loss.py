"""Lowerings of the loss op family (``ir/ops/loss.py``): cross-entropy and its gradient on the
vector unit (labels stored as one-hot rows).

With ``ignore_index`` the label encoder stores ignored rows as zero rows, so
their ``xent`` is 0; the number of rows that count depends on the labels, so
the program computes it: the loss node sums each one-hot row (1 kept, 0
ignored) into a per-row mask, counts the kept rows, and stores the masks and
1/max(count, 1) in a DRAM scratch ``[rows + 1, 1]`` (``<labels>#ce_weights``);
the loss is the sum of ``xent`` times 1/count (no row kept: 0 * inf = NaN, as
torch). The gradient node reads them back: per-row weight = mask *
1/max(count, 1), then ``xent_grad`` times the weight (``col`` broadcast): 0 on
ignored rows, and everywhere when none is kept (as torch).
"""

from __future__ import annotations

from satc.backends.sat.codegen.lowering import LowerCtx, chunks, lowering
from satc.backends.sat.codegen.memory import OneHot
from satc.backends.sat.codegen.tensor import _tile_bytes
from satc.ir.graph import Node


def _weights_key(node: Node) -> str:
    return f"{node.inputs[1].name}#ce_weights"


def _derived(node: Node) -> dict[str, tuple[int, ...]]:
    """The masks + 1/count scratch of a loss with ignore_index (none without)."""
    if node.attrs.get("ignore_index") is None:
        return {}
    return {_weights_key(node): (node.inputs[0].shape[0] + 1, 1)}


# ---------------------------------------------------------------- loss
def _loss_tiles(ctx: LowerCtx, node: Node):
    logits, labels = node.inputs[0], node.inputs[1]
    lv = ctx.dense(logits).view3()
    yv = ctx.st(labels)
    if len(logits.shape) != 2 or not isinstance(yv, OneHot):
        raise ctx.fail("cross-entropy needs [N, classes] logits and one-hot labels",
                       "the memory planner stores int64 labels one-hot")
    return lv, yv.region


def _weights_addr(ctx: LowerCtx, node: Node) -> int | None:
    """DRAM address of the masks + 1/count scratch, None without ignore_index."""
    if node.attrs.get("ignore_index") is None:
        return None
    return ctx.storage[_weights_key(node)].region.addr


@lowering("cross_entropy", derived=_derived)
def lower_cross_entropy(ctx: LowerCtx, node: Node) -> None:
    """Mean softmax cross-entropy: vec xent per row, reduce_sum over rows, scale 1/N (with
    ignore_index: times 1/count of the kept rows, counted from the one-hot rows)."""
    lv, yreg = _loss_tiles(ctx, node)
    batch, classes = lv.planes, lv.cols
    waddr = _weights_addr(ctx, node)
    if waddr is not None:
        ctx.first_use(_weights_key(node))          # this node writes the scratch
    step = ctx.plane_chunk(lv, 3 if waddr is None else 4)
    tl = ctx.alloc("vec", _tile_bytes(step, classes), "logits tile")
    ty = ctx.alloc("vec", _tile_bytes(step, classes), "labels tile")
    tr = ctx.alloc("vec", _tile_bytes(step, 1), "per-row loss")
    total = ctx.alloc("vec", _tile_bytes(1, 1), "loss")
    if waddr is not None:
        tm = ctx.alloc("vec", _tile_bytes(step, 1), "row masks")
        count = ctx.alloc("vec", _tile_bytes(1, 1), "kept rows")
        inv = ctx.alloc("vec", _tile_bytes(1, 1), "1 / max(kept rows, 1)")
    for i, (r0, r1) in enumerate(chunks(batch, step)):
        ctx.dma3("load", lv, r0, r1, "vec", tl)
        ctx.b.load("vec", ty, yreg.addr + r0 * classes * 4, r1 - r0, classes)
        ctx.b.vec("xent", r1 - r0, classes, s0_addr=tl, s1_addr=ty, d_addr=tr, axis=1)
        ctx.b.vec("reduce_sum", r1 - r0, 1, s0_addr=tr, d_addr=total, axis=0, accumulate=i > 0)
        if waddr is not None:
            ctx.b.vec("reduce_sum", r1 - r0, classes, s0_addr=ty, d_addr=tm, axis=1)
            ctx.b.store("vec", tm, waddr + r0 * 4, 1, r1 - r0)
            ctx.b.vec("reduce_sum", r1 - r0, 1, s0_addr=tm, d_addr=count, axis=0,
                      accumulate=i > 0)
    if waddr is None:
        ctx.b.vec("mul_imm", 1, 1, s0_addr=total, d_addr=total, imm=1.0 / batch)
    else:
        ctx.b.vec("max_imm", 1, 1, s0_addr=count, d_addr=inv, imm=1.0)
        ctx.b.vec("pow_imm", 1, 1, s0_addr=inv, d_addr=inv, imm=-1.0)
        ctx.b.store("vec", inv, waddr + batch * 4, 1, 1)
        ctx.b.vec("pow_imm", 1, 1, s0_addr=count, d_addr=count, imm=-1.0)
        ctx.b.vec("mul", 1, 1, s0_addr=total, s1_addr=count, d_addr=total)
    ctx.b.store("vec", total, ctx.dense(node.outputs[0]).view3().addr, 1, 1)


@lowering("cross_entropy_grad", derived=_derived)
def lower_cross_entropy_grad(ctx: LowerCtx, node: Node) -> None:
    """dlogits = (softmax - onehot) * dloss / N: vec xent_grad; dloss must be a constant. With
    ignore_index: xent_grad * dloss, times the per-row weight mask / count of the loss node."""
    lv, yreg = _loss_tiles(ctx, node)
    seed = node.inputs[2]
    init = ctx.graph_constants.get(seed.name)
    if init is None:
        raise ctx.fail(f"the loss gradient seed %{seed.name} is not a compile-time constant",
                       "build the training graph with build_training_graph (seed 1.0)")
    batch, classes = lv.planes, lv.cols
    out = ctx.dense(node.outputs[0]).view3()
    waddr = _weights_addr(ctx, node)
    if waddr is not None and ctx.first_use(_weights_key(node)):
        raise ctx.fail("cross_entropy_grad with ignore_index before its cross_entropy (which "
                       "counts the kept rows)", "build the training graph with "
                       "build_training_graph, which computes the loss first")
    step = ctx.plane_chunk(lv, 2 if waddr is None else 3)
    tl = ctx.alloc("vec", _tile_bytes(step, classes), "logits tile")
    ty = ctx.alloc("vec", _tile_bytes(step, classes), "labels tile")
    if waddr is not None:
        tw = ctx.alloc("vec", _tile_bytes(step, 1), "row weights")
        inv = ctx.alloc("vec", _tile_bytes(1, 1), "1 / max(kept rows, 1)")
        ctx.b.load("vec", inv, waddr + batch * 4, 1, 1)
    for r0, r1 in chunks(batch, step):
        ctx.dma3("load", lv, r0, r1, "vec", tl)
        ctx.b.load("vec", ty, yreg.addr + r0 * classes * 4, r1 - r0, classes)
        if waddr is None:
            ctx.b.vec("xent_grad", r1 - r0, classes, s0_addr=tl, s1_addr=ty, d_addr=tl, axis=1,
                      imm=float(init) / batch)
        else:
            ctx.b.load("vec", tw, waddr + r0 * 4, 1, r1 - r0)
            ctx.b.vec("mul", 1, r1 - r0, s0_addr=tw, s1_addr=inv, d_addr=tw, bcast="col")
            ctx.b.vec("xent_grad", r1 - r0, classes, s0_addr=tl, s1_addr=ty, d_addr=tl, axis=1,
                      imm=float(init))
            ctx.b.vec("mul", r1 - r0, classes, s0_addr=tl, s1_addr=tw, d_addr=tl, bcast="col")
        ctx.dma3("store", out, r0, r1, "vec", tl)
