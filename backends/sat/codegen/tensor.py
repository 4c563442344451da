"""Lowerings of the tensor op family (``ir/ops/tensor.py``) and bias, on the vector unit.

Activations are streamed in chunks of whole planes (View3 planes: rows of
a matrix, or (n, c) planes of an NCHW tensor): DMA in, one or a few
``vec`` instructions, DMA out. Per-channel work (bias over channels,
batchnorm) uses chunks of one image's channels as a ``[C, H*W]`` tile and
``col`` broadcasts of per-channel ``[C]`` vectors. Row-major tensors seen as
matrices ``[rows, cols]`` (cols: the trailing axes an op works along) stream
row chunks through the vector buffer; per-row statistics are ``[rows, 1]``
columns applied with ``col`` broadcasts, per-feature vectors with ``row``
broadcasts.

* ``relu`` / ``relu_grad``, ``add`` / ``sum``, ``scale``, ``bias_add`` /
  ``bias_grad``, ``reshape`` (a view of its input);
* ``gelu`` / ``gelu_grad`` (exact erf), ``softmax`` / ``softmax_grad`` along
  the last axis: vector functions per chunk;
* ``sigmoid``, ``tanh``, ``silu``, ``hardswish`` and their gradients, ``exp``, ``log``,
  ``log1p``: the vector function of the same name per chunk (``log1p_grad``: ``add_imm``,
  ``pow_imm`` -1, ``mul``); ``sign``: two ``mul_imm`` by 2^75, a clamp to [-1, 1] and a
  ``pass_lt`` that maps NaN to torch's 0; ``hardtanh`` (ReLU6):
  ``max_imm`` then ``min_imm``, its gradient ``pass_gt`` then ``pass_lt``;
* ``abs``: ``leaky_relu`` with slope -1; its gradient dy * sign(x) as ``pass_gt`` minus
  ``pass_lt`` (x loaded twice, so x = 0 gets 0 as in torch);
* ``minimum`` / ``maximum``: exact selects from the sign of a - b (``pass_gt`` /
  ``pass_lt`` pass one operand or 0, and x - x = 0, x + 0 = x), five passes over tiles
  (a, b, a); ``minmax_grad`` as (dy + pass_chosen - pass_other) / 2 from the sign of
  this - other (dy, 0 or dy / 2 exactly), six passes;
* ``leaky_relu``, ``elu`` (SELU, CELU), ``softplus`` and their gradients: the
  vector function of the same name with one attribute in ``imm``, ELU's
  ``scale`` / ``input_scale`` and softplus' ``beta`` as ``mul_imm`` steps
  around it (left out when 1);
* ``mul``: same-shape operands, one scalar per plane (``col`` broadcast: a
  squeeze-excite gate ``[N, C, 1, 1]``) or one operand over leading axes;
* ``transpose`` -- a strided DMA gather in output order into the vector
  buffer, then a contiguous store: a permutation that keeps the last axis
  moves runs of it; one that moves the last axis loads runs of the input's
  last axis, transposes them on the vector unit (``transpose``) and stores runs
  of the output's (single elements only when a plane pair does not fit);
* ``reduce_mean`` and ``sum_to`` over one contiguous run of axes (the
  tensor as ``[outer, R, inner]``): ``reduce_sum`` along rows or cols,
  accumulated across chunks; ``broadcast_to`` -- a DMA store whose buffer
  strides are 0 along the broadcast axes;
* ``dropout`` -- the identity in the compiled step (as the IR kernel): the
  output aliases the input's storage.
"""

from __future__ import annotations

import numpy as np
from satc.backends.sat.codegen.lowering import (
    MAX_PLANES,
    MAX_ROWS,
    LowerCtx,
    chunks,
    lcm,
    lowering,
    same_views,
    view_alias,
)
from satc.backends.sat.codegen.memory import Dense, OneHot, View3
from satc.backends.sat.codegen.partition import ALIGN, align
from satc.backends.sat.isa import field_max
from satc.backends.sat.program import Region
from satc.ir.graph import Node, Value


# ---------------------------------------------------------------- helpers
def _flat(ctx: LowerCtx, v: Value) -> Dense:
    """The unpadded row-major storage of ``v`` (every op here reads logical order)."""
    s = ctx.dense(v)
    if not isinstance(s, Dense) or s.padded:
        raise ctx.fail(f"%{v.name} is not stored row-major without a halo ({type(s).__name__})",
                       "transformer ops read plain row-major activations; check the memory plan")
    return s


def _matrix(ctx: LowerCtx, v: Value, cols: int) -> View3:
    """``v`` as ``rows x cols`` (rows = numel / cols), one row per View3 plane."""
    s = _flat(ctx, v)
    rows = int(np.prod(v.shape)) // cols
    return View3(rows, 1, cols, s.region.addr, cols, cols, "logical")


def _row_tiles(ctx: LowerCtx, rows: int, per_row: dict[str, int],
               what: str) -> tuple[int, list[dict[str, int]]]:
    """Rows per chunk and the chunk tiles (name -> vec address; ``per_row`` elements each).

    One slot when the whole tensor fits, else two (double buffering) when
    a row fits twice, else one.
    """
    free = ctx.arena.free_bytes("vec")
    width = 4 * sum(per_row.values())
    n = len(per_row)
    one = min(MAX_ROWS, (free - n * ALIGN) // width)
    if one >= rows:
        step, slots = rows, 1
    else:
        two = min(MAX_ROWS, (free - 2 * n * ALIGN) // (2 * width))
        step, slots = (two, 2) if two >= 1 else (one, 1)
    if step < 1:
        raise ctx.fail(f"one row of {what} ({width} bytes of tiles) does not fit the {free} free "
                       "bytes of the vec buffer", "raise vec_buffer_bytes in the hardware config")
    tiles = [{k: ctx.alloc("vec", step * c * 4, f"{what} {k}") for k, c in per_row.items()}
             for _ in range(slots)]
    return step, tiles


def _load_row_vector(ctx: LowerCtx, v: Value, what: str) -> int:
    """Load a per-feature tensor (gamma, beta) as one ``1 x numel`` row into vec."""
    s = _flat(ctx, v)
    n = int(np.prod(v.shape))
    addr = ctx.alloc("vec", n * 4, what)
    ctx.b.load("vec", addr, s.region.addr, 1, n)
    return addr


def _map(ctx: LowerCtx, func: str, srcs: list[Value], out: Value) -> None:
    """out = func(srcs...) over row chunks (s0 = srcs[0], s1 = srcs[1]); same-shape operands."""
    if any(tuple(v.shape) != tuple(out.shape) for v in srcs):
        raise ctx.fail(f"{func} over shapes {[tuple(v.shape) for v in srcs]}",
                       "elementwise operands must have the output's shape")
    cols = out.shape[-1] if out.shape else 1
    views = [_matrix(ctx, v, cols) for v in srcs]
    ov = _matrix(ctx, out, cols)
    step, slots = _row_tiles(ctx, ov.planes, {f"s{i}": cols for i in range(len(srcs))}, func)
    for i, (r0, r1) in enumerate(chunks(ov.planes, step)):
        t = slots[i % len(slots)]
        for j, v in enumerate(views):
            ctx.dma3("load", v, r0, r1, "vec", t[f"s{j}"])
        ctx.b.vec(func, r1 - r0, cols, s0_addr=t["s0"], s1_addr=t.get("s1", 0), d_addr=t["s0"])
        ctx.dma3("store", ov, r0, r1, "vec", t["s0"])


def _col(ctx: LowerCtx, func: str, rows: int, s0: int, d: int, imm: float = 0.0) -> None:
    """An elementwise op over a packed ``rows x 1`` column (as one row of ``rows``)."""
    ctx.b.vec(func, 1, rows, s0_addr=s0, d_addr=d, imm=imm)


def _norm_cols(node: Node, x: Value) -> int:
    """Columns of a layernorm: the product of its normalised (trailing) axes."""
    k = node.attrs["ndim"]
    return int(np.prod(x.shape[len(x.shape) - k:]))


def _tile_bytes(rows: int, cols: int) -> int:
    return align(rows * cols * 4)


# ---------------------------------------------------------------- elementwise
Step = tuple[str, int, int | None, int, float]   # func, s0 tile, s1 tile (or None), d tile, imm


def _elementwise(ctx: LowerCtx, func: str, srcs: list, out, imm: float = 0.0) -> None:
    """out = func(srcs...) chunk by chunk; the result overwrites the first source's tile."""
    _chain(ctx, srcs, out, [(func, 0, 1 if len(srcs) > 1 else None, 0, imm)], func)


def _chain(ctx: LowerCtx, srcs: list, out, steps: list[Step], what: str, result: int = 0) -> None:
    """out = tile ``result`` after ``steps`` over the chunk tiles of ``srcs`` (one per source)."""
    views = [ctx.dense(v).view3() for v in srcs] + [ctx.dense(out).view3()]
    same_views(ctx, views)
    v0 = views[0]
    step, slots = ctx.chunking(v0, len(srcs))
    tiles = [[ctx.alloc("vec", _tile_bytes(step * v0.rows, v0.cols), f"{what} tile")
              for _ in srcs] for _ in range(slots)]
    for i, (p0, p1) in enumerate(chunks(v0.planes, step)):
        t = tiles[i % slots]
        for v, addr in zip(views, t):
            ctx.dma3("load", v, p0, p1, "vec", addr)
        for func, a, b, d, imm in steps:
            kw = dict(s0_addr=t[a], d_addr=t[d])
            if b is not None:
                kw["s1_addr"] = t[b]
            ctx.b.vec(func, (p1 - p0) * v0.rows, v0.cols, imm=imm, **kw)
        ctx.dma3("store", views[-1], p0, p1, "vec", t[result])


@lowering("relu")
def lower_relu(ctx: LowerCtx, node: Node) -> None:
    """relu(x): vec relu."""
    _elementwise(ctx, "relu", [node.inputs[0]], node.outputs[0])


@lowering("relu_grad")
def lower_relu_grad(ctx: LowerCtx, node: Node) -> None:
    """relu_grad(dy, y, *terms) = (dy + terms...) where y > 0: accumulating vec adds of the
    fused gradient sum's terms onto dy's tile, then vec relu_grad(s0=y, s1=dy)."""
    dy, y, *terms = node.inputs
    adds: list[Step] = [("add", 1, j, 1, 0.0) for j in range(2, 2 + len(terms))]
    _chain(ctx, [y, dy, *terms], node.outputs[0], [*adds, ("relu_grad", 0, 1, 0, 0.0)],
           "relu_grad")


@lowering("add", "sum")
def lower_add(ctx: LowerCtx, node: Node) -> None:
    """Elementwise sum of same-shape inputs (vec add); a two-input add may broadcast one
    operand over leading axes (:func:`.transformer.broadcast_add`)."""
    ins = list(node.inputs)
    if any(v.shape != node.outputs[0].shape for v in ins):
        if len(ins) != 2:
            raise ctx.fail("broadcasting sum of more than two inputs",
                           "the SAT lowering broadcasts in two-input adds only")
        big, small = ins if ins[0].shape == node.outputs[0].shape else ins[::-1]
        if big.shape == node.outputs[0].shape and _plane_prefix(tuple(small.shape),
                                                                tuple(big.shape)):
            _plane_scale(ctx, big, small, node.outputs[0], func="add")   # [.., T, 1] per row
            return
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


@lowering("mul")
def lower_mul(ctx: LowerCtx, node: Node) -> None:
    """a * b: vec mul of same-shape operands; an operand of one scalar per plane ([N, C, 1, 1]
    over NCHW, [.., T, 1] over [.., T, D]: a squeeze-excite gate, a norm's per-row scale) is a
    ``col`` broadcast; one broadcast over leading axes a ``row`` broadcast."""
    a, b = node.inputs
    out = node.outputs[0]
    if a.shape == out.shape and b.shape == out.shape:
        _elementwise(ctx, "mul", [a, b], out)
        return
    big, small = (a, b) if a.shape == out.shape else (b, a)
    if big.shape == out.shape and _plane_prefix(tuple(small.shape), tuple(out.shape)):
        _plane_scale(ctx, big, small, out)
        return
    broadcast_add(ctx, a, b, out, func="mul")


def _plane_prefix(small: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """True when ``small`` is ``shape`` with the trailing (plane) axes set to 1."""
    lead = 2 if len(shape) == 4 else len(shape) - 1
    ss = (1,) * (len(shape) - len(small)) + small
    return ss[:lead] == shape[:lead] and all(s == 1 for s in ss[lead:])


def _plane_scale(ctx: LowerCtx, x: Value, s: Value, out: Value, func: str = "mul") -> None:
    """out[p] = x[p] * s[p] (``func``: mul or add) for every View3 plane p: the packed chunk as
    ``planes x plane`` rows, s as a ``col`` broadcast from vec."""
    xv, ov = ctx.dense(x).view3(), ctx.dense(out).view3()
    same_views(ctx, [xv, ov])
    width = xv.rows * xv.cols
    if width > MAX_ROWS:
        raise ctx.fail(f"planes of {width} elements scaled by one value each",
                       "the vector unit's cols field is 16 bits; split the planes")
    saddr = _load_row_vector(ctx, s, "per-plane scale")
    step, slots = ctx.chunking(xv, 1)
    tiles = [ctx.alloc("vec", _tile_bytes(step * xv.rows, xv.cols), "mul tile") for _ in range(slots)]
    for i, (p0, p1) in enumerate(chunks(xv.planes, step)):
        t = tiles[i % slots]
        ctx.dma3("load", xv, p0, p1, "vec", t)
        ctx.b.vec(func, p1 - p0, width, s0_addr=t, s1_addr=saddr + p0 * 4, d_addr=t, bcast="col")
        ctx.dma3("store", ov, p0, p1, "vec", t)


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
                     dst: int, c0: int, first: bool, s1: int = 0, bcast: str = "none") -> None:
    """dst[c0:..] (+)= per-channel reduction of a chunk tile at ``t`` (and ``s1``: reduce_dot,
    or a per-channel vector with ``bcast``: reduce_sqdev)."""
    if c.rank == 2:
        ctx.b.vec(func, rows, cols, s0_addr=t, s1_addr=s1, d_addr=dst, axis=0,
                  accumulate=not first, bcast=bcast)
    else:
        ctx.b.vec(func, rows, cols, s0_addr=t, s1_addr=s1, d_addr=dst + c0 * 4, axis=1,
                  accumulate=not first, bcast=bcast)


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


# ---------------------------------------------------------------- layout
@lowering("reshape", alias=view_alias)
def lower_reshape(ctx: LowerCtx, node: Node) -> None:
    """A view when the planner aliased the storage (always for int64 ids, whose one-hot rows
    do not depend on the shape); otherwise a DMA copy in logical order."""
    if isinstance(ctx.st(node.inputs[0]), OneHot):
        return
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


# ---------------------------------------------------------------- activations
def _exact_gelu(ctx: LowerCtx, node: Node) -> None:
    if node.attrs.get("approximate", "none") != "none":
        raise ctx.fail(f"GELU approximate={node.attrs['approximate']!r}",
                       "the vector unit implements the exact erf GELU; use approximate='none'")


@lowering("gelu")
def lower_gelu(ctx: LowerCtx, node: Node) -> None:
    """Exact GELU: vec gelu."""
    _exact_gelu(ctx, node)
    _map(ctx, "gelu", [node.inputs[0]], node.outputs[0])


@lowering("gelu_grad")
def lower_gelu_grad(ctx: LowerCtx, node: Node) -> None:
    """gelu_grad(dy, x) = dy * gelu'(x): vec gelu_grad(s0=x, s1=dy)."""
    _exact_gelu(ctx, node)
    dy, x = node.inputs
    _map(ctx, "gelu_grad", [x, dy], node.outputs[0])


@lowering("sigmoid", "tanh", "silu", "hardswish", "exp", "log")
def lower_activation(ctx: LowerCtx, node: Node) -> None:
    """sigmoid / tanh / silu / hardswish / exp / log: the vector function of the same name."""
    _elementwise(ctx, node.op, [node.inputs[0]], node.outputs[0])


@lowering("sigmoid_grad", "tanh_grad", "silu_grad", "hardswish_grad")
def lower_activation_grad(ctx: LowerCtx, node: Node) -> None:
    """f_grad(dy, v): the vector function of the same name with s0 = v, s1 = dy."""
    dy, v = node.inputs
    _elementwise(ctx, node.op, [v, dy], node.outputs[0])


@lowering("hardtanh")
def lower_hardtanh(ctx: LowerCtx, node: Node) -> None:
    """clamp(x, lo, hi): vec max_imm lo, then min_imm hi, on the same tile."""
    lo, hi = float(node.attrs["min_val"]), float(node.attrs["max_val"])
    _chain(ctx, [node.inputs[0]], node.outputs[0],
           [("max_imm", 0, None, 0, lo), ("min_imm", 0, None, 0, hi)], "hardtanh")


@lowering("hardtanh_grad")
def lower_hardtanh_grad(ctx: LowerCtx, node: Node) -> None:
    """dy where lo < x < hi: vec pass_gt lo, then pass_lt hi (s0 = x), into the dy tile."""
    dy, x = node.inputs
    lo, hi = float(node.attrs["min_val"]), float(node.attrs["max_val"])
    _chain(ctx, [x, dy], node.outputs[0],
           [("pass_gt", 0, 1, 1, lo), ("pass_lt", 0, 1, 1, hi)], "hardtanh_grad", result=1)


@lowering("abs")
def lower_abs(ctx: LowerCtx, node: Node) -> None:
    """|x|: vec leaky_relu with slope -1 (x if x > 0 else -x)."""
    _elementwise(ctx, "leaky_relu", [node.inputs[0]], node.outputs[0], imm=-1.0)


@lowering("abs_grad")
def lower_abs_grad(ctx: LowerCtx, node: Node) -> None:
    """dy * sign(x) = where(x > 0, dy, 0) - where(x < 0, dy, 0): tiles (dy, x, x), pass_gt and
    pass_lt each over one x tile, then sub into dy's tile."""
    dy, x = node.inputs
    _chain(ctx, [dy, x, x], node.outputs[0],
           [("pass_gt", 1, 0, 1, 0.0), ("pass_lt", 2, 0, 2, 0.0), ("sub", 1, 2, 0, 0.0)],
           "abs_grad")


#: min / max: the pass that keeps the other operand where it is selected (sign of a - b).
_OTHER_WINS = {"minimum": "pass_gt", "maximum": "pass_lt"}
_FLIP = {"pass_gt": "pass_lt", "pass_lt": "pass_gt"}


@lowering("sign")
def lower_sign(ctx: LowerCtx, node: Node) -> None:
    """torch.sign: x * 2^75 * 2^75 (every nonzero finite fp32 x, denormals included, reaches
    |x| >= 2), clamped to [-1, 1] by max_imm / min_imm, then pass_lt 2 over itself turns NaN
    into torch's 0; +-0 and +-inf come out as torch's. Five passes on one tile."""
    big = float(2.0 ** 75)
    _chain(ctx, [node.inputs[0]], node.outputs[0],
           [("mul_imm", 0, None, 0, big), ("mul_imm", 0, None, 0, big),
            ("max_imm", 0, None, 0, -1.0), ("min_imm", 0, None, 0, 1.0),
            ("pass_lt", 0, 0, 0, 2.0)], "sign")


@lowering("log1p")
def lower_log1p(ctx: LowerCtx, node: Node) -> None:
    """ln(1 + x): vec log1p (exact near 0, where add_imm 1 then log would round x away)."""
    _elementwise(ctx, "log1p", [node.inputs[0]], node.outputs[0])


@lowering("log1p_grad")
def lower_log1p_grad(ctx: LowerCtx, node: Node) -> None:
    """dy / (1 + x): tiles (dy, x); add_imm 1 and pow_imm -1 on x's tile, then mul into dy's."""
    dy, x = node.inputs
    _chain(ctx, [dy, x], node.outputs[0],
           [("add_imm", 1, None, 1, 1.0), ("pow_imm", 1, None, 1, -1.0), ("mul", 0, 1, 0, 0.0)],
           "log1p_grad")


@lowering("minimum", "maximum")
def lower_minmax(ctx: LowerCtx, node: Node) -> None:
    """min(a, b) = b where a > b, plus a - (a where a > b) (max: with a < b). Tiles (a, b, a):
    the third becomes a - b, the second b where b wins, the third a where b wins, then the
    first a - that + the second. Every step is exact for finite operands (an infinite
    losing a, or a NaN in b alone, gives NaN / the other operand, where torch does not)."""
    a, b = node.inputs
    wins = _OTHER_WINS[node.op]
    _chain(ctx, [a, b, a], node.outputs[0],
           [("sub", 2, 1, 2, 0.0), (wins, 2, 1, 1, 0.0), (wins, 2, 0, 2, 0.0),
            ("sub", 0, 2, 0, 0.0), ("add", 0, 1, 0, 0.0)], node.op)


@lowering("minmax_grad")
def lower_minmax_grad(ctx: LowerCtx, node: Node) -> None:
    """dy where this operand is selected, dy / 2 at ties: (dy + chosen - lost) / 2 with chosen
    = dy where this wins and lost = dy where other wins, from the sign of this - other.
    Tiles (dy, this, other)."""
    dy, this, other = node.inputs
    mine = "pass_lt" if node.attrs["mode"] == "min" else "pass_gt"
    _chain(ctx, [dy, this, other], node.outputs[0],
           [("sub", 1, 2, 1, 0.0), (mine, 1, 0, 2, 0.0), (_FLIP[mine], 1, 0, 1, 0.0),
            ("add", 0, 2, 0, 0.0), ("sub", 0, 1, 0, 0.0), ("mul_imm", 0, None, 0, 0.5)],
           "minmax_grad")


@lowering("leaky_relu")
def lower_leaky_relu(ctx: LowerCtx, node: Node) -> None:
    """x if x > 0 else slope * x: vec leaky_relu (imm = negative_slope)."""
    _elementwise(ctx, "leaky_relu", [node.inputs[0]], node.outputs[0],
                 imm=float(node.attrs["negative_slope"]))


@lowering("leaky_relu_grad")
def lower_leaky_relu_grad(ctx: LowerCtx, node: Node) -> None:
    """dy if x > 0 else slope * dy: vec leaky_relu_grad (s0 = x, s1 = dy)."""
    dy, x = node.inputs
    _elementwise(ctx, "leaky_relu_grad", [x, dy], node.outputs[0],
                 imm=float(node.attrs["negative_slope"]))


def _scale_step(tile: int, factor: float) -> list[Step]:
    """``mul_imm factor`` on ``tile`` in place; none for a factor of 1."""
    return [] if factor == 1 else [("mul_imm", tile, None, tile, factor)]


def _elu_attrs(ctx: LowerCtx, node: Node) -> tuple[float, float, float]:
    alpha, scale, s = (float(node.attrs[k]) for k in ("alpha", "scale", "input_scale"))
    if s <= 0:
        raise ctx.fail(f"{node.op} with input_scale={s}",
                       "the vector unit's elu tests the sign of input_scale * x; use an "
                       "input_scale > 0 (ELU, SELU and CELU with alpha > 0 have one)")
    return alpha, scale, s


@lowering("elu")
def lower_elu(ctx: LowerCtx, node: Node) -> None:
    """scale * elu_alpha(x) with input_scale s: mul_imm s, elu (imm = alpha * s),
    mul_imm scale / s (the same sign test as torch's x > 0 since s > 0)."""
    alpha, scale, s = _elu_attrs(ctx, node)
    steps = _scale_step(0, s) + [("elu", 0, None, 0, alpha * s)] + _scale_step(0, scale / s)
    _chain(ctx, [node.inputs[0]], node.outputs[0], steps, "elu")


@lowering("elu_grad")
def lower_elu_grad(ctx: LowerCtx, node: Node) -> None:
    """dy * elu'(x): mul_imm s on the x tile, elu_grad (s0 = s * x, s1 = dy, imm = alpha * s),
    mul_imm scale, into the dy tile."""
    alpha, scale, s = _elu_attrs(ctx, node)
    dy, x = node.inputs
    steps = _scale_step(0, s) + [("elu_grad", 0, 1, 1, alpha * s)] + _scale_step(1, scale)
    _chain(ctx, [x, dy], node.outputs[0], steps, "elu_grad", result=1)


@lowering("softplus")
def lower_softplus(ctx: LowerCtx, node: Node) -> None:
    """softplus(beta * x) / beta: mul_imm beta, softplus (imm = threshold), mul_imm 1 / beta."""
    beta, thr = float(node.attrs["beta"]), float(node.attrs["threshold"])
    steps = _scale_step(0, beta) + [("softplus", 0, None, 0, thr)] + _scale_step(0, 1 / beta)
    _chain(ctx, [node.inputs[0]], node.outputs[0], steps, "softplus")


@lowering("softplus_grad")
def lower_softplus_grad(ctx: LowerCtx, node: Node) -> None:
    """dy * sigmoid(beta * x) (dy past the threshold): mul_imm beta on the x tile, then
    softplus_grad (s0 = beta * x, s1 = dy, imm = threshold) into the dy tile."""
    beta, thr = float(node.attrs["beta"]), float(node.attrs["threshold"])
    dy, x = node.inputs
    steps = _scale_step(0, beta) + [("softplus_grad", 0, 1, 1, thr)]
    _chain(ctx, [x, dy], node.outputs[0], steps, "softplus_grad", result=1)


def _power_steps(tile: int, e: float) -> list[Step]:
    """Steps raising ``tile`` to ``e`` in place: none for 1, ``mul`` by itself for 2 (exact,
    as the reference), else ``pow_imm``."""
    if e == 1:
        return []
    return [("mul", tile, tile, tile, 0.0)] if e == 2 else [("pow_imm", tile, None, tile, e)]


def _exponent(ctx: LowerCtx, node: Node) -> float:
    p = float(node.attrs["exponent"])
    if p == 0:
        raise ctx.fail(f"{node.op} with exponent 0 (%{node.inputs[-1].name} ** 0 is the "
                       "constant 1)", "replace the pow by a constant of ones")
    return p


@lowering("pow")
def lower_pow(ctx: LowerCtx, node: Node) -> None:
    """x ** p (a constant): vec mul for p = 2, pow_imm otherwise."""
    steps = _power_steps(0, _exponent(ctx, node)) or [("copy", 0, None, 0, 0.0)]
    _chain(ctx, [node.inputs[0]], node.outputs[0], steps, "pow")


@lowering("pow_grad")
def lower_pow_grad(ctx: LowerCtx, node: Node) -> None:
    """dy * (p * x^(p-1)) (the reference's order): x^(p-1) and mul_imm p in the x tile, then
    mul into the dy tile; p = 1 is mul_imm of dy."""
    dy, x = node.inputs
    p = _exponent(ctx, node)
    steps = ([("mul_imm", 1, None, 1, p)] if p == 1 else
             _power_steps(0, p - 1) + [("mul_imm", 0, None, 0, p), ("mul", 1, 0, 1, 0.0)])
    _chain(ctx, [x, dy], node.outputs[0], steps, "pow_grad", result=1)


@lowering("rsqrt")
def lower_rsqrt(ctx: LowerCtx, node: Node) -> None:
    """1 / sqrt(x): vec rsqrt with imm 0."""
    _elementwise(ctx, "rsqrt", [node.inputs[0]], node.outputs[0], imm=0.0)


@lowering("rsqrt_grad")
def lower_rsqrt_grad(ctx: LowerCtx, node: Node) -> None:
    """-0.5 * dy * y^3: three muls by y into the dy tile, then mul_imm -0.5 (the reference's
    order)."""
    dy, y = node.inputs
    _chain(ctx, [y, dy], node.outputs[0], [("mul", 1, 0, 1, 0.0)] * 3
           + [("mul_imm", 1, None, 1, -0.5)], "rsqrt_grad", result=1)


def _last_axis(ctx: LowerCtx, node: Node, v: Value) -> int:
    axis = node.attrs["axis"] % len(v.shape)
    if axis != len(v.shape) - 1:
        raise ctx.fail(f"softmax over axis {node.attrs['axis']} of {v.shape}",
                       "the SAT lowering supports softmax over the last axis; transpose first")
    return v.shape[-1]


@lowering("softmax")
def lower_softmax(ctx: LowerCtx, node: Node) -> None:
    """Softmax along the last axis: vec softmax per row chunk."""
    x = node.inputs[0]
    n = _last_axis(ctx, node, x)
    xv, yv = _matrix(ctx, x, n), _matrix(ctx, node.outputs[0], n)
    step, slots = _row_tiles(ctx, xv.planes, {"x": n}, "softmax")
    for i, (r0, r1) in enumerate(chunks(xv.planes, step)):
        t = slots[i % len(slots)]["x"]
        ctx.dma3("load", xv, r0, r1, "vec", t)
        ctx.b.vec("softmax", r1 - r0, n, s0_addr=t, d_addr=t, axis=1)
        ctx.dma3("store", yv, r0, r1, "vec", t)


@lowering("softmax_grad")
def lower_softmax_grad(ctx: LowerCtx, node: Node) -> None:
    """dx = y * (dy - sum(dy * y)) along the last axis."""
    dy, y = node.inputs
    n = _last_axis(ctx, node, y)
    views = {"dy": _matrix(ctx, dy, n), "y": _matrix(ctx, y, n)}
    out = _matrix(ctx, node.outputs[0], n)
    step, slots = _row_tiles(ctx, out.planes, {"dy": n, "y": n, "t": n, "s": 1}, "softmax_grad")
    for i, (r0, r1) in enumerate(chunks(out.planes, step)):
        t, r = slots[i % len(slots)], r1 - r0
        for k, v in views.items():
            ctx.dma3("load", v, r0, r1, "vec", t[k])
        ctx.b.vec("mul", r, n, s0_addr=t["dy"], s1_addr=t["y"], d_addr=t["t"])
        ctx.b.vec("reduce_sum", r, n, s0_addr=t["t"], d_addr=t["s"], axis=1)
        ctx.b.vec("sub", r, n, s0_addr=t["dy"], s1_addr=t["s"], d_addr=t["dy"], bcast="col")
        ctx.b.vec("mul", r, n, s0_addr=t["dy"], s1_addr=t["y"], d_addr=t["dy"])
        ctx.dma3("store", out, r0, r1, "vec", t["dy"])


# ---------------------------------------------------------------- layout
@lowering("dropout", alias=view_alias)
def lower_dropout(ctx: LowerCtx, node: Node) -> None:
    """The identity (dropout is not emulated, as in the IR): a view of the input's storage."""
    src, dst = ctx.dense(node.inputs[0]), ctx.dense(node.outputs[0])
    if dst.regions != src.regions:
        _map(ctx, "copy", [node.inputs[0]], node.outputs[0])


def _merge(axes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Drop size-1 axes and merge neighbours that are contiguous in every stride column.

    ``axes`` are (size, stride, stride, ...) rows, outermost first.
    """
    out: list[tuple[int, ...]] = []
    for ax in axes:
        if ax[0] == 1:
            continue
        if out and all(o == s * ax[0] for o, s in zip(out[-1][1:], ax[1:])):
            out[-1] = (out[-1][0] * ax[0],) + ax[1:]
        else:
            out.append(ax)
    return out


def _strides(shape: tuple[int, ...]) -> list[int]:
    """Row-major element strides of ``shape``."""
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= s
    return out[::-1]


def _transpose_on_chip(ctx: LowerCtx, sx: Dense, sy: Dense, axes: list[tuple[int, int, int]]
                       ) -> bool:
    """A permutation that moves the input's last axis, as contiguous runs through a vector
    transpose: load [planes][A][L] (L: the input's contiguous axis, A: the output's last axis,
    planes: the largest other axis) in runs of L, transpose on chip to [L][planes][A],
    store in runs of A; the other axes loop. ``axes``: (size, input stride, output stride)
    in output order, merged. False (nothing emitted) when one [A, L] plane pair does not fit
    the vec buffer or the fields."""
    (a, sa, _), rest = axes[-1], axes[:-1]
    j = next((i for i, ax in enumerate(rest) if ax[1] == 1), None)
    if j is None:
        return False
    l_, _, so_l = rest.pop(j)
    p_ = max(range(len(rest)), key=lambda i: rest[i][0]) if rest else None
    planes, si_p, so_p = rest.pop(p_) if p_ is not None else (1, a * l_, a)
    free = ctx.arena.free_bytes("vec")
    per = 2 * a * l_ * 4                                     # source + transposed plane
    step = min(planes, MAX_PLANES, MAX_ROWS // a, (free - 4 * ALIGN) // (2 * per))
    slots = 2
    if step < 1:
        step, slots = min(planes, MAX_PLANES, MAX_ROWS // a, (free - 2 * ALIGN) // per), 1
    if step < 1 or max(a, l_) > MAX_ROWS:
        return False
    tiles = [(ctx.alloc("vec", step * a * l_ * 4, "transpose source"),
              ctx.alloc("vec", step * a * l_ * 4, "transposed")) for _ in range(slots)]
    it = 0
    for idx in np.ndindex(*[ax[0] for ax in rest]):
        off_x = sum(i * ax[1] for i, ax in zip(idx, rest))
        off_y = sum(i * ax[2] for i, ax in zip(idx, rest))
        for p0, p1 in chunks(planes, step):
            src, dst = tiles[it % slots]
            it += 1
            n = p1 - p0
            ctx.b.load("vec", src, sx.region.addr + (off_x + p0 * si_p) * 4, a, l_, planes=n,
                       dram_plane_stride=si_p, dram_row_stride=sa, buf_plane_stride=a * l_,
                       buf_row_stride=l_)
            ctx.b.vec("transpose", n * a, l_, s0_addr=src, d_addr=dst)
            ctx.b.store("vec", dst, sy.region.addr + (off_y + p0 * so_p) * 4, n, a, planes=l_,
                        dram_plane_stride=so_l, dram_row_stride=so_p, buf_plane_stride=n * a,
                        buf_row_stride=a)
    return True


@lowering("transpose")
def lower_transpose(ctx: LowerCtx, node: Node) -> None:
    """Permute axes: strided DMA gathers in output order into vec, contiguous stores out.

    The output is walked as [loops..., planes, rows, cols]: cols is the
    output's last axis when it is also contiguous in the input (runs move
    whole), else 1 (single elements); planes and rows are the next two
    axes; further axes become separate DMAs.
    """
    x, y = node.inputs[0], node.outputs[0]
    perm = list(node.attrs["perm"])
    sx, sy = _flat(ctx, x), _flat(ctx, y)
    st = _strides(tuple(x.shape))
    both = _merge([(x.shape[p], st[p], so) for p, so in zip(perm, _strides(tuple(y.shape)))])
    if len(both) > 1 and both[-1][1] != 1 and _transpose_on_chip(ctx, sx, sy, both):
        return
    axes = _merge([(x.shape[p], st[p]) for p in perm])
    cols = axes.pop()[0] if axes and axes[-1][1] == 1 else 1
    axes = [(1, 0)] * max(0, 2 - len(axes)) + axes
    (planes, pst), (rows, rst) = axes[-2], axes[-1]
    loops = axes[:-2]
    if rows > MAX_ROWS or cols > MAX_ROWS:
        raise ctx.fail(f"transpose {perm} of {x.shape} moves {rows} x {cols} tiles",
                       "DMA rows and cols are 16-bit fields; split the tensor")
    block = rows * cols                                  # elements per plane
    free = ctx.arena.free_bytes("vec")
    fit1, fit2 = (free - ALIGN) // (block * 4), (free - 2 * ALIGN) // (2 * block * 4)
    if fit1 < 1:
        raise ctx.fail(f"one {rows} x {cols} plane of the transpose does not fit the vec buffer",
                       "raise vec_buffer_bytes in the hardware config")
    nloop = int(np.prod([a[0] for a in loops])) if loops else 1
    if nloop == 1 and min(fit1, MAX_PLANES) >= planes:
        pstep, slots = planes, 1
    else:
        pstep, slots = (min(planes, MAX_PLANES, fit2), 2) if fit2 >= 1 else \
            (min(planes, MAX_PLANES, fit1), 1)
    tiles = [ctx.alloc("vec", pstep * block * 4, "transpose tile") for _ in range(slots)]
    it = 0
    for li in range(nloop):
        off, rem = 0, li
        for size, stride in reversed(loops):
            off += (rem % size) * stride
            rem //= size
        for p0, p1 in chunks(planes, pstep):
            t = tiles[it % slots]
            it += 1
            ctx.b.load("vec", t, sx.region.addr + (off + p0 * pst) * 4, rows, cols,
                       planes=p1 - p0, dram_plane_stride=pst, dram_row_stride=rst,
                       buf_plane_stride=block, buf_row_stride=cols)
            dst = sy.region.addr + (li * planes + p0) * block * 4
            ctx.b.store("vec", t, dst, rows, cols, planes=p1 - p0, dram_plane_stride=block,
                        buf_plane_stride=block)


# ---------------------------------------------------------------- reductions, broadcasts
def _run(ctx: LowerCtx, shape: tuple[int, ...], axes: set[int]) -> tuple[int, int, int]:
    """(outer, R, inner) of ``shape`` reduced over ``axes``; they must form one contiguous run
    once size-1 axes are ignored."""
    real = sorted(a for a in axes if shape[a] > 1)
    if not real:
        return int(np.prod(shape)), 1, 1
    a0, a1 = real[0], real[-1]
    if any(shape[a] > 1 and a not in axes for a in range(a0, a1 + 1)):
        raise ctx.fail(f"reduction over axes {sorted(axes)} of {shape} that are not adjacent",
                       "the SAT lowering reduces one contiguous run of axes; transpose first")
    return (int(np.prod(shape[:a0])), int(np.prod(shape[a0:a1 + 1])),
            int(np.prod(shape[a1 + 1:])))


def _reduce(ctx: LowerCtx, x: Value, out: Value, axes: set[int], factor: float) -> None:
    """out = factor * sum of x over ``axes`` (one contiguous run), x as [outer, R, inner]."""
    outer, red, inner = _run(ctx, tuple(x.shape), axes)
    sx, so = _flat(ctx, x), _flat(ctx, out)
    if inner == 1:          # reduce along cols: rows of R, chunks of outer rows
        xv = View3(outer, 1, red, sx.region.addr, red, red, "logical")
        if red > MAX_ROWS:
            raise ctx.fail(f"a reduction over {red} contiguous elements",
                           "the vector unit's cols field is 16 bits; reduce in two steps")
        step, slots = _row_tiles(ctx, outer, {"x": red, "s": 1}, "reduction")
        for i, (o0, o1) in enumerate(chunks(outer, step)):
            t = slots[i % len(slots)]
            ctx.dma3("load", xv, o0, o1, "vec", t["x"])
            ctx.b.vec("reduce_sum", o1 - o0, red, s0_addr=t["x"], d_addr=t["s"], axis=1)
            if factor != 1.0:
                _col(ctx, "mul_imm", o1 - o0, t["s"], t["s"], imm=factor)
            ctx.b.store("vec", t["s"], so.region.addr + o0 * 4, 1, o1 - o0)
        return
    if inner > MAX_ROWS:
        raise ctx.fail(f"a reduction keeping {inner} contiguous elements",
                       "the vector unit's cols field is 16 bits; split the tensor")
    acc = ctx.alloc("vec", inner * 4, "reduction result")
    step, slots = _row_tiles(ctx, red, {"x": inner}, "reduction")
    it = 0
    for o in range(outer):
        for r0, r1 in chunks(red, step):
            t = slots[it % len(slots)]["x"]
            it += 1
            ctx.b.load("vec", t, sx.region.addr + (o * red + r0) * inner * 4, r1 - r0, inner)
            ctx.b.vec("reduce_sum", r1 - r0, inner, s0_addr=t, d_addr=acc, axis=0,
                      accumulate=r0 > 0)
        if factor != 1.0:
            ctx.b.vec("mul_imm", 1, inner, s0_addr=acc, d_addr=acc, imm=factor)
        ctx.b.store("vec", acc, so.region.addr + o * inner * 4, 1, inner)


@lowering("reduce_mean")
def lower_reduce_mean(ctx: LowerCtx, node: Node) -> None:
    """Mean over ``axes`` (one contiguous run, e.g. tokens): reduce_sum, then scale."""
    x = node.inputs[0]
    axes = {a % len(x.shape) for a in node.attrs["axes"]}
    count = int(np.prod([x.shape[a] for a in axes]))
    _reduce(ctx, x, node.outputs[0], axes, 1.0 / count)


@lowering("sum_to")
def lower_sum_to(ctx: LowerCtx, node: Node) -> None:
    """Sum a broadcast gradient down to ``shape`` (e.g. the batch axis of a position embedding)."""
    x, y = node.inputs[0], node.outputs[0]
    lead = len(x.shape) - len(y.shape)
    target = (1,) * lead + tuple(y.shape)
    axes = {i for i, (s, t) in enumerate(zip(x.shape, target)) if t == 1 and s != 1}
    _reduce(ctx, x, y, axes, 1.0)


@lowering("broadcast_to")
def lower_broadcast_to(ctx: LowerCtx, node: Node) -> None:
    """Repeat the input along its size-1 axes: load it once, store with zero buffer strides."""
    x, y = node.inputs[0], node.outputs[0]
    shape = tuple(y.shape)
    xs = (1,) * (len(shape) - len(x.shape)) + tuple(x.shape)
    sx, sy = _flat(ctx, x), _flat(ctx, y)
    n = int(np.prod(xs))
    src = _strides(xs)
    axes = _merge([(s, src[i] if xs[i] == s else 0, o)
                   for i, (s, o) in enumerate(zip(shape, _strides(shape)))])
    cols = axes.pop()[0] if axes and axes[-1][1:] == (1, 1) else 1
    axes = [(1, 0, 0)] * max(0, 2 - len(axes)) + axes
    (planes, pb, pd), (rows, rb, rd) = axes[-2], axes[-1]
    loops = axes[:-2]
    if max(rows, cols, rb) > MAX_ROWS or planes > MAX_PLANES or pb > field_max("load", "buf_plane_stride"):
        raise ctx.fail(f"broadcast of {x.shape} to {shape} needs DMA tiles of {planes} x {rows} x "
                       f"{cols}", "split the broadcast; DMA fields are 12/16 bits")
    t = ctx.alloc("vec", n * 4, "broadcast source")
    ctx.b.load("vec", t, sx.region.addr, 1, n)
    nloop = int(np.prod([a[0] for a in loops])) if loops else 1
    for li in range(nloop):
        ob = od = 0
        rem = li
        for size, sb, sd in reversed(loops):
            ob += (rem % size) * sb
            od += (rem % size) * sd
            rem //= size
        ctx.b.store("vec", t + ob * 4, sy.region.addr + od * 4, rows, cols, planes=planes,
                    dram_plane_stride=pd, dram_row_stride=rd, buf_plane_stride=pb,
                    buf_row_stride=rb)


def broadcast_add(ctx: LowerCtx, a: Value, b: Value, out: Value, func: str = "add") -> None:
    """out = a + b (``func`` of a and b) where one operand is broadcast over leading axes of the
    other (a position embedding over the batch), after any leading axes both share (a padding
    mask [N, 1, 1, S] over scores [N, H, T, S]: one block per n): the small operand's block
    stays in vec, row-broadcast over chunks of the big one's."""
    shape = tuple(out.shape)
    big, small = (a, b) if tuple(a.shape) == shape else (b, a)
    ss = (1,) * (len(shape) - len(small.shape)) + tuple(small.shape)
    j = 0                                      # shared leading axes: a loop of blocks
    while j < len(shape) - 1 and ss[j] == shape[j]:
        j += 1
    k = j
    while k < len(shape) and ss[k] == 1 and shape[k] != 1:
        k += 1
    if tuple(big.shape) != shape or ss[k:] != shape[k:]:
        raise ctx.fail(f"{func} of {a.shape} and {b.shape}",
                       "the SAT lowering broadcasts one operand over leading axes (after axes "
                       "both share), or over the trailing axes of one plane (mul), only")
    inner = int(np.prod(shape[k:]))
    if inner > MAX_ROWS:
        raise ctx.fail(f"a broadcast operand of {inner} elements",
                       "the vector unit's cols field is 16 bits; split the tensor")
    outer, rows = int(np.prod(shape[:j])), int(np.prod(shape[j:k]))
    sa, ba, oa = (_flat(ctx, v).region.addr for v in (small, big, out))
    vs = ctx.alloc("vec", inner * 4, "broadcast operand")
    step, slots = _row_tiles(ctx, rows, {"x": inner}, "broadcast add")
    for o in range(outer):
        ctx.b.load("vec", vs, sa + o * inner * 4, 1, inner)
        block = o * rows * inner * 4
        bv = View3(rows, 1, inner, ba + block, inner, inner, "logical")
        ov = View3(rows, 1, inner, oa + block, inner, inner, "logical")
        for i, (r0, r1) in enumerate(chunks(rows, step)):
            t = slots[i % len(slots)]["x"]
            ctx.dma3("load", bv, r0, r1, "vec", t)
            ctx.b.vec(func, r1 - r0, inner, s0_addr=t, s1_addr=vs, d_addr=t, bcast="row")
            ctx.dma3("store", ov, r0, r1, "vec", t)


# ---------------------------------------------------------------- slice, pad, concat
Block = tuple[int, int, int, int, int, int]   # src addr, src row stride, dst addr, dst stride, rows, cols
Zeros = tuple[int, int, int, int]             # dst addr, dst row stride, rows, cols


def _along(v: Value, axis: int) -> tuple[int, int, int]:
    """(outer, size along ``axis``, inner) of ``v``'s row-major shape."""
    shape = tuple(v.shape)
    axis %= len(shape)
    return int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:]))


def _move_blocks(ctx: LowerCtx, copies: list[Block], zeros: list[Zeros], what: str) -> None:
    """DRAM-to-DRAM row blocks through the vec buffer (row chunks, two slots), and zero blocks
    stored from one zero row on chip (buffer row stride 0). Addresses in bytes, strides and
    sizes in elements."""
    widest = max([c[5] for c in copies] + [z[3] for z in zeros])
    cstep = min(widest, MAX_ROWS)
    zrow = 0
    if zeros:
        zc = min(max(z[3] for z in zeros), MAX_ROWS)
        zrow = ctx.alloc("vec", zc * 4, "zero row")
        ctx.b.load("vec", zrow, ctx.const(f"zeros/{zc}", np.zeros(zc, np.float32)).addr, 1, zc)
    free = ctx.arena.free_bytes("vec") - 2 * ALIGN
    rstep = min(MAX_ROWS, free // (2 * cstep * 4))
    if rstep < 1:
        cstep, rstep = max(1, free // 8), 1
    tiles = [ctx.alloc("vec", rstep * cstep * 4, f"{what} tile") for _ in range(2)] if copies else []
    it = 0
    for src, sst, dst, dstr, rows, cols in copies:
        for r0, r1 in chunks(rows, rstep):
            for c0, c1 in chunks(cols, cstep):
                t = tiles[it % 2]
                it += 1
                ctx.b.load("vec", t, src + (r0 * sst + c0) * 4, r1 - r0, c1 - c0,
                           dram_row_stride=sst, buf_row_stride=c1 - c0)
                ctx.b.store("vec", t, dst + (r0 * dstr + c0) * 4, r1 - r0, c1 - c0,
                            dram_row_stride=dstr, buf_row_stride=c1 - c0)
    for dst, dstr, rows, cols in zeros:
        for r0, r1 in chunks(rows, MAX_ROWS):
            for c0, c1 in chunks(cols, MAX_ROWS):
                ctx.b.store("vec", zrow, dst + (r0 * dstr + c0) * 4, r1 - r0, c1 - c0,
                            dram_row_stride=dstr, buf_row_stride=0)


@lowering("slice")
def lower_slice(ctx: LowerCtx, node: Node) -> None:
    """x[start:end] along one axis: per outer index one contiguous run, as one strided DMA."""
    x, y = node.inputs[0], node.outputs[0]
    outer, n, inner = _along(x, node.attrs["axis"])
    k = node.attrs["end"] - node.attrs["start"]
    if outer * k * inner:
        src = _flat(ctx, x).region.addr + node.attrs["start"] * inner * 4
        _move_blocks(ctx, [(src, n * inner, _flat(ctx, y).region.addr, k * inner, outer,
                            k * inner)], [], "slice")


@lowering("pad")
def lower_pad(ctx: LowerCtx, node: Node) -> None:
    """Zero-pad along one axis: zero runs before / after, the input copied between."""
    x, y = node.inputs[0], node.outputs[0]
    outer, n, inner = _along(x, node.attrs["axis"])
    before, after = node.attrs["before"], node.attrs["after"]
    width = (before + n + after) * inner
    dst = _flat(ctx, y).region.addr
    zeros = [(dst + off * 4, width, outer, cols) for off, cols in
             ((0, before * inner), ((before + n) * inner, after * inner)) if cols and outer]
    copies = [(_flat(ctx, x).region.addr, n * inner, dst + before * inner * 4, width, outer,
               n * inner)] if outer * n * inner else []
    _move_blocks(ctx, copies, zeros, "pad")


@lowering("concat")
def lower_concat(ctx: LowerCtx, node: Node) -> None:
    """Concatenate along one axis: each input's runs copied to their offset in every row."""
    y = node.outputs[0]
    outer, total, inner = _along(y, node.attrs["axis"])
    dst, start, copies = _flat(ctx, y).region.addr, 0, []
    for v in node.inputs:
        n = v.shape[node.attrs["axis"] % len(v.shape)]
        if outer * n * inner:
            copies.append((_flat(ctx, v).region.addr, n * inner, dst + start * inner * 4,
                           total * inner, outer, n * inner))
        start += n
    _move_blocks(ctx, copies, [], "concat")


# ---------------------------------------------------------------- embedding (one-hot GEMMs)
def _one_hot_ids(ctx: LowerCtx, ids: Value) -> Region:
    """The region of int64 ids stored one-hot ``[R, vocab]`` by the memory plan."""
    s = ctx.st(ids)
    if not isinstance(s, OneHot):
        raise ctx.fail(f"embedding ids %{ids.name} are stored as {type(s).__name__}",
                       "the memory planner stores int64 ids one-hot; ids must be a graph input")
    return s.region


def _gemm_steps(ctx: LowerCtx, m: int, n: int, k: int, a_buf: str, b_buf: str) -> tuple[int, int]:
    """(rows of C, K slice) per one-hot GEMM tile: C [mt, n] in acc, A [mt, kt], B [kt, n]."""
    acc, fa, fb = (ctx.arena.free_bytes(b) - ALIGN for b in ("acc", a_buf, b_buf))
    mt = min(m, MAX_ROWS, acc // (4 * n))
    kt = min(k, MAX_ROWS, fb // (4 * n), fa // (4 * max(mt, 1)))
    if mt < 1 or kt < 1:
        raise ctx.fail(f"a one-hot GEMM tile of {n} columns does not fit the buffers",
                       "raise acc / act / wgt buffer bytes in the hardware config")
    return mt, kt


def _one_hot_gemm(ctx: LowerCtx, hot: Region, vocab: int, m: int, k: int, dim: int, b_addr: int,
                  out_addr: int, transposed: bool) -> None:
    """out [m, dim] = A [m, k] @ B [k, dim] with A read from the one-hot rows ``hot`` [R, vocab]:
    A = hot (m = R, k = vocab) or, ``transposed``, A = hot^T (m = vocab, k = R); B row-major at
    ``b_addr``, accumulated over K slices on the STCE (dense)."""
    mt, kt = _gemm_steps(ctx, m, dim, k, "act", "wgt")
    ta, tb = ctx.alloc("act", mt * kt * 4, "one-hot ids"), ctx.alloc("wgt", kt * dim * 4, "B rows")
    tc = ctx.alloc("acc", mt * dim * 4, "C rows")
    for m0, m1 in chunks(m, mt):
        for k0, k1 in chunks(k, kt):
            r0, c0, rows, cols = (k0, m0, k1 - k0, m1 - m0) if transposed else \
                (m0, k0, m1 - m0, k1 - k0)
            ctx.b.load("act", ta, hot.addr + (r0 * vocab + c0) * 4, rows, cols,
                       dram_row_stride=vocab)
            ctx.b.load("wgt", tb, b_addr + k0 * dim * 4, k1 - k0, dim)
            ctx.b.gemm(m1 - m0, dim, k1 - k0, a_buf="act", a_addr=ta, b_buf="wgt", b_addr=tb,
                       c_addr=tc, trans_a=transposed, accumulate=k0 > 0,
                       interleave=ctx.interleave, dataflow=ctx.dataflow)
        ctx.b.store("acc", tc, out_addr + m0 * dim * 4, m1 - m0, dim)


@lowering("embedding")
def lower_embedding(ctx: LowerCtx, node: Node) -> None:
    """out [R, D] = onehot(ids) [R, V] @ weight [V, D] on the STCE: a dense GEMM (the ids are
    data, so the rows to gather are unknown when the program is made; the one-hot product is
    the gather, exactly: one 1.0 per row)."""
    w, ids = node.inputs
    vocab, dim = w.shape
    rows = int(np.prod(ids.shape))
    _one_hot_gemm(ctx, _one_hot_ids(ctx, ids), vocab, rows, vocab, dim, _flat(ctx, w).region.addr,
                  _flat(ctx, node.outputs[0]).region.addr, transposed=False)


@lowering("embedding_grad")
def lower_embedding_grad(ctx: LowerCtx, node: Node) -> None:
    """dweight [V, D] = onehot(ids)^T [V, R] @ dy [R, D] (the scatter-add as a dense GEMM,
    A read transposed from the one-hot rows), accumulated over row slices; with a
    ``padding_idx`` its row is then overwritten with zeros (torch leaves it ungraded)."""
    dy, ids = node.inputs
    vocab, dim = node.outputs[0].shape
    rows = int(np.prod(ids.shape))
    out = _flat(ctx, node.outputs[0]).region.addr
    _one_hot_gemm(ctx, _one_hot_ids(ctx, ids), vocab, vocab, rows, dim,
                  _flat(ctx, dy).region.addr, out, transposed=True)
    pad = node.attrs.get("padding_idx", -1)
    if pad >= 0:
        _move_blocks(ctx, [], [(out + pad * dim * 4, dim, 1, dim)], "padding row")
