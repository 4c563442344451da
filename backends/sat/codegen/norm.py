"""Lowerings of the norm op family (``ir/ops/norm.py``): batch and layer normalisation on the
vector unit.

Batch normalisation (training mode):

Per-channel statistics are reductions of ``[C, H*W]`` chunk tiles (one
image's channels; ``[rows, C]`` for rank-2 inputs), accumulated across
images into ``[C]`` vectors; normalisation uses ``col`` (``row``)
broadcasts of those vectors. The input stays resident in the vector buffer
across the passes when it fits, otherwise it streams through two slots and
is read once per pass.

* forward: the shifted-data sums s = sum(x - k), q = sum((x - k)^2) with k
  the mean of the channel's first chunk (one read of x); mean = k + s/n,
  var = q/n - (s/n)^2; invstd = rsqrt(var + eps); y = (x-mean) * gamma*invstd
  + beta; running stats with torch's momentum rule (unbiased running
  variance). ``batchnorm_relu`` adds a residual and applies relu to y before
  it is stored (passes/fusion.py);
* input gradient: dx = gamma*invstd * (dy - mean(dy) - xhat*mean(dy*xhat));
  ``batchnorm_grad`` stores the two sums as the parameter gradients too;
* parameter gradients: dgamma = sum(dy*xhat), dbeta = sum(dy).

Layer normalisation over the trailing axes (rows of a ``[rows, cols]`` matrix):

* ``layernorm`` -- the mean, then the sum of squares about it (the exact
  two-pass variance), then ``y = xhat * gamma + beta`` as two affines (a
  per-row and a per-column pair): four passes per element;
* ``layernorm_grad`` (passes/fusion.py; also its halves ``layernorm_grad_input``
  and ``layernorm_grad_params``) -- ``dx = invstd * (g - mean(g) - xhat *
  mean(g * xhat))`` with ``g = dy * gamma``, ``dgamma = sum(dy * xhat)``,
  ``dbeta = sum(dy)`` over rows, from one xhat: six passes per element for both,
  plus the fused gradient sum's terms accumulated in dx's tile.

Variance over the trailing axes (``reduce_var``, ``reduce_var_grad``): the mean and the sum
of squares about it per row chunk; the gradient ``(x - mean) * dy * 2 / (n - correction)``
as one affine.
"""

from __future__ import annotations

import numpy as np
from satc.backends.sat.codegen.lowering import MAX_ROWS, LowerCtx, chunks, lowering, same_views
from satc.backends.sat.codegen.memory import View3
from satc.backends.sat.codegen.tensor import (
    _bcast,
    _channel_chunks,
    _Channels,
    _col,
    _flat,
    _load_row_vector,
    _load_vector,
    _matrix,
    _norm_cols,
    _reduce_channels,
    _row_tiles,
    _store_vector,
    _tile_bytes,
)
from satc.backends.sat.codegen.plan import stats_key
from satc.backends.sat.codegen.tiling import TilePlan
from satc.errors import CompileError
from satc.ir.graph import Graph, Node


class _Resident:
    """Chunk tiles of several same-layout tensors: all kept on chip when they fit (each chunk
    loaded once), else streamed through two slots, so that the next chunk loads while this
    one is processed. ``temps`` temporaries per slot (two slots in both cases: a temporary
    being stored does not hold back the next chunk's work)."""

    def __init__(self, ctx: LowerCtx, c: _Channels, views: list, temps: int) -> None:
        self.ctx, self.views = ctx, views
        free = ctx.arena.free_bytes("vec")
        self.slots = 2
        self.chunks = list(_channel_chunks(ctx, c, len(views) + 2 * temps))
        size = max(_tile_bytes(r, k) for _, _, r, k, _, _ in self.chunks)
        self.resident = (len(self.chunks) * len(views) + 2 * temps) * size <= free
        if not self.resident:
            try:
                self.chunks = list(_channel_chunks(ctx, c, 2 * (len(views) + temps)))
            except CompileError:        # two slots of one plane do not fit: one slot
                self.slots = 1
                self.chunks = list(_channel_chunks(ctx, c, len(views) + temps))
            size = max(_tile_bytes(r, k) for _, _, r, k, _, _ in self.chunks)
        count = len(self.chunks) if self.resident else self.slots
        self.tiles = [[ctx.alloc("vec", size, "batchnorm tile") for _ in views] for _ in range(count)]
        self._temps = [[ctx.alloc("vec", size, "batchnorm temporary") for _ in range(temps)]
                       for _ in range(self.slots)]
        self.loaded: set[int] = set()

    def get(self, i: int) -> list[int]:
        """Addresses of chunk ``i``'s tiles, loading them if they are not on chip."""
        t = self.tiles[i if self.resident else i % self.slots]
        if not (self.resident and i in self.loaded):
            p0, p1 = self.chunks[i][:2]
            for v, addr in zip(self.views, t):
                self.ctx.dma3("load", v, p0, p1, "vec", addr)
            self.loaded.add(i)
        return t

    def temps(self, i: int) -> list[int]:
        """The temporaries of chunk ``i``'s slot."""
        return self._temps[i % self.slots]


def _check(ctx: LowerCtx, node: Node, x) -> _Channels:
    c = _Channels(ctx, x, 1)
    if c.count < 2:
        raise ctx.fail("batchnorm over a single element per channel", "use a batch larger than 1")
    return c


def _vec1(ctx: LowerCtx, func: str, c: _Channels, s0: int, d: int, s1: int = 0,
          imm: float = 0.0) -> None:
    """A vector op over whole [C] per-channel vectors."""
    ctx.b.vec(func, 1, c.channels, s0_addr=s0, s1_addr=s1, d_addr=d, imm=imm)


class _Pair:
    """Per-channel (scale, shift) pairs for ``affine``: [C, 2] interleaved (NCHW, col
    broadcast) or [2, C] (rank 2, row broadcast), built from two [C] vectors."""

    def __init__(self, ctx: LowerCtx, c: _Channels, scale: int, shift: int, what: str) -> None:
        self.ctx, self.c = ctx, c
        self.addr = ctx.alloc("vec", _tile_bytes(2, c.channels), what)
        if c.rank == 2:
            _vec1(ctx, "copy", c, scale, self.addr)
            _vec1(ctx, "copy", c, shift, self.addr + c.channels * 4)
        else:
            for k, v in enumerate((scale, shift)):
                ctx.b.vec("copy", c.channels, 1, s0_addr=v, s0_stride=1, d_addr=self.addr + 4 * k,
                          d_stride=2)

    def apply(self, rows: int, cols: int, c0: int, src: int, dst: int, func: str = "affine",
              accumulate: bool = False) -> None:
        """dst (+)= src * scale + shift over one chunk tile (channels from c0); ``func``
        ``affine_relu`` rectifies the result."""
        if self.c.rank == 2:
            self.ctx.b.vec(func, rows, cols, s0_addr=src, s1_addr=self.addr, d_addr=dst,
                           bcast="row", s1_stride=self.c.channels, accumulate=accumulate)
        else:
            self.ctx.b.vec(func, rows, cols, s0_addr=src, s1_addr=self.addr + c0 * 8,
                           d_addr=dst, bcast="col", accumulate=accumulate)


def _xhat_pair(ctx: LowerCtx, c: _Channels, mean: int, invstd: int) -> _Pair:
    """xhat = x * invstd + (-mean * invstd) as one affine pass."""
    shift = ctx.alloc("vec", _tile_bytes(1, c.channels), "-mean*invstd")
    _vec1(ctx, "mul", c, mean, shift, s1=invstd)
    _vec1(ctx, "mul_imm", c, shift, shift, imm=-1.0)
    return _Pair(ctx, c, invstd, shift, "xhat pair")


def _sums(ctx: LowerCtx, c: _Channels, r: _Resident, xhat: _Pair) -> tuple[int, int]:
    """Addresses of sum(dy) and sum(dy * xhat) per channel (x, dy are r's tensors): two
    passes per element (xhat, then both sums in one ``reduce_sum_dot``)."""
    sums = ctx.alloc("vec", _tile_bytes(2, c.channels), "sum dy, sum dy*xhat")
    seen: set[int] = set()
    for i, (_, _, rows, cols, c0, _) in enumerate(r.chunks):
        tx, tdy = r.get(i)
        t1 = r.temps(i)[0]
        xhat.apply(rows, cols, c0, tx, t1)
        first = c0 not in seen if c.rank == 4 else i == 0
        if c.rank == 2:                  # [2, C]: the sums, then the dot products
            ctx.b.vec("reduce_sum_dot", rows, cols, s0_addr=tdy, s1_addr=t1, d_addr=sums,
                      axis=0, accumulate=not first)
        else:                            # [C, 2]: (sum, dot) per channel
            ctx.b.vec("reduce_sum_dot", rows, cols, s0_addr=tdy, s1_addr=t1,
                      d_addr=sums + c0 * 8, axis=1, accumulate=not first)
        seen.add(c0)
    if c.rank == 2:
        return sums, sums + c.channels * 4
    return _split_pairs(ctx, c, sums)


def _split_pairs(ctx: LowerCtx, c: _Channels, sums: int) -> tuple[int, int]:
    """Addresses of sum(dy) and sum(dy * xhat) de-interleaved from [C, 2] pairs at ``sums``."""
    out = [ctx.alloc("vec", _tile_bytes(1, c.channels), n) for n in ("sum dy", "sum dy*xhat")]
    for k, dst in enumerate(out):
        ctx.b.vec("copy", c.channels, 1, s0_addr=sums + 4 * k, s0_stride=2, d_addr=dst,
                  d_stride=1)
    return out[0], out[1]


def _shifted_sums(ctx: LowerCtx, c: _Channels, r: _Resident, shift: int, sx: int, q: int) -> None:
    """From one read of x (r's tensor), two passes per element: sx = sum(x), shift = the
    per-channel mean of the first chunk that holds the channel, q = sum((x - shift)^2) per
    channel (``reduce_sqdev``). With a shift near the mean, var = q/n - (mean - shift)^2
    loses no precision to cancellation (the shifted-data variance), so the statistics need
    no second read of x."""
    bc = _bcast(c)
    seen: set[int] = set()
    for i, (_, _, rows, cols, c0, _) in enumerate(r.chunks):
        (tx,) = r.get(i)
        first = c0 not in seen if c.rank == 4 else i == 0
        off = c0 * 4 if c.rank == 4 else 0
        _reduce_channels(ctx, "reduce_sum", c, tx, rows, cols, sx, c0, first)
        if first:
            n = (rows, 1 / cols) if c.rank == 4 else (c.channels, 1 / rows)
            ctx.b.vec("mul_imm", 1, n[0], s0_addr=sx + off, d_addr=shift + off, imm=n[1])
        _reduce_channels(ctx, "reduce_sqdev", c, tx, rows, cols, q, c0, first, s1=shift + off,
                         bcast=bc)
        seen.add(c0)


def conv_stats_values(graph: Graph, tiles: TilePlan) -> frozenset[str]:
    """Conv outputs whose training-mode batchnorm statistics the conv computes from its C
    tiles before storing them (sum and shifted sum of squares per channel, the shift the mean
    of the channel's first N tile), so the batchnorm reads them instead of x: the FF
    outputs of plain (not grouped) conv2d read by a batchnorm."""
    out = set()
    for node in graph.nodes:
        conv = node.inputs[0].producer if node.inputs else None
        if node.op in ("batchnorm", "batchnorm_relu") and node.attrs.get("training") \
                and conv is not None and conv.op == "conv2d" and conv.attrs["groups"] == 1 \
                and conv.stage == node.stage and conv.name in tiles:
            out.add(node.inputs[0].name)
    return frozenset(out)


@lowering("batchnorm", "batchnorm_relu")
def lower_batchnorm(ctx: LowerCtx, node: Node) -> None:
    """Training-mode batchnorm: y, batch mean, invstd and the new running statistics.
    ``batchnorm_relu`` (passes/fusion.py) also adds its residual input, when it has one, and
    applies relu before y is stored. x is read once for the statistics (two passes per
    element: the sum and the shifted sum of squares) and once more for the affine apply (one
    pass, plus one each for the residual add and the relu) unless it stays on chip; when a
    conv made x (:func:`conv_stats_values`), the conv computed the statistics from its C
    tiles and x is read once, for the apply."""
    if not node.attrs["training"]:
        raise ctx.fail("eval-mode batchnorm", "the SAT lowering compiles training steps; "
                       "import the model in train mode")
    x, gamma, beta, rm, rv, *residual = node.inputs
    c = _check(ctx, node, x)
    yv = ctx.dense(node.outputs[0]).view3()
    resv = [ctx.dense(v).view3() for v in residual]
    same_views(ctx, [c.view, yv, *resv])
    cnt, mom, eps = c.count, float(node.attrs["momentum"]), float(node.attrs["eps"])
    vg, vb = _load_vector(ctx, gamma, "gamma"), _load_vector(ctx, beta, "beta")
    vrm, vrv = _load_vector(ctx, rm, "running mean"), _load_vector(ctx, rv, "running var")
    vs = [ctx.alloc("vec", _tile_bytes(1, c.channels), name)
          for name in ("data shift", "sum", "shifted sumsq", "mean - shift", "square",
                       "mean", "var", "invstd", "scale", "shift", "running term")]
    k, sx, q, d, d2, mean, var, inv, scale, shift, term = vs
    r = _Resident(ctx, c, [c.view], temps=1)
    if x.name in ctx.conv_stats:                # the conv computed them from its C tiles
        stats = ctx.storage[stats_key(x.name)].region.addr
        for row, dst in enumerate((sx, q, k)):
            ctx.b.load("vec", dst, stats + row * c.channels * 4, 1, c.channels)
    else:
        _shifted_sums(ctx, c, r, k, sx, q)
    _vec1(ctx, "mul_imm", c, sx, mean, imm=1.0 / cnt)
    _vec1(ctx, "sub", c, mean, d, s1=k)                   # d = mean - shift
    _vec1(ctx, "mul", c, d, d2, s1=d)
    _vec1(ctx, "mul_imm", c, q, var, imm=1.0 / cnt)
    _vec1(ctx, "sub", c, var, var, s1=d2)                # var = q/n - (mean - shift)^2
    _vec1(ctx, "rsqrt", c, var, inv, imm=eps)
    _vec1(ctx, "mul", c, vg, scale, s1=inv)
    _vec1(ctx, "mul", c, mean, shift, s1=scale)          # y = x * scale + (beta - mean * scale)
    _vec1(ctx, "sub", c, vb, shift, s1=shift)
    pair = _Pair(ctx, c, scale, shift, "scale/shift pair")
    relu = node.op == "batchnorm_relu"
    for i, (p0, p1, rows, cols, c0, _) in enumerate(r.chunks):
        (tx,), (t,) = r.get(i), r.temps(i)
        if resv:                           # t = residual; t += x * scale + shift; relu
            ctx.dma3("load", resv[0], p0, p1, "vec", t)
            pair.apply(rows, cols, c0, tx, t, accumulate=True)
            if relu:
                ctx.b.vec("relu", rows, cols, s0_addr=t, d_addr=t)
        else:
            pair.apply(rows, cols, c0, tx, t, "affine_relu" if relu else "affine")
        ctx.dma3("store", yv, p0, p1, "vec", t)
    _store_vector(ctx, node.outputs[1], mean)
    _store_vector(ctx, node.outputs[2], inv)
    # running stats: new = (1 - mom) * old + mom * stat (variance unbiased)
    for old, stat, factor, out in ((vrm, mean, mom, node.outputs[3]),
                                   (vrv, var, mom * cnt / (cnt - 1), node.outputs[4])):
        _vec1(ctx, "mul_imm", c, old, old, imm=1.0 - mom)
        _vec1(ctx, "mul_imm", c, stat, term, imm=factor)
        _vec1(ctx, "add", c, old, old, s1=term)
        _store_vector(ctx, out, old)


@lowering("batchnorm_grad_input", "batchnorm_grad")
def lower_batchnorm_grad_input(ctx: LowerCtx, node: Node) -> None:
    """dx = gamma*invstd * (dy - mean(dy) - xhat * mean(dy*xhat)) = k*dy + a + b*xhat with
    k = gamma*invstd, a = -k*mean(dy), b = -k*mean(dy*xhat): the sums (two passes per
    element), then dx = x * (b*invstd) + (a - b*mean*invstd) as one affine of x and
    dx += k*dy as one accumulating multiply (two more). ``batchnorm_grad``
    (passes/fusion.py) also stores the sums as dgamma = sum(dy*xhat) and dbeta = sum(dy);
    with a sixth input (fuse_batchnorm_grad_stats) the sums come computed by dy's producer
    and x and dy are read once, for dx."""
    dy, x, gamma, mean, invstd, *computed = node.inputs
    c = _check(ctx, node, x)
    dxv = ctx.dense(node.outputs[0]).view3()
    dyv = ctx.dense(dy).view3()
    same_views(ctx, [c.view, dyv, dxv])
    vg = _load_vector(ctx, gamma, "gamma")
    vm, vi = _load_vector(ctx, mean, "mean"), _load_vector(ctx, invstd, "invstd")
    k, a, b, bm = (ctx.alloc("vec", _tile_bytes(1, c.channels), n) for n in (
        "gamma*invstd", "-k*mean(dy)", "-k*mean(dy*xhat)", "b*invstd*mean"))
    r = _Resident(ctx, c, [c.view, dyv], temps=1)
    if computed:
        dbeta, dgamma = _split_pairs(ctx, c, _load_vector(ctx, computed[0], "sum dy, sum dy*xhat"))
    else:
        dbeta, dgamma = _sums(ctx, c, r, _xhat_pair(ctx, c, vm, vi))
    if node.op == "batchnorm_grad":
        _store_vector(ctx, node.outputs[1], dgamma)
        _store_vector(ctx, node.outputs[2], dbeta)
    _vec1(ctx, "mul", c, vg, k, s1=vi)
    _vec1(ctx, "mul", c, dbeta, a, s1=k)
    _vec1(ctx, "mul_imm", c, a, a, imm=-1.0 / c.count)
    _vec1(ctx, "mul", c, dgamma, b, s1=k)
    _vec1(ctx, "mul_imm", c, b, b, imm=-1.0 / c.count)
    _vec1(ctx, "mul", c, b, b, s1=vi)                     # b <- b*invstd, the scale of x
    _vec1(ctx, "mul", c, vm, bm, s1=b)
    _vec1(ctx, "sub", c, a, a, s1=bm)                     # a <- a - b*invstd*mean
    x_pair = _Pair(ctx, c, b, a, "dx = x * scale + shift pair")
    bc = _bcast(c)
    for i, (p0, p1, rows, cols, c0, _) in enumerate(r.chunks):
        (tx, tdy), (t1,) = r.get(i), r.temps(i)
        k_c = k + (c0 * 4 if c.rank == 4 else 0)
        x_pair.apply(rows, cols, c0, tx, t1)
        ctx.b.vec("mul", rows, cols, s0_addr=tdy, s1_addr=k_c, d_addr=t1, bcast=bc,
                  accumulate=True)
        ctx.dma3("store", dxv, p0, p1, "vec", t1)


@lowering("batchnorm_grad_params")
def lower_batchnorm_grad_params(ctx: LowerCtx, node: Node) -> None:
    """dgamma = sum(dy * xhat), dbeta = sum(dy) per channel (two passes per element)."""
    dy, x, mean, invstd = node.inputs
    c = _check(ctx, node, x)
    dyv = ctx.dense(dy).view3()
    same_views(ctx, [c.view, dyv])
    vm, vi = _load_vector(ctx, mean, "mean"), _load_vector(ctx, invstd, "invstd")
    r = _Resident(ctx, c, [c.view, dyv], temps=1)
    dbeta, dgamma = _sums(ctx, c, r, _xhat_pair(ctx, c, vm, vi))
    _store_vector(ctx, node.outputs[0], dgamma)
    _store_vector(ctx, node.outputs[1], dbeta)


# ---------------------------------------------------------------- layernorm
@lowering("layernorm")
def lower_layernorm(ctx: LowerCtx, node: Node) -> None:
    """y = (x - mean) * invstd * gamma + beta over the trailing axes; also mean and invstd.
    Four passes per element: the row sums (mean), the sums of squares about that mean
    (``reduce_sqdev``: the two-pass variance), xhat = x * invstd - mean * invstd (an affine
    with a per-row pair) and y = xhat * gamma + beta (an affine with the per-column pair)."""
    x, gamma, beta = node.inputs
    y, mean, invstd = node.outputs
    d = _norm_cols(node, x)
    xv, yv = _matrix(ctx, x, d), _matrix(ctx, y, d)
    mdram, idram = _flat(ctx, mean).region.addr, _flat(ctx, invstd).region.addr
    affine = ctx.alloc("vec", _tile_bytes(2, d), "gamma/beta pair")     # [2, d]
    for k, v in enumerate((gamma, beta)):
        ctx.b.load("vec", affine + k * d * 4, _flat(ctx, v).region.addr, 1, d)
    eps = float(node.attrs["eps"])
    step, slots = _row_tiles(ctx, xv.planes, {"x": d, "y": d, "mean": 1, "var": 1, "inv": 1,
                                              "pair": 2}, "layernorm")
    for i, (r0, r1) in enumerate(chunks(xv.planes, step)):
        t, r = slots[i % len(slots)], r1 - r0
        ctx.dma3("load", xv, r0, r1, "vec", t["x"])
        _row_mean(ctx, r, d, t["x"], t["mean"])
        ctx.b.vec("reduce_sqdev", r, d, s0_addr=t["x"], s1_addr=t["mean"], d_addr=t["var"],
                  axis=1, bcast="col")
        _col(ctx, "mul_imm", r, t["var"], t["var"], imm=1.0 / d)
        _col(ctx, "rsqrt", r, t["var"], t["inv"], imm=eps)
        _row_pair(ctx, r, t["inv"], t["mean"], t["pair"])
        ctx.b.vec("affine", r, d, s0_addr=t["x"], s1_addr=t["pair"], d_addr=t["y"], bcast="col")
        ctx.b.vec("affine", r, d, s0_addr=t["y"], s1_addr=affine, d_addr=t["y"], bcast="row")
        ctx.dma3("store", yv, r0, r1, "vec", t["y"])
        ctx.b.store("vec", t["mean"], mdram + r0 * 4, 1, r)
        ctx.b.store("vec", t["inv"], idram + r0 * 4, 1, r)


def _row_pair(ctx: LowerCtx, r: int, scale: int, mean: int, dst: int) -> None:
    """dst <- the [r, 2] per-row pairs (scale, -mean * scale) of ``r``-value columns, for an
    ``affine`` with ``col`` broadcast: x * scale - mean * scale."""
    ctx.b.vec("copy", r, 1, s0_addr=scale, s0_stride=1, d_addr=dst, d_stride=2)
    ctx.b.vec("mul", r, 1, s0_addr=mean, s0_stride=1, s1_addr=scale, s1_stride=1,
              d_addr=dst + 4, d_stride=2)
    ctx.b.vec("mul_imm", r, 1, s0_addr=dst + 4, s0_stride=2, d_addr=dst + 4, d_stride=2,
              imm=-1.0)


def _load_ln_chunk(ctx: LowerCtx, views: dict[str, View3], stats: tuple[int, int],
                   t: dict[str, int], r0: int, r1: int) -> None:
    for k, v in views.items():
        ctx.dma3("load", v, r0, r1, "vec", t[k])
    ctx.b.load("vec", t["mean"], stats[0] + r0 * 4, 1, r1 - r0)
    ctx.b.load("vec", t["inv"], stats[1] + r0 * 4, 1, r1 - r0)


@lowering("layernorm_grad", "layernorm_grad_input", "layernorm_grad_params")
def lower_layernorm_grad(ctx: LowerCtx, node: Node) -> None:
    """Layernorm's backward over row chunks of x and dy, xhat = x * invstd - mean * invstd
    computed once (one affine pass) for both halves:

    * parameters: (dbeta, dgamma) = column sums of (dy, dy * xhat), one ``reduce_sum_dot``
      pass accumulated over the chunks;
    * input: g = dy * gamma (one pass), the row sums of (g, g * xhat) (one pass), then
      dx = xhat * b + a + g * invstd with a = -invstd * mean(g), b = -invstd * mean(g * xhat)
      (an affine and an accumulating multiply). ``layernorm_grad``'s terms (the fused
      gradient sum, passes/fusion.py) are loaded into dx's tile first and accumulated onto.

    ``layernorm_grad`` does both (six passes per element), ``layernorm_grad_input`` the
    input half (five), ``layernorm_grad_params`` the parameter half (two)."""
    want_dx, want_params = node.op != "layernorm_grad_params", node.op != "layernorm_grad_input"
    if want_dx:
        dy, x, gamma, mean, invstd, *terms = node.inputs
    else:
        (dy, x, mean, invstd), terms = node.inputs, []
    d = _norm_cols(node, x)
    views = {"x": _matrix(ctx, x, d), "dy": _matrix(ctx, dy, d)}
    term_views = [_matrix(ctx, v, d) for v in terms]
    stats = (_flat(ctx, mean).region.addr, _flat(ctx, invstd).region.addr)
    per_row = {"x": d, "dy": d, "mean": 1, "inv": 1, "pair": 2}
    if want_dx:
        vg = _load_row_vector(ctx, gamma, "gamma")
        out = _matrix(ctx, node.outputs[0], d)
        per_row |= {"dx": d, "sums": 2, "dx pair": 2} | ({"term": d} if len(terms) > 1 else {})
    if want_params:
        psums = ctx.alloc("vec", _tile_bytes(2, d), "sum dy, sum dy*xhat")    # [2, d]
    rows = views["x"].planes
    step, slots = _row_tiles(ctx, rows, per_row, node.op)
    for i, (r0, r1) in enumerate(chunks(rows, step)):
        t, r = slots[i % len(slots)], r1 - r0
        _load_ln_chunk(ctx, views, stats, t, r0, r1)
        _row_pair(ctx, r, t["inv"], t["mean"], t["pair"])
        ctx.b.vec("affine", r, d, s0_addr=t["x"], s1_addr=t["pair"], d_addr=t["x"], bcast="col")
        if want_params:
            ctx.b.vec("reduce_sum_dot", r, d, s0_addr=t["dy"], s1_addr=t["x"], d_addr=psums,
                      axis=0, accumulate=i > 0)
        if want_dx:
            _layernorm_dx(ctx, t, r, d, vg, term_views, r0, r1)
            ctx.dma3("store", out, r0, r1, "vec", t["dx"])
    if want_params:
        dgamma, dbeta = node.outputs[-2:]
        ctx.b.store("vec", psums + d * 4, _flat(ctx, dgamma).region.addr, 1, d)
        ctx.b.store("vec", psums, _flat(ctx, dbeta).region.addr, 1, d)


def _layernorm_dx(ctx: LowerCtx, t: dict[str, int], r: int, d: int, gamma: int,
                  terms: list[View3], r0: int, r1: int) -> None:
    """t['dx'] <- (terms +) dx of one chunk, t['x'] holding xhat and t['dy'] dy (made g)."""
    ctx.b.vec("mul", r, d, s0_addr=t["dy"], s1_addr=gamma, d_addr=t["dy"], bcast="row")
    ctx.b.vec("reduce_sum_dot", r, d, s0_addr=t["dy"], s1_addr=t["x"], d_addr=t["sums"], axis=1)
    # (b, a) per row = -invstd / d * (sum g * xhat, sum g)
    for k in (0, 1):
        ctx.b.vec("mul", r, 1, s0_addr=t["sums"] + 4 * (1 - k), s0_stride=2, s1_addr=t["inv"],
                  s1_stride=1, d_addr=t["dx pair"] + 4 * k, d_stride=2)
    _col(ctx, "mul_imm", 2 * r, t["dx pair"], t["dx pair"], imm=-1.0 / d)
    for k, v in enumerate(terms):
        ctx.dma3("load", v, r0, r1, "vec", t["dx"] if k == 0 else t["term"])
        if k:
            ctx.b.vec("add", r, d, s0_addr=t["dx"], s1_addr=t["term"], d_addr=t["dx"])
    ctx.b.vec("affine", r, d, s0_addr=t["x"], s1_addr=t["dx pair"], d_addr=t["dx"], bcast="col",
              accumulate=bool(terms))
    ctx.b.vec("mul", r, d, s0_addr=t["dy"], s1_addr=t["inv"], d_addr=t["dx"], bcast="col",
              accumulate=True)


# ---------------------------------------------------------------- variance (ir/ops/arith.py)
def _var_cols(ctx: LowerCtx, node: Node, x) -> int:
    """Columns of a variance: the product of its reduced axes, which must be the trailing ones."""
    r = len(x.shape)
    axes = {a % r for a in node.attrs["axes"]}
    if axes != set(range(r - len(axes), r)):
        raise ctx.fail(f"{node.op} over axes {sorted(axes)} of {tuple(x.shape)}",
                       "the SAT lowering takes the variance over the trailing axes (dim=-1); "
                       "transpose first")
    n = int(np.prod([x.shape[a] for a in axes]))
    if n > MAX_ROWS:
        raise ctx.fail(f"a variance over {n} contiguous elements",
                       "the vector unit's cols field is 16 bits; reduce in two steps")
    return n


def _row_mean(ctx: LowerCtx, r: int, n: int, src: int, mean: int) -> None:
    """mean <- the mean of each of ``r`` rows of ``n`` at ``src`` (one pass)."""
    ctx.b.vec("reduce_sum", r, n, s0_addr=src, d_addr=mean, axis=1)
    _col(ctx, "mul_imm", r, mean, mean, imm=1.0 / n)


@lowering("reduce_var")
def lower_reduce_var(ctx: LowerCtx, node: Node) -> None:
    """Variance along rows, two passes as the reference: the mean, then the sum of squares
    about it (``reduce_sqdev``) times 1 / (n - correction)."""
    x = node.inputs[0]
    n = _var_cols(ctx, node, x)
    xv, out = _matrix(ctx, x, n), _flat(ctx, node.outputs[0]).region.addr
    step, slots = _row_tiles(ctx, xv.planes, {"x": n, "mean": 1, "s": 1}, "reduce_var")
    for i, (r0, r1) in enumerate(chunks(xv.planes, step)):
        t, r = slots[i % len(slots)], r1 - r0
        ctx.dma3("load", xv, r0, r1, "vec", t["x"])
        _row_mean(ctx, r, n, t["x"], t["mean"])
        ctx.b.vec("reduce_sqdev", r, n, s0_addr=t["x"], s1_addr=t["mean"], d_addr=t["s"],
                  axis=1, bcast="col")
        _col(ctx, "mul_imm", r, t["s"], t["s"], imm=1.0 / (n - node.attrs.get("correction", 1)))
        ctx.b.store("vec", t["s"], out + r0 * 4, 1, r)


@lowering("reduce_var_grad")
def lower_reduce_var_grad(ctx: LowerCtx, node: Node) -> None:
    """dx = (x - mean) * dy * 2 / (n - correction) per row (dy one value per row): the mean
    (one pass), then one affine x * k - mean * k with k = dy * 2 / (n - correction)."""
    dy, x = node.inputs
    n = _var_cols(ctx, node, x)
    xv, ov = _matrix(ctx, x, n), _matrix(ctx, node.outputs[0], n)
    dram = _flat(ctx, dy).region.addr
    step, slots = _row_tiles(ctx, xv.planes, {"x": n, "mean": 1, "dy": 1, "pair": 2},
                             "reduce_var_grad")
    for i, (r0, r1) in enumerate(chunks(xv.planes, step)):
        t, r = slots[i % len(slots)], r1 - r0
        ctx.dma3("load", xv, r0, r1, "vec", t["x"])
        ctx.b.load("vec", t["dy"], dram + r0 * 4, 1, r)
        _row_mean(ctx, r, n, t["x"], t["mean"])
        _col(ctx, "mul_imm", r, t["dy"], t["dy"], imm=2.0 / (n - node.attrs.get("correction", 1)))
        _row_pair(ctx, r, t["dy"], t["mean"], t["pair"])
        ctx.b.vec("affine", r, n, s0_addr=t["x"], s1_addr=t["pair"], d_addr=t["x"], bcast="col")
        ctx.dma3("store", ov, r0, r1, "vec", t["x"])
