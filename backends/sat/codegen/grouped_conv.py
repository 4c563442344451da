"""Grouped and depthwise convolution (``groups > 1``) for FF, BP and WU.

A conv with ``g`` groups is ``g`` independent convs: group ``j`` maps input channels
``[j*Ci/g, (j+1)*Ci/g)`` to output channels ``[j*Co/g, (j+1)*Co/g)`` with the weight rows
of the same output channels. Each group runs as its own implicit-GEMM conv through
:mod:`.conv`'s machinery (:func:`~.conv._tiled_gemm`, the window / matrix operands, the
stride phases of :func:`~.conv._x_window`, :func:`~.conv_geometry.bp_phases`); only
channel offsets differ:

* the weight is tap-major ``[kh*kw, Co, Ci/g]`` (the plan's :class:`TapMajor` of the
  ``[Co, Ci/g, kh, kw]`` weight): group ``j``'s tap matrix is rows ``j*Co/g ..`` of it;
* activations (x, y, dY, dX) are NCHW: group ``j`` is a channel range of the storage.

Per group: FF ``Y_j[Co/g, L] = W_j[Co/g, (tap, Ci/g)] X_j``; BP ``dX_j[Ci/g, L] = W_j^T dY_j``
per output phase; WU ``dW_j[Co/g, (tap, Ci/g)] = dY_j X_j^T``. All groups share one tile,
chosen by :func:`~.tiling.choose_tile` for the per-group problem (the global tile plan has
no entry for grouped convs: ``gemm_problem`` returns None for them). A strided depthwise
conv (``Ci/g == Co/g == 1``) takes the same path with ``K = kh*kw`` per GEMM (taps stacked
along K); a stride-1 depthwise conv runs on the vector engine instead (:func:`on_vector`):
FF and BP as per-channel ``col``-broadcast multiply-accumulates of shifted windows, WU as
``reduce_dot`` of each shifted window with dY.
Under BDWP (``ir/nm.py``'s ``grouped_conv_dense_reason``) a grouped conv reads its
compressed weights per group: ``W.ff`` (N:M along Ci/g, one compressed row per output
channel: group ``j`` is rows ``j*Co/g ..``) and ``W.bp`` (N:M along Co: group ``j`` is
the values and packed indices from group ``j*Co/g / M`` of each row on, which start on
a byte because the pass requires Co/g to be a multiple of ``group_quantum``: 32 for
2:8); depthwise convs stay dense. Dilation other than 1 is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import satc.backends.sat.codegen.conv as conv   # conv.py imports this module: attributes at call time
from satc.backends.sat.codegen.conv_geometry import bp_phases
from satc.backends.sat.codegen.lowering import MAX_PLANES, MAX_ROWS, LowerCtx, chunks
from satc.backends.sat.codegen.memory import TapMajor
from satc.backends.sat.codegen.tiling import GemmProblem, Tile, choose_tile, nm_k_quantum
from satc.backends.sat.config import HardwareConfig
from satc.backends.sat.isa import DTYPE_BYTES
from satc.ir.graph import Node


@dataclass(frozen=True)
class _Shifted:
    """An operand seen ``do`` rows (outer axis) and ``dk`` columns (K axis) further on: the
    channel range of one conv group."""

    inner: Any
    do: int = 0
    dk: int = 0

    @property
    def sparse(self) -> bool:
        """Whether the wrapped operand is N:M compressed."""
        return self.inner.sparse

    def load(self, ctx: LowerCtx, taps: list[int], o0: int, o1: int, k0: int, k1: int, buf: str,
             addr: int, idx_addr: int):
        """Load the wrapped operand's tile at the shifted coordinates."""
        return self.inner.load(ctx, taps, o0 + self.do, o1 + self.do, k0 + self.dk,
                               k1 + self.dk, buf, addr, idx_addr)


def _shift_store(store: Callable, dm: int) -> Callable:
    """A C-tile store whose M rows (output channels) start ``dm`` channels further on."""
    def shifted(t, m0, m1, n0, n1, c, c_stride):
        store(t, m0 + dm, m1 + dm, n0, n1, c, c_stride)
    return shifted


def _channels(node: Node) -> tuple[int, int, int, int, int]:
    """(groups, Ci/g, Co/g, kh, kw) of a grouped conv node."""
    g = node.attrs["groups"]
    co, cig, kh, kw = (node.attrs.get("weight_shape") or node.inputs[1].shape)
    return g, cig, co // g, kh, kw


def group_problem(node: Node, cfg: HardwareConfig) -> GemmProblem:
    """The GEMM of one conv group of ``node`` (the per-group form of ``gemm_problem``); an
    N:M weight (``attrs['nm']``) is the compressed A operand of FF and BP."""
    _, cig, cog, kh, kw = _channels(node)
    taps = kh * kw
    nm = node.attrs.get("nm")
    sparse = dict(sparse="a", nm=(nm[0], nm[1]), k_quantum=nm_k_quantum(nm[0], nm[1]),
                  a_bytes=DTYPE_BYTES["fp16"] if cfg.mixed_precision else 4) if nm else {}
    if node.op == "conv2d":
        x, y = node.inputs[0], node.outputs[0]
        hw = y.shape[2] * y.shape[3]
        return GemmProblem(cog, x.shape[0] * hw, cig, taps=taps, n_quantum=hw, a_buf="wgt",
                           b_buf="act", fold="k", row=y.shape[3], **sparse)
    if node.op == "conv2d_grad_input":
        xs = node.attrs["input_shape"]
        sh, sw = node.attrs["stride"]
        hw = -(-xs[2] // sh) * -(-xs[3] // sw)
        return GemmProblem(cig, xs[0] * hw, cog, taps=taps, n_quantum=hw, a_buf="wgt",
                           b_buf="act", scatter=sh * sw if sh * sw > 1 else 0, fold="k",
                           row=-(-xs[3] // sw),
                           tap_sets=tuple(len(t) for _, _, t in bp_phases(node)[2]), **sparse)
    dy = node.inputs[0]
    hw = dy.shape[2] * dy.shape[3]
    return GemmProblem(cog, cig, dy.shape[0] * hw, taps=taps, taps_in_k=False, k_quantum=hw,
                       a_buf="act", b_buf="wgt", fold="n", row=dy.shape[3])


def lower_grouped_conv(ctx: LowerCtx, node: Node) -> None:
    """A conv2d / conv2d_grad_input / conv2d_grad_weight node with ``groups > 1``: one
    implicit-GEMM conv per group on the STCE (see the module docstring)."""
    if tuple(node.attrs["dilation"]) != (1, 1):
        raise ctx.fail(f"dilated convolution (dilation={list(node.attrs['dilation'])}) is not "
                       "supported by the SAT lowering yet", "use dilation 1")
    if on_vector(node):
        return (_depthwise_wu_vector if node.op == "conv2d_grad_weight" else
                _depthwise_vector)(ctx, node)
    p = group_problem(node, ctx.cfg)
    tile = choose_tile(node, p, ctx.cfg, ctx.interleave)
    {"conv2d": _ff, "conv2d_grad_input": _bp, "conv2d_grad_weight": _wu}[node.op](ctx, node, p, tile)


def on_vector(node: Node) -> bool:
    """The engine rule: FF, BP and WU of a stride-1 depthwise conv (one input and one output
    channel per group) run on the vector engine (:func:`_depthwise_vector`,
    :func:`_depthwise_wu_vector`); strided depthwise convs and every other grouped conv
    run on the STCE, one GEMM loop per group."""
    _, cig, cog, _, _ = _channels(node)
    return cig == 1 and cog == 1 and tuple(node.attrs["stride"]) == (1, 1)


def _vector_taps(ctx: LowerCtx, node: Node):
    """(source value, output value, [(tap, row, col)]): the stride-1 correlation a depthwise
    FF / BP is, each tap's window origin in the source's padded coordinates. FF correlates
    x with the kernel; BP correlates the padded dY with the taps' shifts (``bp_phases``)."""
    src = node.inputs[0]
    s = conv._act(ctx, src)
    kw = node.inputs[1].shape[3]
    pt, pl = node.attrs["padding"][:2]
    if node.op == "conv2d":
        taps = [(t, s.pads[0] - pt + t // kw, s.pads[1] - pl + t % kw)
                for t in range(node.inputs[1].shape[2] * kw)]
    else:
        (_, _, phase), = bp_phases(node)[2]
        taps = [(t, s.pads[0] + di, s.pads[1] + dj) for t, di, dj in phase]
    return src, node.outputs[0], taps


def _depthwise_vector(ctx: LowerCtx, node: Node) -> None:
    """A stride-1 depthwise correlation on the vector engine (FF, or BP's flipped-kernel
    correlation of the padded dY). Per image and chunk of P channels the padded source
    planes [P, Hp, Wp] are loaded; in them a tap's window over the *wide* output (rows
    i < Ho of Wp columns) is one contiguous run per plane, so each tap is one ``mul``
    (accumulating after the first) of P runs of (Ho-1)*Wp + Wo elements by the tap's
    per-channel weights (``col`` broadcast of row t of the [taps, C] weight); the store
    drops the columns j >= Wo."""
    x, y, taps = _vector_taps(ctx, node)
    s, o = conv._act(ctx, x), conv._act(ctx, y)
    w = ctx.st(node.inputs[1])
    if not isinstance(w, TapMajor):
        raise ctx.fail("the depthwise weight is not stored tap-major", "check the memory plan")
    n, c = y.shape[:2]
    ntaps = w.taps
    ho, wo = y.shape[2:]
    hp, wp = s.hw_padded
    run = (ho - 1) * wp + wo
    if max(hp * wp, run) > MAX_ROWS:
        raise ctx.fail(f"a {hp}x{wp} padded plane exceeds the vector unit's 16-bit strides",
                       "use smaller images")
    ctx.fresh_arena()
    wt = ctx.alloc("vec", ntaps * c * 4, "depthwise weights")
    ctx.b.load("vec", wt, w.tap_addr(0), ntaps, c)
    per_plane = (hp * wp + ho * wp) * 4
    free = ctx.arena.free_bytes("vec")
    step, slots = min(c, MAX_PLANES, (free - 256) // (2 * per_plane)), 2
    if step < 1:
        step, slots = min(c, MAX_PLANES, (free - 128) // per_plane), 1
    if step < 1:
        raise ctx.fail(f"one {hp}x{wp} depthwise plane does not fit the vec buffer",
                       "raise vec_buffer_bytes")
    tiles = [(ctx.alloc("vec", step * hp * wp * 4, "depthwise source"),
              ctx.alloc("vec", step * ho * wp * 4, "depthwise output")) for _ in range(slots)]
    ohp, owp = o.hw_padded
    i = 0
    for img in range(n):
        for c0, c1 in chunks(c, step):
            xt, yt = tiles[i % slots]
            i += 1
            ctx.b.load("vec", xt, s.addr_of(img, c0, 0, 0), hp, wp, planes=c1 - c0,
                       dram_plane_stride=hp * wp, dram_row_stride=wp, buf_plane_stride=hp * wp)
            for j, (t, oh, ow) in enumerate(taps):
                ctx.b.vec("mul", c1 - c0, run, s0_addr=xt + (oh * wp + ow) * 4,
                          s0_stride=hp * wp, s1_addr=wt + (t * c + c0) * 4, bcast="col",
                          d_addr=yt, d_stride=ho * wp, accumulate=j > 0)
            ctx.b.store("vec", yt, o.addr_of(img, c0, o.pads[0], o.pads[1]), ho, wo,
                        planes=c1 - c0, dram_plane_stride=ohp * owp, dram_row_stride=owp,
                        buf_plane_stride=ho * wp, buf_row_stride=wp)


def _depthwise_wu_vector(ctx: LowerCtx, node: Node) -> None:
    """Stride-1 depthwise WU on the vector engine: dW[c, tap] = sum over (n, i, j) of
    dY[n, c, i, j] x_pad[n, c, i + u, j + v]. Per image and channel chunk, x's padded planes
    and dY laid out *wide* (rows of Wp, the columns j >= Wo zero, from a zero constant) are
    loaded; each tap is one ``reduce_dot`` of the tap's contiguous window run with the wide
    dY (the zero columns cancel the products outside the window), accumulated over images
    into a [taps, C] tile that is stored once."""
    dy, x = node.inputs
    sd, s = conv._act(ctx, dy), conv._act(ctx, x)
    out = ctx.st(node.outputs[0])
    if not isinstance(out, TapMajor):
        raise ctx.fail("the weight gradient is not stored tap-major", "check the memory plan")
    n, c = x.shape[:2]
    kh, kw = out.shape[2:]
    ho, wo = dy.shape[2:]
    hp, wp = s.hw_padded
    dhp, dwp = sd.hw_padded
    pt, pl = node.attrs["padding"][:2]
    run = (ho - 1) * wp + wo
    if max(hp * wp, run) > MAX_ROWS:
        raise ctx.fail(f"a {hp}x{wp} padded plane exceeds the vector unit's 16-bit strides",
                       "use smaller images")
    ctx.fresh_arena()
    dw = ctx.alloc("vec", kh * kw * c * 4, "depthwise weight gradient")
    zeros = ctx.zeros(wp)
    per_plane = (hp * wp + ho * wp) * 4
    step = min(c, MAX_PLANES, (ctx.arena.free_bytes("vec") - 128) // per_plane)
    if step < 1:
        raise ctx.fail(f"one {hp}x{wp} depthwise plane does not fit the vec buffer",
                       "raise vec_buffer_bytes")
    xt = ctx.alloc("vec", step * hp * wp * 4, "depthwise input")
    dyt = ctx.alloc("vec", step * ho * wp * 4, "wide dY")
    for img in range(n):
        for c0, c1 in chunks(c, step):
            ctx.b.load("vec", xt, s.addr_of(img, c0, 0, 0), hp, wp, planes=c1 - c0,
                       dram_plane_stride=hp * wp, dram_row_stride=wp, buf_plane_stride=hp * wp)
            ctx.b.load("vec", dyt, sd.addr_of(img, c0, sd.pads[0], sd.pads[1]), ho, wo,
                       planes=c1 - c0, dram_plane_stride=dhp * dwp, dram_row_stride=dwp,
                       buf_plane_stride=ho * wp, buf_row_stride=wp)
            if wp > wo:
                ctx.b.load("vec", dyt + wo * 4, zeros.addr, ho, wp - wo, planes=c1 - c0,
                           dram_plane_stride=0, dram_row_stride=0, buf_plane_stride=ho * wp,
                           buf_row_stride=wp)
            for t in range(kh * kw):
                oh, ow = s.pads[0] - pt + t // kw, s.pads[1] - pl + t % kw
                ctx.b.vec("reduce_dot", c1 - c0, run, s0_addr=xt + (oh * wp + ow) * 4,
                          s0_stride=hp * wp, s1_addr=dyt, s1_stride=ho * wp,
                          d_addr=dw + (t * c + c0) * 4, d_stride=1, accumulate=img > 0)
    ctx.b.store("vec", dw, out.tap_addr(0), kh * kw, c)


def _ff(ctx: LowerCtx, node: Node, p: GemmProblem, tile: Tile) -> None:
    """Per group: Y_j = W_j X_j (B: the group's channels of the input windows)."""
    g, cig, cog, _, _ = _channels(node)
    opa = conv._weight(ctx, node, node.inputs[1], True, 1)
    opb = conv._x_window(ctx, node, channels_are_k=True)
    store = conv._store_nchw(ctx, node.outputs[0], node.outputs[0].shape[2:])
    for j in range(g):
        ctx.fresh_arena()
        conv._tiled_gemm(ctx, p, tile, _Shifted(opa, do=j * cog), _Shifted(opb, dk=j * cig),
                    _shift_store(store, j * cog))


def _wu(ctx: LowerCtx, node: Node, p: GemmProblem, tile: Tile) -> None:
    """Per group: dW_j[Co/g, (tap, Ci/g)] = dY_j X_j^T into rows j*Co/g.. of each tap matrix."""
    g, cig, cog, _, _ = _channels(node)
    opa, opb, store = conv.wu_operands(ctx, node)
    for j in range(g):
        ctx.fresh_arena()
        conv._tiled_gemm(ctx, p, tile, _Shifted(opa, do=j * cog), _Shifted(opb, do=j * cig),
                    _shift_store(store, j * cog))


def _bp(ctx: LowerCtx, node: Node, p: GemmProblem, tile: Tile) -> None:
    """Per group and output phase: dX_j = W_j^T dY_j (as conv.py's input gradient, with the
    group's channel offsets); a strided conv scatters the phases into an on-chip dX tile."""
    g, cig, cog, _, _ = _channels(node)
    opa, opb, hm, wm, phases = conv.bp_operands(ctx, node)
    if opa.sparse and cog % p.k_quantum:
        raise ctx.fail(f"N:M weight with Co/g = {cog}: a conv group's packed indices do not "
                       f"start on a byte", f"use Co/g a multiple of {p.k_quantum} or keep the "
                       "layer dense (exclude it)")
    if tuple(node.attrs["stride"]) == (1, 1):
        store = conv._store_nchw(ctx, node.outputs[0], (hm, wm))
        for j in range(g):
            ctx.fresh_arena()
            conv._tiled_gemm(ctx, p, tile, _Shifted(opa, dk=j * cog), _Shifted(opb, dk=j * cog),
                        _shift_store(store, j * cig))
        return
    tap_sets = [[t for t, _, _ in taps] for _, _, taps in phases]
    for j in range(g):
        ctx.fresh_arena()
        scatter, finish = conv.phase_scatter(ctx, node, tile, phases, hm, wm, j * cig)
        conv._tiled_gemm(ctx, p, tile, _Shifted(opa, dk=j * cog), _Shifted(opb, dk=j * cog), scatter,
                    tap_sets, finish)
