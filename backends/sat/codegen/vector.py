"""Lowerings on the vector unit: activations, bias, loss, layout (pooling: :mod:`.pool`).

Activations are streamed in chunks of whole planes (View3 planes: rows of
a matrix, or (n, c) planes of an NCHW tensor): DMA in, one or a few
``vec`` instructions, DMA out. Per-channel work (bias over channels,
batchnorm) uses chunks of one image's channels as a ``[C, H*W]`` tile and
``col`` broadcasts of per-channel ``[C]`` vectors.
"""

from __future__ import annotations

from satc.backends.sat.codegen.lowering import (LowerCtx, chunks, lcm, lowering, same_views,
                                                view_alias)
from satc.backends.sat.codegen.memory import OneHot
from satc.backends.sat.codegen.transformer import broadcast_add
from satc.ir.graph import Node

TILE_ALIGN = 64


def _tile_bytes(rows: int, cols: int) -> int:
    return -(-rows * cols * 4 // TILE_ALIGN) * TILE_ALIGN


# ---------------------------------------------------------------- elementwise
def _elementwise(ctx: LowerCtx, func: str, srcs: list, out, imm: float = 0.0) -> None:
    """out = func(srcs...) chunk by chunk; the result overwrites the first source's tile."""
    views = [ctx.dense(v).view3() for v in srcs] + [ctx.dense(out).view3()]
    same_views(ctx, views)
    v0 = views[0]
    step, slots = ctx.chunking(v0, len(srcs))
    tiles = [[ctx.alloc("vec", _tile_bytes(step * v0.rows, v0.cols), f"{func} tile")
              for _ in srcs] for _ in range(slots)]
    for i, (p0, p1) in enumerate(chunks(v0.planes, step)):
        t = tiles[i % slots]
        for v, addr in zip(views, t):
            ctx.dma3("load", v, p0, p1, "vec", addr)
        kw = dict(s0_addr=t[0], d_addr=t[0])
        if len(srcs) > 1:
            kw["s1_addr"] = t[1]
        ctx.b.vec(func, (p1 - p0) * v0.rows, v0.cols, imm=imm, **kw)
        ctx.dma3("store", views[-1], p0, p1, "vec", t[0])


@lowering("relu")
def lower_relu(ctx: LowerCtx, node: Node) -> None:
    """relu(x): vec relu."""
    _elementwise(ctx, "relu", [node.inputs[0]], node.outputs[0])


@lowering("relu_grad")
def lower_relu_grad(ctx: LowerCtx, node: Node) -> None:
    """relu_grad(dy, y) = dy where y > 0: vec relu_grad(s0=y, s1=dy)."""
    dy, y = node.inputs
    _elementwise(ctx, "relu_grad", [y, dy], node.outputs[0])


@lowering("add", "sum")
def lower_add(ctx: LowerCtx, node: Node) -> None:
    """Elementwise sum of same-shape inputs (vec add); a two-input add may broadcast one
    operand over leading axes (:func:`.transformer.broadcast_add`)."""
    ins = list(node.inputs)
    if any(v.shape != node.outputs[0].shape for v in ins):
        if len(ins) != 2:
            raise ctx.fail("broadcasting sum of more than two inputs",
                           "the SAT lowering broadcasts in two-input adds only")
        broadcast_add(ctx, ins[0], ins[1], node.outputs[0])
        return
    if len(ins) == 1:
        _elementwise(ctx, "copy", ins, node.outputs[0])
        return
    _elementwise(ctx, "add", ins[:2], node.outputs[0])
    for v in ins[2:]:
        _elementwise(ctx, "add", [node.outputs[0], v], node.outputs[0])


@lowering("scale")
def lower_scale(ctx: LowerCtx, node: Node) -> None:
    """x * factor: vec mul_imm."""
    _elementwise(ctx, "mul_imm", [node.inputs[0]], node.outputs[0], imm=node.attrs["factor"])


# ---------------------------------------------------------------- channels
class _Channels:
    """A [rows, F] tensor (channels along the last axis; rank 3 [B, T, F] is seen as
    [B*T, F], ``rank`` 2) or NCHW (channels on axis 1)."""

    def __init__(self, ctx: LowerCtx, v, axis: int) -> None:
        s = ctx.dense(v)
        self.view = s.view3()
        self.rank = len(v.shape)
        axis %= self.rank
        if self.rank in (2, 3) and axis == self.rank - 1:
            self.channels, self.count = v.shape[-1], self.view.planes
            self.rank = 2
        elif self.rank == 4 and axis == 1:
            self.channels = v.shape[1]
            self.count = v.shape[0] * v.shape[2] * v.shape[3]
        else:
            raise ctx.fail(f"per-channel op over axis {axis} of a rank-{self.rank} tensor",
                           "only [N, F] with axis -1 and NCHW with axis 1 are supported yet")
        self.images = v.shape[0]


def _channel_chunks(ctx: LowerCtx, c: _Channels, tiles: int):
    """(p0, p1, tile rows, tile cols, c0, c1) chunks; rank 4: channel ranges of one image."""
    v = c.view
    if c.rank == 2:
        step = ctx.plane_chunk(v, tiles)
        for p0, p1 in chunks(v.planes, step):
            yield p0, p1, p1 - p0, v.cols, 0, c.channels
        return
    hw = v.rows * v.cols
    step = ctx.plane_chunk(v, tiles)
    for n in range(c.images):
        for c0, c1 in chunks(c.channels, step):
            yield n * c.channels + c0, n * c.channels + c1, c1 - c0, hw, c0, c1


def _bcast(c: _Channels) -> str:
    """How a per-channel vector broadcasts over a chunk tile."""
    return "row" if c.rank == 2 else "col"


def _load_vector(ctx: LowerCtx, v, what: str) -> int:
    """Load a rank-1 tensor (per-channel vector) into the vec buffer; returns its address."""
    s = ctx.dense(v)
    addr_, rows, cols = s.matrix()
    addr = ctx.alloc("vec", _tile_bytes(rows, cols), what)
    ctx.b.load("vec", addr, addr_, rows, cols)
    return addr


def _store_vector(ctx: LowerCtx, v, addr: int) -> None:
    s = ctx.dense(v)
    dram, rows, cols = s.matrix()
    ctx.b.store("vec", addr, dram, rows, cols)


def _reduce_channels(ctx: LowerCtx, func: str, c: _Channels, t: int, rows: int, cols: int,
                     dst: int, c0: int, first: bool) -> None:
    """dst[c0:..] (+)= per-channel reduction of a chunk tile at ``t``."""
    if c.rank == 2:
        ctx.b.vec(func, rows, cols, s0_addr=t, d_addr=dst, axis=0, accumulate=not first)
    else:
        ctx.b.vec(func, rows, cols, s0_addr=t, d_addr=dst + c0 * 4, axis=1, accumulate=not first)


@lowering("bias_add")
def lower_bias_add(ctx: LowerCtx, node: Node) -> None:
    """x + b along the channel axis: vec add with a row (rank 2) or col (NCHW) broadcast."""
    x, b = node.inputs
    c = _Channels(ctx, x, node.attrs["axis"])
    out = ctx.dense(node.outputs[0]).view3()
    same_views(ctx, [c.view, out])
    baddr = _load_vector(ctx, b, "bias")
    t: list[int] = []
    for i, (p0, p1, rows, cols, c0, _) in enumerate(_channel_chunks(ctx, c, 2)):
        if not t:
            t = [ctx.alloc("vec", _tile_bytes(rows, cols), "bias_add tile") for _ in range(2)]
        a = t[i % 2]
        ctx.dma3("load", c.view, p0, p1, "vec", a)
        s1 = baddr if c.rank == 2 else baddr + c0 * 4
        ctx.b.vec("add", rows, cols, s0_addr=a, s1_addr=s1, d_addr=a, bcast=_bcast(c))
        ctx.dma3("store", out, p0, p1, "vec", a)


@lowering("bias_grad")
def lower_bias_grad(ctx: LowerCtx, node: Node) -> None:
    """db = dy summed over everything but the channel axis: vec reduce_sum, accumulated."""
    c = _Channels(ctx, node.inputs[0], node.attrs["axis"])
    acc = ctx.alloc("vec", _tile_bytes(1, c.channels), "bias gradient")
    t: list[int] = []
    seen: set[int] = set()
    for i, (p0, p1, rows, cols, c0, _) in enumerate(_channel_chunks(ctx, c, 2)):
        if not t:
            t = [ctx.alloc("vec", _tile_bytes(rows, cols), "bias_grad tile") for _ in range(2)]
        a = t[i % 2]
        ctx.dma3("load", c.view, p0, p1, "vec", a)
        first = c0 not in seen if c.rank == 4 else i == 0
        _reduce_channels(ctx, "reduce_sum", c, a, rows, cols, acc, c0, first)
        seen.add(c0)
    _store_vector(ctx, node.outputs[0], acc)


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


# ---------------------------------------------------------------- layout
@lowering("reshape", alias=view_alias)
def lower_reshape(ctx: LowerCtx, node: Node) -> None:
    """A view when the planner aliased the storage; otherwise a DMA copy in logical order."""
    src, dst = ctx.dense(node.inputs[0]), ctx.dense(node.outputs[0])
    if dst.regions == src.regions and not src.padded:
        return
    vi, vo = src.view3(), dst.view3()
    if vi.order != "logical" or vo.order != "logical":
        raise ctx.fail("reshape of a tap-major weight", "not supported by the SAT lowering yet")
    unit = lcm(vi.rows * vi.cols, vo.rows * vo.cols)            # elements per aligned chunk
    per_in, per_out = unit // (vi.rows * vi.cols), unit // (vo.rows * vo.cols)
    total = vi.planes // per_in
    groups_per = max(1, ctx.plane_chunk(vi, 1) // per_in)
    t = ctx.alloc("vec", _tile_bytes(groups_per * unit, 1), "reshape tile")
    for g0, g1 in chunks(total, groups_per):
        ctx.dma3("load", vi, g0 * per_in, g1 * per_in, "vec", t)
        ctx.dma3("store", vo, g0 * per_out, g1 * per_out, "vec", t)
