"""GEMM lowerings on the STCE: matmul and convolution (implicit GEMM) for FF, BP and WU.

A node's :class:`~satc.passes.tiling.GemmProblem` is ``C[M, N] (+)= A[M, K]
@ B[K, N]`` per kernel tap; the tile ``(mt, nt, kt, dataflow, slots)`` comes
from the tiling pass. Operands are loaded tile by tile by DMA:

* :class:`MatrixOperand` -- a stored matrix (an activation, or one tap
  matrix of a tap-major weight), read ``[outer, k]`` or ``[k, outer]`` and
  handed to the GEMM with the matching transpose flag;
* :class:`NMOperand` -- one tap of a compressed N:M weight: values and
  packed indices of whole byte-aligned groups (the GEMM reads them as is);
* :class:`WindowOperand` -- an NCHW activation seen as ``[C, N*Ho*Wo]``:
  each image's window for a kernel tap is one 3-D DMA (channels x rows x
  cols) from the zero-padded DRAM copy -- im2col by address arithmetic.

Conv FF: ``Y[Co, L] += W_tap[Co, Ci] X_tap[Ci, L]`` over taps; BP:
``dX[Ci, L] += W_tap^T[Ci, Co] dY_tap[Co, L]`` over taps with dY windows
of the flipped kernel (stride 1); WU: per tap ``dW_tap[Co, Ci] = dY[Co, L]
X_tap[Ci, L]^T`` accumulated over image tiles of L.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from satc.backends.sat.codegen.lowering import MAX_PLANES, LowerCtx, lowering
from satc.backends.sat.codegen.memory import Compressed, Dense, TapMajor
from satc.backends.sat.nmformat import groups, index_bits
from satc.ir.graph import Node
from satc.passes.tiling import GemmProblem, Tile, gemm_problem

ALIGN = 64


def _al(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass(frozen=True)
class Loaded:
    """Where a loaded operand tile sits and how the GEMM must read it."""

    addr: int
    stride: int
    k_major: bool              # stored [k, outer] (else [outer, k])
    dtype: str = "fp32"
    idx_addr: int = 0
    idx_stride: int = 0


@dataclass(frozen=True)
class MatrixOperand:
    """Matrix ``tap_addr(tap)`` with leading dimension ``ld``, stored [outer, k] if ``k_last``."""

    tap_addr: Callable[[int], int]
    ld: int
    k_last: bool
    sparse = False

    def load(self, ctx: LowerCtx, tap: int, o0: int, o1: int, k0: int, k1: int, buf: str,
             addr: int, idx_addr: int) -> Loaded:
        """DMA the [o0:o1, k0:k1] tile to ``buf:addr`` (packed)."""
        base = self.tap_addr(tap)
        if self.k_last:
            ctx.b.load(buf, addr, base + (o0 * self.ld + k0) * 4, o1 - o0, k1 - k0,
                       dram_row_stride=self.ld)
            return Loaded(addr, k1 - k0, False)
        ctx.b.load(buf, addr, base + (k0 * self.ld + o0) * 4, k1 - k0, o1 - o0,
                   dram_row_stride=self.ld)
        return Loaded(addr, o1 - o0, True)


@dataclass(frozen=True)
class NMOperand:
    """One tap of a compressed weight: compressed rows = outer, groups along k."""

    st: Compressed
    sparse = True

    def load(self, ctx: LowerCtx, tap: int, o0: int, o1: int, k0: int, k1: int, buf: str,
             addr: int, idx_addr: int) -> Loaded:
        """DMA the values and packed indices of rows o0:o1, groups of k0:k1."""
        s = self.st
        row = tap * s.outer + o0
        v0, v1 = k0 // s.m * s.n, groups(k1, s.m) * s.n
        b0 = k0 // s.m * s.n * index_bits(s.m) // 8
        esz = 2 if s.val_dtype == "fp16" else 4
        ctx.b.load(buf, addr, s.values.addr + (row * s.val_cols + v0) * esz, o1 - o0, v1 - v0,
                   dtype=s.val_dtype, dram_row_stride=s.val_cols)
        nb = -(-(v1 - v0) * index_bits(s.m) // 8)
        ctx.b.load(buf, idx_addr, s.indices.addr + row * s.idx_cols + b0, o1 - o0, nb,
                   dtype="u8", dram_row_stride=s.idx_cols)
        return Loaded(addr, v1 - v0, False, s.val_dtype, idx_addr, nb)


@dataclass(frozen=True)
class WindowOperand:
    """NCHW activation as [C, N*Ho*Wo]; tap ``t``'s window starts at ``origin(t)`` (padded coords)."""

    st: Dense
    out_hw: tuple[int, int]
    row_step: int
    origin: Callable[[int], tuple[int, int]]
    channels_are_k: bool
    sparse = False

    def load(self, ctx: LowerCtx, tap: int, o0: int, o1: int, k0: int, k1: int, buf: str,
             addr: int, idx_addr: int) -> Loaded:
        """DMA per image: channels x Ho rows x Wo cols of the tap's window."""
        (c0, c1), (l0, l1) = ((k0, k1), (o0, o1)) if self.channels_are_k else ((o0, o1), (k0, k1))
        ho, wo = self.out_hw
        hw = ho * wo
        oh, ow = self.origin(tap)
        _, wp = self.st.hw_padded
        hp = self.st.hw_padded[0]
        if c1 - c0 > MAX_PLANES:
            raise ctx.fail(f"{c1 - c0} channels in one DMA", "tile channels below 4096")
        for img in range(l0 // hw, l1 // hw):
            ctx.b.load(buf, addr + (img * hw - l0) * 4, self.st.addr_of(img, c0, oh, ow), ho, wo,
                       planes=c1 - c0, dram_plane_stride=hp * wp,
                       dram_row_stride=wp * self.row_step, buf_plane_stride=l1 - l0,
                       buf_row_stride=wo)
        return Loaded(addr, l1 - l0, self.channels_are_k)


def _tiled_gemm(ctx: LowerCtx, p: GemmProblem, tile: Tile, a, b,
                store_c: Callable[[int, int, int, int, int, int], None]) -> None:
    """Emit the tile loops: per (tap,) M tile, N tile: loads + accumulating GEMMs, then store."""
    slots = tile.slots
    a_t = [ctx.alloc(p.a_buf, p.a_tile_bytes(tile.mt, tile.kt), "A tile") for _ in range(slots)]
    b_t = [ctx.alloc(p.b_buf, p.b_tile_bytes(tile.kt, tile.nt), "B tile") for _ in range(slots)]
    c_t = [ctx.alloc("acc", tile.mt * tile.nt * 4, "C tile") for _ in range(slots)]
    nm = p.nm or (0, 0)

    def idx_of(base: int, outer: int, esz: int) -> int:
        """Packed indices follow the values of a compressed tile (as GemmProblem sizes it)."""
        return base + _al(outer * groups(tile.kt, nm[1]) * nm[0] * esz) if p.sparse else 0

    it = ct = 0
    outer_taps = [None] if p.taps_in_k else list(range(p.taps))
    for ot in outer_taps:
        for m0 in range(0, p.m, tile.mt):
            m1 = min(p.m, m0 + tile.mt)
            for n0 in range(0, p.n, tile.nt):
                n1 = min(p.n, n0 + tile.nt)
                c_addr = c_t[ct % slots]
                ct += 1
                taps = range(p.taps) if p.taps_in_k else [ot]
                first = True
                for tap in taps:
                    for k0 in range(0, p.k, tile.kt):
                        k1 = min(p.k, k0 + tile.kt)
                        sa, sb = a_t[it % slots], b_t[it % slots]
                        it += 1
                        la = a.load(ctx, tap, m0, m1, k0, k1, p.a_buf, sa,
                                    idx_of(sa, tile.mt, p.a_bytes))
                        lb = b.load(ctx, tap, n0, n1, k0, k1, p.b_buf, sb,
                                    idx_of(sb, tile.nt, p.b_bytes))
                        sparse = la if a.sparse else lb if b.sparse else None
                        ctx.b.gemm(m1 - m0, n1 - n0, k1 - k0, a_buf=p.a_buf, a_addr=la.addr,
                                   a_stride=la.stride, a_dtype=la.dtype, b_buf=p.b_buf,
                                   b_addr=lb.addr, b_stride=lb.stride, b_dtype=lb.dtype,
                                   c_addr=c_addr, c_stride=n1 - n0, n=nm[0], m=nm[1],
                                   sparse_b=b.sparse,
                                   idx_buf=p.b_buf if b.sparse else p.a_buf,
                                   idx_addr=sparse.idx_addr if sparse else 0,
                                   idx_stride=sparse.idx_stride if sparse else None,
                                   dataflow=tile.dataflow,
                                   trans_a=la.k_major and not a.sparse,
                                   trans_b=not lb.k_major and not b.sparse,
                                   accumulate=not first)
                        first = False
                store_c(ot or 0, m0, m1, n0, n1, c_addr)


def _problem(ctx: LowerCtx, node: Node) -> tuple[GemmProblem, Tile]:
    p = gemm_problem(node, ctx.cfg)
    if "tile" not in node.attrs:
        raise ctx.fail("GEMM node has no tile", "run the tile_gemms pass before code generation")
    return p, Tile.from_attr(node.attrs["tile"])


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
        return MatrixOperand(s.tap_addr, s.shape[1], outer_axis_k_last)
    d = ctx.dense(v)
    addr, _, cols = d.matrix()
    return MatrixOperand(lambda t, a=addr: a, cols, outer_axis_k_last)


def _store_matrix(ctx: LowerCtx, out) -> Callable:
    addr, _, cols = ctx.dense(out).matrix()

    def store(_t, m0, m1, n0, n1, c):
        ctx.b.store("acc", c, addr + (m0 * cols + n0) * 4, m1 - m0, n1 - n0, dram_row_stride=cols)
    return store


@lowering("matmul")
def lower_matmul(ctx: LowerCtx, node: Node) -> None:
    """2-D matmul with transposes; input 1 may be an N:M weight (FF: trans_b, BP: plain)."""
    p, tile = _problem(ctx, node)
    a, b = node.inputs
    ta, tb = node.attrs.get("trans_a", False), node.attrs.get("trans_b", False)
    aaddr, _, acols = ctx.dense(a).matrix()
    opa = MatrixOperand(lambda t: aaddr, acols, not ta)
    opb = _weight(ctx, node, b, tb, 1 if tb else 0)
    _tiled_gemm(ctx, p, tile, opa, opb, _store_matrix(ctx, node.outputs[0]))


def _act(ctx: LowerCtx, v) -> Dense:
    s = ctx.dense(v)
    if not isinstance(s, Dense) or len(s.shape) != 4:
        raise ctx.fail(f"%{v.name} is not an NCHW activation", "check the memory plan")
    return s


def _store_nchw(ctx: LowerCtx, out, hw: tuple[int, int]) -> Callable:
    s = _act(ctx, out)
    ho, wo = hw
    hp, wp = s.hw_padded

    def store(_t, m0, m1, n0, n1, c):
        for img in range(n0 // (ho * wo), n1 // (ho * wo)):
            ctx.b.store("acc", c + (img * ho * wo - n0) * 4, s.addr_of(img, m0, s.pads[0], s.pads[1]),
                        ho, wo, planes=m1 - m0, dram_plane_stride=hp * wp, dram_row_stride=wp,
                        buf_plane_stride=n1 - n0, buf_row_stride=wo)
    return store


def _conv_pads(node: Node) -> dict[int, tuple[int, int, int, int]]:
    pt, pl, pb, pr = node.attrs["padding"]
    if node.op == "conv2d":
        return {0: (pt, pl, pb, pr)}
    if node.op == "conv2d_grad_weight":
        return {1: (pt, pl, pb, pr)}
    kh, kw = node.inputs[1].shape[2:]
    return {0: (kh - 1 - pt, kw - 1 - pl, kh - 1 - pb, kw - 1 - pr)}


def _x_window(ctx: LowerCtx, node: Node, x, channels_are_k: bool) -> WindowOperand:
    """The conv input's window operand (FF B operand, WU B operand)."""
    s = _act(ctx, x)
    pt, pl = node.attrs["padding"][:2]
    kw = (node.attrs.get("weight_shape") or node.inputs[1].shape)[3]
    ho, wo = node.outputs[0].shape[2:] if node.op == "conv2d" else node.inputs[0].shape[2:]
    return WindowOperand(s, (ho, wo), node.attrs["stride"][0],
                         lambda t: (s.pads[0] - pt + t // kw, s.pads[1] - pl + t % kw),
                         channels_are_k)


@lowering("conv2d", pads=_conv_pads)
def lower_conv2d(ctx: LowerCtx, node: Node) -> None:
    """FF conv: Y[Co, L] = sum over taps of W_tap[Co, Ci] X_tap[Ci, L] (W_ff N:M along Ci)."""
    p, tile = _problem(ctx, node)
    x, w = node.inputs
    opa = _weight(ctx, node, w, True, 1)
    opb = _x_window(ctx, node, x, channels_are_k=True)
    _tiled_gemm(ctx, p, tile, opa, opb, _store_nchw(ctx, node.outputs[0], node.outputs[0].shape[2:]))


@lowering("conv2d_grad_input", pads=_conv_pads)
def lower_conv2d_grad_input(ctx: LowerCtx, node: Node) -> None:
    """BP conv: dX[Ci, L] = sum over taps of W_tap^T[Ci, Co] dY_flipped-tap[Co, L] (stride 1)."""
    p, tile = _problem(ctx, node)
    dy, w = node.inputs
    kh, kw = w.shape[2:]
    opa = _weight(ctx, node, w, False, 0)
    s = _act(ctx, dy)
    need = _conv_pads(node)[0]
    if min(need) < 0:
        raise ctx.fail(f"padding {node.attrs['padding']} larger than kernel-1",
                       "not supported by the SAT lowering yet")
    xs = node.attrs["input_shape"]
    opb = WindowOperand(s, (xs[2], xs[3]), 1,
                        lambda t: (s.pads[0] - need[0] + kh - 1 - t // kw,
                                   s.pads[1] - need[1] + kw - 1 - t % kw), True)
    _tiled_gemm(ctx, p, tile, opa, opb, _store_nchw(ctx, node.outputs[0], (xs[2], xs[3])))


@lowering("conv2d_grad_weight", pads=_conv_pads)
def lower_conv2d_grad_weight(ctx: LowerCtx, node: Node) -> None:
    """WU conv: per tap dW_tap[Co, Ci] = dY[Co, L] X_tap[Ci, L]^T, dense, accumulated over L tiles."""
    p, tile = _problem(ctx, node)
    dy, x = node.inputs
    sdy = _act(ctx, dy)
    opa = WindowOperand(sdy, dy.shape[2:], 1, lambda t: (sdy.pads[0], sdy.pads[1]), False)
    opb = _x_window(ctx, node, x, channels_are_k=False)
    out = ctx.st(node.outputs[0])
    if not isinstance(out, TapMajor):
        raise ctx.fail("the weight gradient is not stored tap-major", "check the memory plan")
    ci = out.shape[1]

    def store(t, m0, m1, n0, n1, c):
        ctx.b.store("acc", c, out.tap_addr(t) + (m0 * ci + n0) * 4, m1 - m0, n1 - n0,
                    dram_row_stride=ci)
    _tiled_gemm(ctx, p, tile, opa, opb, store)
