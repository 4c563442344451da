"""GEMM lowerings on the STCE: matmul and convolution (implicit GEMM) for FF, BP and WU.

A node's :class:`~satc.backends.sat.codegen.tiling.GemmProblem` is ``C[M, N] (+)= A[M, K]
@ B[K, N]`` per kernel tap; the tile ``(mt, nt, kt, dataflow, slots, taps)`` comes
from the tile plan, and one GEMM instruction takes ``taps`` kernel taps
(implicit GEMM: FF and BP stack them along K, tap-major; WU side by side along N). Operands are loaded tile by tile by DMA:

* :class:`MatrixOperand` -- a stored matrix (an activation, or one tap
  matrix of a tap-major weight), read ``[outer, k]`` or ``[k, outer]`` and
  handed to the GEMM with the matching transpose flag;
* :class:`NMOperand` -- one tap of a compressed N:M weight: values and
  packed indices of whole byte-aligned groups (the GEMM reads them as is);
* :class:`WindowOperand` -- an NCHW activation seen as ``[C, N*Ho*Wo]``:
  each image's window for a kernel tap is one 3-D DMA (channels x rows x
  cols) from the zero-padded DRAM copy -- im2col by address arithmetic; a staged
  tile (:attr:`~satc.backends.sat.codegen.tiling.Tile.staged`) instead loads the padded
  rows all its taps read at full width (long DRAM runs) and crops each tap's window
  with vector copies.

Conv FF: ``Y[Co, L] += W[Co, (tap, Ci)] X[(tap, Ci), L]`` over tap groups; BP:
``dX[Ci, L] += W^T[Ci, (tap, Co)] dY[(tap, Co), L]`` with dY windows
of the flipped kernel (stride 1); WU: per tap group ``dW[Co, (tap, Ci)] = dY[Co, L]
X[(tap, Ci), L]^T`` accumulated over image tiles of L (dY loaded once per group).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from satc.backends.sat.codegen.lowering import (
    MAX_PLANES,
    MAX_ROWS,
    LowerCtx,
    chunks,
    lowering,
)
from satc.backends.sat.codegen.conv_geometry import bp_phases
from satc.backends.sat.codegen.grouped_conv import lower_grouped_conv
from satc.backends.sat.codegen.memory import Compressed, Dense, TapMajor
from satc.backends.sat.codegen.norm import _xhat_pair
from satc.backends.sat.codegen.partition import align
from satc.backends.sat.codegen.plan import stats_key
from satc.backends.sat.codegen.tensor import _Channels, _load_vector, _store_vector
from satc.backends.sat.codegen.tiling import MASK_CHUNKS, GemmProblem, Tile
from satc.backends.sat.nmformat import groups, index_bits
from satc.ir.graph import Node


@dataclass(frozen=True)
class Loaded:
    """Where a loaded operand tile sits and how the GEMM must read it."""

    addr: int
    stride: int
    k_major: bool              # stored [k, outer] (else [outer, k])
    dtype: str = "fp32"
    idx_addr: int = 0
    idx_stride: int = 0


def tap_runs(taps: list[int]) -> list[tuple[int, int, int, int]]:
    """``taps`` as runs of constant step, each one (3-D) DMA: (position, first tap, step, count)."""
    runs: list[tuple[int, int, int, int]] = []
    j = 0
    while j < len(taps):
        step = taps[j + 1] - taps[j] if j + 1 < len(taps) else 1
        count = 1
        while j + count < len(taps) and taps[j + count] - taps[j + count - 1] == step:
            count += 1
        runs.append((j, taps[j], step, count))
        j += count
    return runs


@dataclass(frozen=True)
class MatrixOperand:
    """Matrices ``base + tap * tap_stride`` (bytes) with leading dimension ``ld``, stored
    [outer, k] if ``k_last``; several taps are stacked along K (tap-major) in the tile."""

    base: int
    tap_stride: int
    ld: int
    k_last: bool
    sparse = False

    def load(self, ctx: LowerCtx, taps: list[int], o0: int, o1: int, k0: int, k1: int, buf: str,
             addr: int, idx_addr: int) -> Loaded:
        """DMA the [o0:o1, k0:k1] tile of every tap to ``buf:addr`` (packed, taps along K)."""
        kk, oo, g = k1 - k0, o1 - o0, len(taps)
        for j, t0, step, count in tap_runs(taps):
            planes = {} if count == 1 else {"planes": count,
                                            "dram_plane_stride": step * self.tap_stride // 4}
            base = self.base + t0 * self.tap_stride
            if self.k_last:
                if count > 1:
                    planes["buf_plane_stride"] = kk
                ctx.b.load(buf, addr + j * kk * 4, base + (o0 * self.ld + k0) * 4, oo, kk,
                           dram_row_stride=self.ld, buf_row_stride=g * kk, **planes)
            else:
                if count > 1:
                    planes["buf_plane_stride"] = kk * oo
                ctx.b.load(buf, addr + j * kk * oo * 4, base + (k0 * self.ld + o0) * 4, kk, oo,
                           dram_row_stride=self.ld, **planes)
        return Loaded(addr, g * kk, False) if self.k_last else Loaded(addr, oo, True)


@dataclass(frozen=True)
class NMOperand:
    """Taps of a compressed weight: compressed rows = outer, groups along k; several taps
    are stacked along K (their packed index rows end on byte boundaries, see the tiler)."""

    st: Compressed
    sparse = True

    def load(self, ctx: LowerCtx, taps: list[int], o0: int, o1: int, k0: int, k1: int, buf: str,
             addr: int, idx_addr: int) -> Loaded:
        """DMA the values and packed indices of rows o0:o1, groups of k0:k1, of every tap."""
        s = self.st
        v0, v1 = k0 // s.m * s.n, groups(k1, s.m) * s.n
        b0 = k0 // s.m * s.n * index_bits(s.m) // 8
        esz = 2 if s.val_dtype == "fp16" else 4
        nv, nb, g = v1 - v0, -(-(v1 - v0) * index_bits(s.m) // 8), len(taps)
        for j, t0, step, count in tap_runs(taps):
            row = t0 * s.outer + o0
            vals = {} if count == 1 else {"planes": count, "buf_plane_stride": nv,
                                          "dram_plane_stride": step * s.outer * s.val_cols}
            idx = {} if count == 1 else {"planes": count, "buf_plane_stride": nb,
                                         "dram_plane_stride": step * s.outer * s.idx_cols}
            ctx.b.load(buf, addr + j * nv * esz, s.values.addr + (row * s.val_cols + v0) * esz,
                       o1 - o0, nv, dtype=s.val_dtype, dram_row_stride=s.val_cols,
                       buf_row_stride=g * nv, **vals)
            ctx.b.load(buf, idx_addr + j * nb, s.indices.addr + row * s.idx_cols + b0, o1 - o0, nb,
                       dtype="u8", dram_row_stride=s.idx_cols, buf_row_stride=g * nb, **idx)
        return Loaded(addr, g * nv, False, s.val_dtype, idx_addr, g * nb)


@dataclass(frozen=True)
class WindowOperand:
    """NCHW activation as [C, N*Ho*Wo]: tap ``t``'s window is the stride-1 ``Ho x Wo`` window
    of storage ``source(t)[0]`` starting at its padded coordinates ``source(t)[1:]`` (a
    strided conv reads the stride phases of its input, see :func:`_phase_split`). Several
    taps are stacked along the channel axis (K of FF / BP, the outer axis of WU's B)."""

    source: Callable[[int], tuple[Dense, int, int]]
    out_hw: tuple[int, int]
    channels_are_k: bool
    stage: dict[int, int] | None = None     # B tile address -> its staging span's address
    sparse = False

    def load(self, ctx: LowerCtx, taps: list[int], o0: int, o1: int, k0: int, k1: int, buf: str,
             addr: int, idx_addr: int) -> Loaded:
        """DMA per tap and image: channels x Ho rows x Wo cols of the tap's window (staged:
        :meth:`_load_staged`)."""
        (c0, c1), (l0, l1) = ((k0, k1), (o0, o1)) if self.channels_are_k else ((o0, o1), (k0, k1))
        ho, wo = self.out_hw
        hw = ho * wo
        if c1 - c0 > MAX_PLANES:
            raise ctx.fail(f"{c1 - c0} channels in one DMA", "tile channels below 4096")
        if self.stage is not None:
            self._load_staged(ctx, taps, c0, c1, l0, l1, buf, addr)
            return Loaded(addr, l1 - l0, self.channels_are_k)
        for j, tap in enumerate(taps):
            st, oh, ow = self.source(tap)
            hp, wp = st.hw_padded
            at = addr + j * (c1 - c0) * (l1 - l0) * 4
            for img in range(l0 // hw, l1 // hw):
                ctx.b.load(buf, at + (img * hw - l0) * 4, st.addr_of(img, c0, oh, ow), ho, wo,
                           planes=c1 - c0, dram_plane_stride=hp * wp, dram_row_stride=wp,
                           buf_plane_stride=l1 - l0, buf_row_stride=wo)
        return Loaded(addr, l1 - l0, self.channels_are_k)

    def _load_staged(self, ctx: LowerCtx, taps: list[int], c0: int, c1: int, l0: int, l1: int,
                     buf: str, addr: int) -> None:
        """Per image one DMA of the padded rows the taps' windows span, all columns, laid
        out [channel][image][row][col] at the staging span of ``addr``; then per tap and
        output row one ``copy`` of every (channel, image) row pair into the tile slot the
        per-tap DMA would have written (rows at a uniform stride on both sides)."""
        ho, wo = self.out_hw
        hw = ho * wo
        src = [self.source(t) for t in taps]
        st = src[0][0]
        hp, wp = st.hw_padded
        r0 = min(oh for _, oh, _ in src)
        rows = max(oh for _, oh, _ in src) + ho - r0
        span, chans, img0, imgs = rows * wp, c1 - c0, l0 // hw, (l1 - l0) // hw
        stage = self.stage[addr]
        for i in range(imgs):
            ctx.b.load(buf, stage + i * span * 4, st.addr_of(img0 + i, c0, r0, 0), rows, wp,
                       planes=chans, dram_plane_stride=hp * wp, dram_row_stride=wp,
                       buf_plane_stride=imgs * span, buf_row_stride=wp)
        for j, (_, oh, ow) in enumerate(src):
            at = addr + j * chans * (l1 - l0) * 4
            for r in range(ho):
                for q0, q1 in chunks(chans * imgs, MAX_ROWS):
                    ctx.b.vec("copy", q1 - q0, wo, s0_buf=buf, d_buf=buf, s0_stride=span,
                              s0_addr=stage + (q0 * span + (oh - r0 + r) * wp + ow) * 4,
                              d_addr=at + (q0 * hw + r * wo) * 4, d_stride=hw)

    def staged_in(self, stage: dict[int, int]) -> WindowOperand:
        """This operand loading through the staging spans ``stage`` (B tile address -> span)."""
        return dataclasses.replace(self, stage=stage)


def _idx_addr(p: GemmProblem, base: int, outer: int, k: int, esz: int) -> int:
    """Where the packed indices of a compressed tile loaded at ``base`` start: after its
    values (``outer`` rows of K = ``k``, as GemmProblem sizes the tile); 0 when dense."""
    if not p.sparse:
        return 0
    n, m = p.nm
    return base + align(outer * groups(k, m) * n * esz)


def _tiled_gemm(ctx: LowerCtx, p: GemmProblem, tile: Tile, a, b,
                store_c: Callable[[int, int, int, int, int, int, int], None],
                tap_sets: list[list[int]] | None = None,
                finish: Callable[[int, int, int, int], None] | None = None,
                init_c: Callable[[int, int, int, int, int, int], None] | None = None,
                on_a: Callable[[int, int, int, int, int, Loaded], None] | None = None) -> None:
    """Emit the tile loops: per (tap group,) M tile, N tile: loads + accumulating GEMMs, then
    stores; each GEMM instruction takes ``tile.taps`` taps (stacked along K when the taps
    are in K, side by side along N otherwise, with A loaded once for them).

    ``tap_sets`` (taps in K only) splits the taps of one output tile into sets that
    accumulate into C tiles of their own (the output phases of a strided input gradient):
    ``store_c(t, m0, m1, n0, n1, c_addr, c_stride)`` gets the set index (taps in K) or the
    tap as ``t``; ``finish`` runs once per output tile after its last set.
    ``init_c(m0, m1, n0, n1, c_addr, c_stride)`` (taps in K only) fills each C tile
    before its first GEMM, which then accumulates onto it. ``on_a(m0, m1, n0, k0, k1,
    loaded)`` (one tap) sees every A tile once it is loaded."""
    slots = tile.slots
    kk, nn = p.instruction_kn(tile.nt, tile.kt, tile.taps)
    a_t = [ctx.alloc(p.a_buf, p.a_tile_bytes(tile.mt, kk), "A tile") for _ in range(slots)]
    b_t = [ctx.alloc(p.b_buf, p.b_tile_bytes(kk, nn), "B tile") for _ in range(slots)]
    c_t = [ctx.alloc("acc", tile.mt * nn * 4, "C tile") for _ in range(slots)]
    if tile.staged and b.source(0)[0].hw_padded[1] == p.stage[4]:
        span = p.stage_bytes(tile.nt, tile.kt, tile.taps)
        b = b.staged_in({t: ctx.alloc(p.b_buf, span, "staging span") for t in b_t})
    if tile.staged and p.fold == "n" and a.source(0)[0].padded \
            and a.source(0)[0].hw_padded[1] <= p.stage[4]:     # WU dY: its rows at full width
        span = p.a_stage_bytes(tile.mt, tile.kt)
        a = a.staged_in({t: ctx.alloc(p.a_buf, span, "staging span") for t in a_t})
    nm = p.nm or (0, 0)

    def idx_of(base: int, outer: int, esz: int) -> int:
        return _idx_addr(p, base, outer, kk, esz)

    def in_groups(taps: list[int]) -> list[list[int]]:
        return [taps[i:i + tile.taps] for i in range(0, len(taps), tile.taps)]

    it = ct = 0
    outer_taps = [None] if p.taps_in_k else in_groups(list(range(p.taps)))
    for ot in outer_taps:
        for m0 in range(0, p.m, tile.mt):
            m1 = min(p.m, m0 + tile.mt)
            for n0 in range(0, p.n, tile.nt):
                n1 = min(p.n, n0 + tile.nt)
                tap_groups = (tap_sets or [list(range(p.taps))]) if p.taps_in_k else [ot]
                for g, taps in enumerate(tap_groups):
                    c_addr = c_t[ct % slots]
                    ct += 1
                    nt_ = n1 - n0 if p.taps_in_k else len(taps) * (n1 - n0)
                    if init_c is not None:
                        init_c(m0, m1, n0, n1, c_addr, nt_)
                    first = init_c is None
                    for chunk in in_groups(taps) if p.taps_in_k else [taps]:
                        for k0 in range(0, p.k, tile.kt):
                            k1 = min(p.k, k0 + tile.kt)
                            sa, sb = a_t[it % slots], b_t[it % slots]
                            it += 1
                            la = a.load(ctx, chunk if p.taps_in_k else chunk[:1], m0, m1, k0, k1,
                                        p.a_buf, sa, idx_of(sa, tile.mt, p.a_bytes))
                            if on_a is not None:
                                on_a(m0, m1, n0, k0, k1, la)
                            lb = b.load(ctx, chunk, n0, n1, k0, k1, p.b_buf, sb,
                                        idx_of(sb, tile.nt, p.b_bytes))
                            sparse = la if a.sparse else lb if b.sparse else None
                            k_ = len(chunk) * (k1 - k0) if p.taps_in_k else k1 - k0
                            ctx.b.gemm(m1 - m0, nt_, k_, a_buf=p.a_buf, a_addr=la.addr,
                                       a_stride=la.stride, a_dtype=la.dtype, b_buf=p.b_buf,
                                       b_addr=lb.addr, b_stride=lb.stride, b_dtype=lb.dtype,
                                       c_addr=c_addr, c_stride=nt_, n=nm[0], m=nm[1],
                                       sparse_b=b.sparse,
                                       idx_buf=p.b_buf if b.sparse else p.a_buf,
                                       idx_addr=sparse.idx_addr if sparse else 0,
                                       idx_stride=sparse.idx_stride if sparse else None,
                                       dataflow=tile.dataflow,
                                       trans_a=la.k_major and not a.sparse,
                                       trans_b=not lb.k_major and not b.sparse,
                                       accumulate=not first, interleave=tile.interleave,
                                       stationary_a=tile.stationary_a)
                            first = False
                    if p.taps_in_k:
                        store_c(g, m0, m1, n0, n1, c_addr, nt_)
                    else:
                        for j, tap in enumerate(taps):
                            store_c(tap, m0, m1, n0, n1, c_addr + j * (n1 - n0) * 4, nt_)
                if finish is not None:
                    finish(m0, m1, n0, n1)


def _problem(ctx: LowerCtx, node: Node) -> tuple[GemmProblem, Tile]:
    if node.name not in ctx.tiles:
        raise ctx.fail("GEMM node has no tile", "make the tile plan from this graph (plan_tiles)")
    planned = ctx.tiles[node.name]
    return planned.problem, planned.tile


def _weight(ctx: LowerCtx, node: Node, v, outer_axis_k_last: bool, nm_axis: int):
    """The weight operand: NMOperand for a pruned weight, else a (tap-)matrix operand."""
    s = ctx.st(v)
    if "nm" in node.attrs:
        n, m, axis = node.attrs["nm"]
        if not isinstance(s, Compressed) or (s.n, s.m, s.axis) != (n, m, axis) or axis != nm_axis:
            raise ctx.fail(f"N:M operand %{v.name} ({node.attrs['nm']}) is not stored compressed "
                           f"along the reduction axis {nm_axis}",
                           "prune FF weights along Ci (axis 1) and BP weights along Co (axis 0)")
        return NMOperand(s)
    if isinstance(s, TapMajor):
        return MatrixOperand(s.tap_addr(0), s.tap_addr(1) - s.tap_addr(0), s.shape[1],
                             outer_axis_k_last)
    d = ctx.dense(v)
    addr, _, cols = d.matrix()
    return MatrixOperand(addr, 0, cols, outer_axis_k_last)


def _stacked(ctx: LowerCtx, v) -> tuple[int, int, int]:
    """(address, row length, bytes per matrix) of a row-major matmul operand: its last axis
    is the row; batch ``t`` of a batched matmul starts ``t`` matrices further."""
    cols = v.shape[-1] if v.shape else 1
    rows = v.shape[-2] if len(v.shape) > 1 else 1
    return _row_major(ctx, v), cols, rows * cols * 4


def _store_matrix(ctx: LowerCtx, out) -> Callable:
    addr, cols, plane = _stacked(ctx, out)

    def store(t, m0, m1, n0, n1, c, c_stride):
        ctx.b.store("acc", c, addr + t * plane + (m0 * cols + n0) * 4, m1 - m0, n1 - n0,
                    dram_row_stride=cols, buf_row_stride=c_stride)
    return store


def _bias_epilogue(ctx: LowerCtx, bias, store: Callable) -> Callable:
    """C-tile store of a ``matmul_bias``: the bias row (loaded once into the vector buffer)
    added to the tile in the accumulators (``row`` broadcast), then stored as before. A DMA
    of the bias row repeated over the tile's rows (DRAM row stride 0) would move the whole
    tile's bytes over the DRAM channel that the forward pass is short of."""
    n = bias.shape[0]
    row = ctx.alloc("vec", n * 4, "bias row")
    ctx.b.load("vec", row, ctx.dense(bias).region.addr, 1, n)

    def store_with_bias(t, m0, m1, n0, n1, c, c_stride):
        ctx.b.vec("add", m1 - m0, n1 - n0, s0_buf="acc", s0_addr=c, s0_stride=c_stride,
                  s1_addr=row + n0 * 4, bcast="row", d_buf="acc", d_addr=c, d_stride=c_stride)
        store(t, m0, m1, n0, n1, c, c_stride)
    return store_with_bias


def _residual_init(ctx: LowerCtx, residual) -> Callable:
    """C-tile initialiser of a ``matmul_bias`` with a residual: each C tile starts as the
    residual tile (one DMA) and the GEMMs accumulate onto it."""
    raddr, cols, _ = _stacked(ctx, residual)

    def init(m0, m1, n0, n1, c, c_stride):
        ctx.b.load("acc", c, raddr + (m0 * cols + n0) * 4, m1 - m0, n1 - n0,
                   dram_row_stride=cols, buf_row_stride=c_stride)
    return init


def _gelu_epilogue(ctx: LowerCtx, out, store: Callable) -> Callable:
    """C-tile store of a ``matmul_bias`` with a gelu epilogue: the product, then its GELU
    computed in place in the accumulators and stored into ``out``."""
    store_gelu = _store_matrix(ctx, out)

    def store_both(t, m0, m1, n0, n1, c, c_stride):
        store(t, m0, m1, n0, n1, c, c_stride)
        ctx.b.vec("gelu", m1 - m0, n1 - n0, s0_buf="acc", s0_addr=c, s0_stride=c_stride,
                  d_buf="acc", d_addr=c, d_stride=c_stride)
        store_gelu(t, m0, m1, n0, n1, c, c_stride)
    return store_both


def _scaled_store(ctx: LowerCtx, alpha: float, store: Callable) -> Callable:
    """C-tile store of a ``matmul`` with a folded scale (attr ``alpha``): the tile times
    alpha, in place in the accumulators, then stored as before."""
    def store_scaled(t, m0, m1, n0, n1, c, c_stride):
        ctx.b.vec("mul_imm", m1 - m0, n1 - n0, s0_buf="acc", s0_addr=c, s0_stride=c_stride,
                  d_buf="acc", d_addr=c, d_stride=c_stride, imm=alpha)
        store(t, m0, m1, n0, n1, c, c_stride)
    return store_scaled


class _ColumnSums:
    """db of a ``matmul_bias_grad``: the column sums of dy, accumulated on the vector unit
    from each dy^T tile the GEMM loads (the first N tile's; K tiles accumulate), stored
    at the end."""

    def __init__(self, ctx: LowerCtx, p: GemmProblem, db) -> None:
        self.ctx, self.a_buf, self.db = ctx, p.a_buf, db
        self.addr = ctx.alloc("vec", align(p.m * 4), "bias gradient")

    def __call__(self, m0: int, m1: int, n0: int, k0: int, k1: int, la: Loaded) -> None:
        if n0 == 0:
            self.ctx.b.vec("reduce_sum", k1 - k0, m1 - m0, s0_buf=self.a_buf, s0_addr=la.addr,
                           s0_stride=la.stride, d_addr=self.addr + m0 * 4, axis=0,
                           accumulate=k0 > 0)

    def store(self) -> None:
        """DMA db to DRAM."""
        self.ctx.b.store_region(self.ctx.dense(self.db).region, "vec", self.addr)


def _store_split_heads(ctx: LowerCtx, out) -> Callable:
    """C-tile store of a product [B*T, F] into ``out`` = [B, H, T, F/H] (``split_heads``):
    per image in the tile one DMA, the heads it covers as planes (per head when the tile
    cuts one)."""
    addr = _row_major(ctx, out)
    _, heads, t_, d = out.shape

    def store(_t, m0, m1, n0, n1, c, c_stride):
        for img in range(m0 // t_, -(-m1 // t_)):
            r0, r1 = max(m0, img * t_), min(m1, (img + 1) * t_)
            spans = [(h, max(n0, h * d), min(n1, (h + 1) * d)) for h in range(n0 // d, -(-n1 // d))]
            whole = all(c1 - c0 == d for _, c0, c1 in spans)
            for h, c0, c1 in [spans[0]] if whole else spans:
                dram = addr + (((img * heads + h) * t_ + r0 - img * t_) * d + c0 - h * d) * 4
                buf = c + ((r0 - m0) * c_stride + c0 - n0) * 4
                planes = {"planes": len(spans), "dram_plane_stride": t_ * d,
                          "buf_plane_stride": d} if whole and len(spans) > 1 else {}
                ctx.b.store("acc", buf, dram, r1 - r0, c1 - c0, dram_row_stride=d,
                            buf_row_stride=c_stride, **planes)
    return store


def _store_merge_heads(ctx: LowerCtx, out) -> Callable:
    """C-tile store of batch matrix t = (b, h) of a [B, H, T, d] product into ``out`` =
    [B, T, H, d] (``merge_heads``): rows of d at a row stride of H*d."""
    addr = _row_major(ctx, out)
    _, t_, heads, d = out.shape

    def store(t, m0, m1, n0, n1, c, c_stride):
        img, h = divmod(t, heads)
        ctx.b.store("acc", c, addr + (((img * t_ + m0) * heads + h) * d + n0) * 4, m1 - m0,
                    n1 - n0, dram_row_stride=heads * d, buf_row_stride=c_stride)
    return store


def _row_major(ctx: LowerCtx, v) -> int:
    """DRAM address of ``v``, stored row-major without padding (else a CompileError)."""
    s = ctx.dense(v)
    if not isinstance(s, Dense) or s.padded:
        raise ctx.fail(f"%{v.name} is not a row-major tensor", "check the memory plan")
    return s.region.addr


def _product_store(ctx: LowerCtx, node: Node) -> Callable:
    """How a matmul-family node stores its C tiles: row-major, or in a folded layout."""
    out = node.outputs[0]
    if node.attrs.get("split_heads"):
        return _store_split_heads(ctx, out)
    if node.attrs.get("merge_heads"):
        return _store_merge_heads(ctx, out)
    return _store_matrix(ctx, out)


@lowering("matmul", "matmul_bias", "matmul_bias_grad")
def lower_matmul(ctx: LowerCtx, node: Node) -> None:
    """Matmul with transposes: 2-D, or [..., K] rows times a 2-D weight, where input 1 may
    be an N:M weight (FF: trans_b, BP: plain); or batched over equal leading axes (one GEMM
    problem per batch matrix, both operands dense activations: attention).
    ``matmul_bias`` (2-D weight): the bias row is added to each C tile before its store
    (:func:`_bias_epilogue`), a residual is the tile's initial value (:func:`_residual_init`);
    with a gelu epilogue its GELU is stored too (:func:`_gelu_epilogue`); a ``matmul`` with attr alpha
    scales each C tile before its store (:func:`_scaled_store`);
    ``matmul_bias_grad``: dW = dy^T x with db summed from its dy tiles (:class:`_ColumnSums`)."""
    p, tile = _problem(ctx, node)
    a, b = node.inputs[:2]
    ta, tb = node.attrs.get("trans_a", False), node.attrs.get("trans_b", False)
    aaddr, acols, aplane = _stacked(ctx, a)
    opa = MatrixOperand(aaddr, aplane, acols, not ta)
    if p.taps_in_k:
        opb = _weight(ctx, node, b, tb, 1 if tb else 0)
    else:
        baddr, bcols, bplane = _stacked(ctx, b)
        opb = MatrixOperand(baddr, bplane, bcols, tb)
    sums = _ColumnSums(ctx, p, node.outputs[1]) if node.op == "matmul_bias_grad" else None
    init, store = None, _product_store(ctx, node)
    if node.attrs.get("alpha", 1.0) != 1.0:
        store = _scaled_store(ctx, float(node.attrs["alpha"]), store)
    if node.attrs.get("gelu"):
        store = _gelu_epilogue(ctx, node.outputs[1], store)
    if node.op == "matmul_bias":
        store = _bias_epilogue(ctx, node.inputs[2], store)
        if len(node.inputs) > 3:
            init = _residual_init(ctx, node.inputs[3])
    _tiled_gemm(ctx, p, tile, opa, opb, store, init_c=init, on_a=sums)
    if sums is not None:
        sums.store()


def _act(ctx: LowerCtx, v) -> Dense:
    s = ctx.dense(v)
    if not isinstance(s, Dense) or len(s.shape) != 4:
        raise ctx.fail(f"%{v.name} is not an NCHW activation", "check the memory plan")
    return s


@dataclass(frozen=True)
class ImageTile:
    """Where images ``img0 : img0 + imgs``, channels ``m0:m1`` of an NCHW activation lie in a
    buffer tile: image j at element ``j * img_step``, channel planes ``plane_stride`` apart,
    rows of ``hw[1]`` values ``row_stride`` apart (``hw``: the rows and columns moved)."""

    img0: int
    imgs: int
    m0: int
    m1: int
    img_step: int
    plane_stride: int
    row_stride: int
    hw: tuple[int, int]

    def dmas(self, ctx: LowerCtx, kind: str, t: Dense, buf: str, addr: int) -> None:
        """One ``kind`` ('load' / 'store') DMA per image between ``t`` and the tile at ``addr``."""
        hp, wp = t.hw_padded
        for j in range(self.imgs):
            getattr(ctx.b, kind)(buf, addr + j * self.img_step * 4,
                                 t.addr_of(self.img0 + j, self.m0, t.pads[0], t.pads[1]),
                                 *self.hw, planes=self.m1 - self.m0, dram_plane_stride=hp * wp,
                                 dram_row_stride=wp, buf_plane_stride=self.plane_stride,
                                 buf_row_stride=self.row_stride)


def _packed_images(hw: tuple[int, int], m0: int, m1: int, n0: int, n1: int,
                   c_stride: int) -> ImageTile:
    """The layout of a C tile of columns n0:n1 (whole images of ``hw`` pixels, packed)."""
    per = hw[0] * hw[1]
    return ImageTile(n0 // per, (n1 - n0) // per, m0, m1, per, c_stride, hw[1], hw)


def _store_nchw(ctx: LowerCtx, out, hw: tuple[int, int]) -> Callable:
    s = _act(ctx, out)

    def store(_t, m0, m1, n0, n1, c, c_stride):
        _packed_images(hw, m0, m1, n0, n1, c_stride).dmas(ctx, "store", s, "acc", c)
    return store


class ReluMask:
    """A relu_grad folded into an input gradient (attr ``relu_grad``, passes/fusion.py;
    inputs dy, w, y, terms...). With ``init_terms`` each dX tile starts as the first term,
    one DMA into it (:meth:`init`; only where that DMA writes every element the GEMMs then
    accumulate onto). Before the tile is stored (:meth:`apply`), chunk by chunk (whole rows
    of one image, :meth:`~.tiling.GemmProblem.mask_bytes`), the other terms are added and y,
    loaded into a vector-buffer chunk tile of the same layout, masks it (vec ``relu_grad``).
    The chunk tiles are zeroed once (a DMA of a zero row repeated), so the gaps of a layout
    y does not fill (the dropped columns of a wide tile) read 0."""

    ZERO_ROW = 1024

    def __init__(self, ctx: LowerCtx, node: Node, p: GemmProblem, mt: int, row_stride: int,
                 init_terms: bool) -> None:
        self.ctx, self.init_terms, self.node = ctx, init_terms, node
        self.y = _act(ctx, node.inputs[2])
        stats = 3 if node.attrs.get("bn_stats") else 0
        self.terms = [_act(ctx, v) for v in node.inputs[3 + stats:]]
        size = p.mask_bytes(mt)
        self.rows = max(1, size // (mt * row_stride * 4))
        zeros = ctx.zeros(self.ZERO_ROW)
        full, rest = divmod(size // 4, self.ZERO_ROW)
        self.tiles = [ctx.alloc("vec", size, "relu mask chunk")
                      for _ in range(MASK_CHUNKS * (3 if stats else 1))]
        for t in self.tiles:
            if full:
                ctx.b.load("vec", t, zeros.addr, full, self.ZERO_ROW, dram_row_stride=0)
            if rest:
                ctx.b.load("vec", t + full * self.ZERO_ROW * 4, zeros.addr, 1, rest)
        self.count = 0
        self.stats = None
        if stats:                        # the xhat pairs and the [C, 2] sums of the batchnorm
            x, mean, invstd = node.inputs[3:6]
            c = _Channels(ctx, x, 1)
            pair = _xhat_pair(ctx, c, _load_vector(ctx, mean, "mean"),
                              _load_vector(ctx, invstd, "invstd"))
            self.stats = (_act(ctx, x), pair.addr, ctx.alloc("vec", c.channels * 8, "dx sums"))
            self.seen: set[int] = set()

    def init(self, buf: str, addr: int, where: ImageTile) -> bool:
        """Load the first term into the tile at ``addr``: False when there is none to load."""
        if self.init_terms and self.terms:
            where.dmas(self.ctx, "load", self.terms[0], buf, addr)
            return True
        return False

    def apply(self, buf: str, addr: int, where: ImageTile) -> None:
        """Add the terms :meth:`init` did not load to the tile at ``addr`` and mask it by y."""
        b = self.ctx.b
        ch, stride, (h, w) = where.m1 - where.m0, where.plane_stride, where.hw
        for j in range(where.imgs):
            for r0, r1 in chunks(h, self.rows):
                t = self.tiles[self.count % MASK_CHUNKS]
                self.count += 1
                c = addr + (j * where.img_step + r0 * where.row_stride) * 4
                cols, span = (r1 - r0 - 1) * where.row_stride + w, (r1 - r0) * where.row_stride
                for src in (*self.terms[1 if self.init_terms else 0:], self.y):
                    self._load_chunk(src, t, where, j, r0, r1, span)
                    func = "relu_grad" if src is self.y else "add"
                    b.vec(func, ch, cols, s0_addr=t, s0_stride=span, s1_buf=buf, s1_addr=c,
                          s1_stride=stride, d_buf=buf, d_addr=c, d_stride=stride)
                if self.stats is not None:
                    self._sums(where, j, r0, r1, buf, c, cols, span)

    def _load_chunk(self, src: Dense, t: int, where: ImageTile, j: int, r0: int, r1: int,
                    span: int) -> None:
        """Rows r0:r1 of image j, channels ``where.m0:m1`` of ``src`` into the chunk tile ``t``
        (channel planes ``span`` apart, rows ``where.row_stride`` apart)."""
        hp, wp = src.hw_padded
        self.ctx.b.load("vec", t, src.addr_of(where.img0 + j, where.m0, src.pads[0] + r0,
                                              src.pads[1]),
                        r1 - r0, where.hw[1], planes=where.m1 - where.m0,
                        dram_plane_stride=hp * wp, dram_row_stride=wp, buf_plane_stride=span,
                        buf_row_stride=where.row_stride)

    def _sums(self, where: ImageTile, j: int, r0: int, r1: int, buf: str, c: int, cols: int,
              span: int) -> None:
        """sum(dx) and sum(dx * xhat) of one masked chunk at ``c``, accumulated per channel:
        x's chunk is loaded, made xhat (one affine into a third chunk tile: x's tile keeps its
        zero gaps, xhat's gaps hold the finite shift, which meets dx's zero gaps) and reduced
        with it."""
        x, pair, sums = self.stats
        b, ch = self.ctx.b, where.m1 - where.m0
        t = self.tiles[MASK_CHUNKS + self.count % MASK_CHUNKS]
        xhat = self.tiles[2 * MASK_CHUNKS + self.count % MASK_CHUNKS]
        self._load_chunk(x, t, where, j, r0, r1, span)
        b.vec("affine", ch, cols, s0_addr=t, s0_stride=span, s1_addr=pair + where.m0 * 8,
              bcast="col", d_addr=xhat, d_stride=span)
        b.vec("reduce_sum_dot", ch, cols, s0_buf=buf, s0_addr=c, s0_stride=where.plane_stride,
              s1_addr=xhat, s1_stride=span, d_addr=sums + where.m0 * 8, axis=1,
              accumulate=where.m0 in self.seen)
        self.seen.add(where.m0)

    def finish(self) -> None:
        """Store the batchnorm's sums (attr ``bn_stats``) once every tile is done."""
        if self.stats is not None:
            _store_vector(self.ctx, self.node.outputs[1], self.stats[2])


# ---------------------------------------------------------------- strided convolution
def _conv_geom(node: Node) -> tuple:
    """(x, sh, sw, pt, pl, kh, kw, ho, wo) of a conv2d / conv2d_grad_weight node."""
    x = node.inputs[0] if node.op == "conv2d" else node.inputs[1]
    kh, kw = (node.attrs.get("weight_shape") or node.inputs[1].shape)[2:]
    ho, wo = node.outputs[0].shape[2:] if node.op == "conv2d" else node.inputs[0].shape[2:]
    sh, sw = node.attrs["stride"]
    pt, pl = node.attrs["padding"][:2]
    return x, sh, sw, pt, pl, kh, kw, ho, wo


def _phase_keys(node: Node) -> dict[tuple[int, int], tuple[str, tuple[int, ...]]]:
    """Stride phases of a strided conv's input: (a, b) -> (derived key, shape).

    Phase (a, b) is ``P[n, c, i, j] = x_pad[n, c, a + sh*i, b + sw*j]`` (``x_pad``: x with
    the conv's padding), so tap (u, v) of the stride-(sh, sw) conv is the stride-1 window
    of phase (u % sh, v % sw) at (u // sh, v // sw). Only phases some tap reads exist."""
    x, sh, sw, pt, pl, kh, kw, ho, wo = _conv_geom(node)
    if (sh, sw) == (1, 1):
        return {}
    n, c = x.shape[:2]
    return {(a, b): (f"{x.name}#phase{a},{b}/s{sh},{sw}/k{kh},{kw}/p{pt},{pl}/o{ho},{wo}",
                     (n, c, (kh - 1 - a) // sh + ho, (kw - 1 - b) // sw + wo))
            for a in range(min(kh, sh)) for b in range(min(kw, sw))}


def _derived(node: Node) -> dict[str, tuple[int, ...]]:
    return dict(_phase_keys(node).values())


def _phase_split(ctx: LowerCtx, st: Dense, phases: dict[int, Dense], a: int, sh: int, sw: int,
                 pt: int, pl: int) -> None:
    """Write the phases (a, b) of ``st`` for the b in ``phases``: one DMA per chunk picks
    every sh-th row (row stride) over the columns all of them read, then per phase the vector
    unit takes every sw-th element of a row from the phase's first column (``maxpool`` with a
    1x1 window and column stride sw), so the rows are loaded once for all sw column phases."""
    hp, wp = st.hw_padded
    n, c, ha = next(iter(phases.values())).shape[:3]
    r0 = st.pads[0] - pt + a
    first = {b: st.pads[1] - pl + b for b in phases}               # first column of phase b
    span = {b: sw * (ph.shape[3] - 1) + 1 for b, ph in phases.items()}
    c0 = min(first.values())
    width = max(first[b] + span[b] for b in phases) - c0
    out_bytes = sum(ha * ph.shape[3] * 4 for ph in phases.values()) if sw > 1 else 0
    per_plane = ha * width * 4 + out_bytes
    ctx.fresh_arena()
    free = ctx.arena.free_bytes("vec")
    tiles_per_slot = 1 + (len(phases) if sw > 1 else 0)
    limit = min(n * c, MAX_PLANES, MAX_ROWS // ha)
    step, slots = min(limit, (free - 128 * tiles_per_slot) // (2 * per_plane)), 2
    if step < 1:
        step, slots = min(limit, (free - 64 * tiles_per_slot) // per_plane), 1
    if step < 1:
        raise ctx.fail(f"one {ha}x{width} plane of the stride-phase split does not fit the vec "
                       "buffer", "raise vec_buffer_bytes")
    tiles = [(ctx.alloc("vec", step * ha * width * 4, "phase source"),
              {b: ctx.alloc("vec", step * ha * ph.shape[3] * 4, "phase")
               for b, ph in phases.items()} if sw > 1 else {})
             for _ in range(slots)]
    views = {b: ph.view3() for b, ph in phases.items()}
    for i, (p0, p1) in enumerate(chunks(n * c, step)):
        tin, touts = tiles[i % slots]
        ctx.b.load("vec", tin, st.region.addr + ((p0 * hp + r0) * wp + c0) * 4, ha, width,
                   planes=p1 - p0, dram_plane_stride=hp * wp, dram_row_stride=sh * wp,
                   buf_plane_stride=ha * width)
        for b, view in views.items():
            if sw > 1:
                ctx.b.vec("maxpool", (p1 - p0) * ha, span[b], s0_addr=tin + (first[b] - c0) * 4,
                          s0_stride=width, d_addr=touts[b], window=(1, 1, 1, sw))
            ctx.dma3("store", view, p0, p1, "vec", touts[b] if sw > 1 else tin)


def _conv_pads(node: Node) -> dict[int, tuple[int, int, int, int]]:
    pt, pl, pb, pr = node.attrs["padding"]
    if node.op == "conv2d":
        return {0: (pt, pl, pb, pr)}
    if node.op == "conv2d_grad_weight":
        return {1: (pt, pl, pb, pr)}
    hm, wm, phases = bp_phases(node)
    dis = [di for _, _, taps in phases for _, di, _ in taps]
    djs = [dj for _, _, taps in phases for _, _, dj in taps]
    ho, wo = node.inputs[0].shape[2:]
    return {0: (max(0, -min(dis)), max(0, -min(djs)), max(0, hm - ho + max(dis)),
                max(0, wm - wo + max(djs)))}


def _x_window(ctx: LowerCtx, node: Node, channels_are_k: bool) -> WindowOperand:
    """The conv input's window operand (FF B operand, WU B operand); a strided conv reads
    the stride phases of its input (made here by the first node that needs them)."""
    x, sh, sw, pt, pl, kh, kw, ho, wo = _conv_geom(node)
    s = _act(ctx, x)
    if (sh, sw) == (1, 1):
        return WindowOperand(lambda t: (s, s.pads[0] - pt + t // kw, s.pads[1] - pl + t % kw),
                             (ho, wo), channels_are_k)
    phases, new = {}, {}
    for (a, b), (key, _) in _phase_keys(node).items():
        ph = phases[(a, b)] = ctx.storage[key]
        if ctx.first_use(key):
            new.setdefault(a, {})[b] = ph
    for a, row_phases in new.items():
        _phase_split(ctx, s, row_phases, a, sh, sw, pt, pl)
    return WindowOperand(lambda t: (phases[(t // kw % sh, t % kw % sw)], t // kw // sh,
                                    t % kw // sw), (ho, wo), channels_are_k)


def _wide_offsets(node: Node, x: Dense, p: GemmProblem) -> tuple[list[int], list[int]] | None:
    """Where tap (u, v) of a wide GEMM (:func:`_wide_gemm`) reads ``x``: (padded row of
    kernel row u, padded column of kernel column v), for a conv2d (B = its input) or a
    conv2d_grad_input (B = dY, the flipped kernel). None when the storage's padded rows are
    not the ones the window needs (another consumer padded them wider)."""
    if not p.window or x.hw_padded[1] != p.window[2]:
        return None
    kh, kw = node.inputs[1].shape[2:]
    pt, pl, _, _ = node.attrs["padding"]
    sign = 1 if node.op == "conv2d" else -1
    rows = [x.pads[0] - sign * pt + sign * u for u in range(kh)]
    cols = [x.pads[1] - sign * pl + sign * v for v in range(kw)]
    return (rows, cols) if sorted(cols) == list(range(kw)) else None


def _wide_gemm(ctx: LowerCtx, node: Node, p: GemmProblem, tile: Tile, a, x: Dense,
               offsets: tuple[list[int], list[int]], bias: Callable | None = None,
               mask: ReluMask | None = None, stats: "_ChannelStats | None" = None) -> None:
    """Stride-1 conv FF or input gradient with wide windows: per (M, N, K) tile, kw DMAs load
    every image's padded rows from the first row any tap reads on, copy ``v`` from column
    ``cols[v]`` (``offsets``, :func:`_wide_offsets`), laid out [v][channel][image][seg];
    kernel row ``u`` is then one GEMM reading them ``rows[u]`` rows further (rows (v,
    channel) at a uniform stride), its output column ``i * wp + j`` of each image being
    output pixel (i, j). The columns j >= Wo and the rows between images are computed and
    dropped by the stores. Taps are tap-major in K as in :func:`_tiled_gemm`. ``bias``
    (:func:`_channel_bias`) is added to each C tile before its stores; a ``mask``
    (:class:`ReluMask`) starts it and masks it; ``stats`` (:class:`_ChannelStats`) takes the
    batchnorm statistics of its valid columns."""
    rows, cols = offsets
    row0 = min(rows)
    kh, kw, wp, seg = p.window
    ho, wo = node.outputs[0].shape[2:]
    hw, c = ho * wo, x.shape[1]
    hp = x.hw_padded[0]
    out = _act(ctx, node.outputs[0])
    ohp, owp = out.hw_padded
    images = tile.nt // hw
    slots, nm = tile.slots, p.nm or (0, 0)
    a_t = [ctx.alloc(p.a_buf, p.a_tile_bytes(tile.mt, kw * tile.kt), "A tile") for _ in range(slots)]
    b_t = [ctx.alloc(p.b_buf, kw * tile.kt * images * seg * p.b_bytes, "wide B tile")
           for _ in range(slots)]
    c_t = [ctx.alloc("acc", tile.mt * images * seg * 4, "wide C tile") for _ in range(slots)]
    it = ib = ct = 0
    for m0, m1 in chunks(p.m, tile.mt):
        for n0, n1 in chunks(p.n, tile.nt):
            img0, imgs = n0 // hw, (n1 - n0) // hw
            span = imgs * seg
            c_addr = c_t[ct % slots]
            ct += 1
            where = ImageTile(img0, imgs, m0, m1, seg, span, wp, (ho, wo))
            onto = mask is not None and mask.init("acc", c_addr, where)
            for k0, k1 in chunks(p.k, tile.kt):
                kk, sb = k1 - k0, b_t[ib % slots]
                ib += 1
                for v in range(kw):
                    ctx.b.load(p.b_buf, sb + v * kk * span * 4, x.addr_of(img0, k0, row0, cols[v]),
                               imgs, seg, planes=kk, dram_plane_stride=hp * wp,
                               dram_row_stride=c * hp * wp, buf_plane_stride=span,
                               buf_row_stride=seg)
                for u in range(kh):
                    sa = a_t[it % slots]
                    it += 1
                    la = a.load(ctx, list(range(u * kw, u * kw + kw)), m0, m1, k0, k1, p.a_buf,
                                sa, _idx_addr(p, sa, tile.mt, kw * kk, p.a_bytes))
                    ctx.b.gemm(m1 - m0, p.wide_columns(imgs), kw * kk, a_buf=p.a_buf,
                               a_addr=la.addr, a_stride=la.stride, a_dtype=la.dtype,
                               b_buf=p.b_buf, b_addr=sb + (rows[u] - row0) * wp * 4,
                               b_stride=span, c_addr=c_addr, c_stride=span, n=nm[0], m=nm[1],
                               idx_buf=p.a_buf, idx_addr=la.idx_addr,
                               idx_stride=la.idx_stride if p.sparse else None,
                               dataflow=tile.dataflow, trans_a=la.k_major and not a.sparse,
                               accumulate=onto or (k0, u) != (0, 0), interleave=tile.interleave,
                               stationary_a=tile.stationary_a)
            if bias is not None:             # the columns the GEMMs wrote
                bias(m0, m1, c_addr, p.wide_columns(imgs), span)
            if mask is not None:
                mask.apply("acc", c_addr, where)
            if stats is not None:
                stats.wide(c_addr, where)
            where.dmas(ctx, "store", out, "acc", c_addr)


@lowering("conv2d", pads=_conv_pads, derived=_derived)
def lower_conv2d(ctx: LowerCtx, node: Node) -> None:
    """FF conv: Y[Co, L] = sum over taps of W_tap[Co, Ci] X_tap[Ci, L] (W_ff N:M along Ci);
    a wide tile (:attr:`Tile.wide`) loads each input window once for all taps
    (:func:`_wide_gemm`), falling back to per-tap windows when the input's storage is
    padded wider than the conv. A bias (third input) is added to each C tile on the vector
    unit before it is stored (:func:`_channel_bias`), the batchnorm statistics after it."""
    if node.attrs["groups"] != 1:
        return lower_grouped_conv(ctx, node)
    p, tile = _problem(ctx, node)
    opa = _weight(ctx, node, node.inputs[1], True, 1)
    x = _act(ctx, node.inputs[0])
    offsets = _wide_offsets(node, x, p) if tile.wide else None
    y = node.outputs[0]
    if offsets is not None:
        ctx.fresh_arena()
        bias = _channel_bias(ctx, node.inputs[2]) if len(node.inputs) > 2 else None
        stats = _ChannelStats(ctx, y) if y.name in ctx.conv_stats else None
        _wide_gemm(ctx, node, p, tile, opa, x, offsets, bias, stats=stats)
        if stats is not None:
            stats.finish()
        return
    opb = _x_window(ctx, node, channels_are_k=True)
    ctx.fresh_arena()
    store = _store_nchw(ctx, y, y.shape[2:])
    stats = _ChannelStats(ctx, y, store) if y.name in ctx.conv_stats else None
    store = stats or store
    if len(node.inputs) > 2:
        store = _biased(ctx, _channel_bias(ctx, node.inputs[2]), store)
    _tiled_gemm(ctx, p, tile, opa, opb, store)
    if stats is not None:
        stats.finish()


def _channel_bias(ctx: LowerCtx, bias) -> Callable[[int, int, int, int, int], None]:
    """``add(m0, m1, c, cols, c_stride)``: the bias of channels m0:m1 (loaded once into the
    vector buffer) added to a C tile of ``cols`` columns in the accumulators."""
    addr = ctx.alloc("vec", bias.shape[0] * 4, "conv bias")
    ctx.b.load("vec", addr, ctx.dense(bias).region.addr, 1, bias.shape[0])

    def add(m0, m1, c, cols, c_stride):
        ctx.b.vec("add", m1 - m0, cols, s0_buf="acc", s0_addr=c, s0_stride=c_stride,
                  s1_addr=addr + m0 * 4, bcast="col", d_buf="acc", d_addr=c, d_stride=c_stride)
    return add


def _biased(ctx: LowerCtx, add: Callable, store: Callable) -> Callable:
    """A C-tile store that adds the channel bias (:func:`_channel_bias`) first."""
    def store_biased(t, m0, m1, n0, n1, c, c_stride):
        add(m0, m1, c, n1 - n0, c_stride)
        store(t, m0, m1, n0, n1, c, c_stride)
    return store_biased


class _ChannelStats:
    """C-tile store of a conv whose output a batchnorm normalises (:func:`~.norm.conv_stats_values`):
    before each tile is stored, its per-channel sum and sum of squares about k (the mean of
    the channel's first N tile, as the batchnorm's own statistics would take the first
    chunk's) accumulate on the vector unit; :meth:`finish` stores (sum, sumsq, k) into the
    scratch the batchnorm reads. A wide C tile (:func:`_wide_gemm`) gives them by
    :meth:`wide`, from its valid columns only."""

    def __init__(self, ctx: LowerCtx, y, store: Callable | None = None) -> None:
        self.ctx, self.y, self.store, self.c = ctx, y, store, y.shape[1]
        self.addr = ctx.alloc("vec", 3 * self.c * 4, "channel statistics")

    def wide(self, c: int, at: ImageTile) -> None:
        """Accumulate the statistics of a wide C tile: per image and output row, one run over
        its channels' ``Wo`` valid columns (the columns past Wo and the rows between images
        are the wide GEMM's dropped outputs)."""
        ho, wo = at.hw
        self._accumulate(at.m0, at.m1, at.img0 == 0, wo, at.plane_stride,
                         [c + (j * at.img_step + i * at.row_stride) * 4
                          for j in range(at.imgs) for i in range(ho)])

    def __call__(self, t, m0, m1, n0, n1, c, c_stride) -> None:
        self._accumulate(m0, m1, n0 == 0, n1 - n0, c_stride, [c])
        self.store(t, m0, m1, n0, n1, c, c_stride)

    def _accumulate(self, m0: int, m1: int, first: bool, cols: int, stride: int,
                    runs: list[int]) -> None:
        """Channels m0:m1's sum over ``runs`` (acc addresses of [m1 - m0, cols] blocks, rows
        ``stride`` apart), then their sum of squares about k; the channel's first tile
        (``first``) starts both sums and sets k to its mean."""
        b = self.ctx.b
        sx, q, k = (self.addr + (j * self.c + m0) * 4 for j in range(3))
        for r, s0 in enumerate(runs):
            b.vec("reduce_sum", m1 - m0, cols, s0_buf="acc", s0_addr=s0, s0_stride=stride,
                  d_addr=sx, axis=1, accumulate=not first or r > 0)
        if first:
            b.vec("mul_imm", 1, m1 - m0, s0_addr=sx, d_addr=k, imm=1.0 / (len(runs) * cols))
        for r, s0 in enumerate(runs):
            b.vec("reduce_sqdev", m1 - m0, cols, s0_buf="acc", s0_addr=s0, s0_stride=stride,
                  s1_addr=k, bcast="col", d_addr=q, axis=1, accumulate=not first or r > 0)

    def finish(self) -> None:
        """DMA the [3, C] statistics to the batchnorm's scratch."""
        dram = self.ctx.storage[stats_key(self.y.name)].region.addr
        self.ctx.b.store("vec", self.addr, dram, 1, 3 * self.c)


def phase_scatter(ctx: LowerCtx, node: Node, tile: Tile, phases, hm: int, wm: int, dm: int = 0,
                  mask: ReluMask | None = None) -> tuple[Callable, Callable]:
    """(scatter, finish) of a strided input gradient: each phase's C tile goes into an on-chip
    dX tile by ``avgpool_grad`` (1x1 window, strides sh, sw: the zero-dilation of the phase;
    the first phase writes the zeros, or accumulates onto the ``mask``'s first term), stored
    once per output tile at channel offset ``dm`` (masked first, with a ``mask``)."""
    sh, sw = node.attrs["stride"]
    dx = _act(ctx, node.outputs[0])
    full = [ctx.alloc("vec", sh * sw * tile.mt * tile.nt * 4, "dX tile") for _ in range(tile.slots)]
    count = [0]

    def where(m0, m1, n0, n1) -> ImageTile:
        imgs = (n1 - n0) // (hm * wm)
        return ImageTile(n0 // (hm * wm), imgs, m0 + dm, m1 + dm, sh * hm * sw * wm,
                         imgs * sh * hm * sw * wm, sw * wm, tuple(dx.shape[2:]))

    def scatter(gi, m0, m1, n0, n1, c, c_stride):
        rho, sig, _ = phases[gi]
        f = full[count[0] % tile.slots]
        per_ci = (n1 - n0) // wm
        if sh * per_ci > MAX_ROWS:
            raise ctx.fail(f"{per_ci} rows per channel in one input-gradient tile",
                           "use fewer images per tile")
        onto = gi > 0 or (mask is not None and mask.init("vec", f, where(m0, m1, n0, n1)))
        for c0, c1 in chunks(m1 - m0, MAX_ROWS // (sh * per_ci)):
            q = (c1 - c0) * per_ci
            ctx.b.vec("avgpool_grad", sh * q - rho, sw * wm - sig, s1_buf="acc",
                      s1_addr=c + c0 * c_stride * 4, s1_stride=wm,
                      d_addr=f + ((c0 * per_ci * sh + rho) * sw * wm + sig) * 4, d_stride=sw * wm,
                      window=(1, 1, sh, sw), accumulate=onto)

    def finish(m0, m1, n0, n1):
        f = full[count[0] % tile.slots]
        count[0] += 1
        at = where(m0, m1, n0, n1)
        if mask is not None:
            mask.apply("vec", f, at)
        at.dmas(ctx, "store", dx, "vec", f)
    return scatter, finish


def bp_operands(ctx: LowerCtx, node: Node) -> tuple:
    """(W^T operand, dY window operand, Hm, Wm, phases) of an input gradient (the windows of
    the flipped kernel, per output phase: :func:`bp_phases`); a strided one whose phase
    (0, 0) has no taps is refused."""
    dy, w = node.inputs[:2]
    opa = _weight(ctx, node, w, False, 0)
    s = _act(ctx, dy)
    hm, wm, phases = bp_phases(node)
    shift = {t: (di, dj) for _, _, taps in phases for t, di, dj in taps}
    opb = WindowOperand(lambda t: (s, s.pads[0] + shift[t][0], s.pads[1] + shift[t][1]),
                        (hm, wm), True)
    if tuple(node.attrs["stride"]) != (1, 1) and phases[0][:2] != (0, 0):
        raise ctx.fail(f"stride {node.attrs['stride']} with padding {node.attrs['padding']} "
                       "leaves input-gradient phase (0, 0) without taps",
                       "not supported by the SAT lowering yet")
    return opa, opb, hm, wm, phases


def wu_operands(ctx: LowerCtx, node: Node) -> tuple:
    """(dY window operand, X window operand, C-tile store into the tap-major dW) of a weight
    gradient: ``store(tap, m0, m1, n0, n1, c, c_stride)`` writes rows m0:m1 (output channels),
    columns n0:n1 (input channels of the weight) of one tap matrix."""
    dy = node.inputs[0]
    sdy = _act(ctx, dy)
    opb = _x_window(ctx, node, channels_are_k=False)
    opa = WindowOperand(lambda t: (sdy, sdy.pads[0], sdy.pads[1]), dy.shape[2:], False)
    out = ctx.st(node.outputs[0])
    if not isinstance(out, TapMajor):
        raise ctx.fail("the weight gradient is not stored tap-major", "check the memory plan")
    ci = out.shape[1]

    def store(t, m0, m1, n0, n1, c, c_stride):
        ctx.b.store("acc", c, out.tap_addr(t) + (m0 * ci + n0) * 4, m1 - m0, n1 - n0,
                    dram_row_stride=ci, buf_row_stride=c_stride)
    return opa, opb, store


@lowering("conv2d_grad_input", pads=_conv_pads)
def lower_conv2d_grad_input(ctx: LowerCtx, node: Node) -> None:
    """BP conv: per output phase (:func:`bp_phases`), dX_phase[Ci, L] = sum over its taps of
    W_tap^T[Ci, Co] dY_window[Co, L]; stride 1 is one phase, stored directly. A strided conv
    scatters each phase's C tile into an on-chip dX tile (``avgpool_grad`` with a 1x1
    window and strides (sh, sw): the zero-dilation of the phase), which is stored once."""
    if node.attrs["groups"] != 1:
        return lower_grouped_conv(ctx, node)
    p, tile = _problem(ctx, node)
    opa, opb, hm, wm, phases = bp_operands(ctx, node)
    dy = _act(ctx, node.inputs[0])
    offsets = _wide_offsets(node, dy, p) if tile.wide else None
    relu = node.attrs.get("relu_grad")
    if offsets is not None:
        mask = ReluMask(ctx, node, p, tile.mt, p.window[2], init_terms=False) \
            if relu else None                  # the gap columns of C: not loaded, not zeroed
        _wide_gemm(ctx, node, p, tile, opa, dy, offsets, mask=mask)
        if mask is not None:
            mask.finish()
        return
    if tuple(node.attrs["stride"]) == (1, 1):
        store = _store_nchw(ctx, node.outputs[0], (hm, wm))
        if not relu:
            _tiled_gemm(ctx, p, tile, opa, opb, store)
            return
        mask = ReluMask(ctx, node, p, tile.mt, wm, init_terms=True)

        def init(m0, m1, n0, n1, c, c_stride):
            mask.init("acc", c, _packed_images((hm, wm), m0, m1, n0, n1, c_stride))

        def masked_store(t, m0, m1, n0, n1, c, c_stride):
            mask.apply("acc", c, _packed_images((hm, wm), m0, m1, n0, n1, c_stride))
            store(t, m0, m1, n0, n1, c, c_stride)
        _tiled_gemm(ctx, p, tile, opa, opb, masked_store,
                    init_c=init if mask.terms else None)
        mask.finish()
        return
    sh, sw = node.attrs["stride"]
    whole = tuple(node.outputs[0].shape[2:]) == (sh * hm, sw * wm)    # dX fills the dX tile
    mask = ReluMask(ctx, node, p, tile.mt, sw * wm, init_terms=whole) if relu else None
    scatter, finish = phase_scatter(ctx, node, tile, phases, hm, wm, mask=mask)
    _tiled_gemm(ctx, p, tile, opa, opb, scatter, [[t for t, _, _ in taps] for _, _, taps in phases],
                finish)
    if mask is not None:
        mask.finish()


@lowering("conv2d_grad_weight", pads=_conv_pads, derived=_derived)
def lower_conv2d_grad_weight(ctx: LowerCtx, node: Node) -> None:
    """WU conv: per tap dW_tap[Co, Ci] = dY[Co, L] X_tap[Ci, L]^T, dense, accumulated over L tiles."""
    if node.attrs["groups"] != 1:
        return lower_grouped_conv(ctx, node)
    p, tile = _problem(ctx, node)
    opa, opb, store = wu_operands(ctx, node)
    ctx.fresh_arena()
    _tiled_gemm(ctx, p, tile, opa, opb, store)
