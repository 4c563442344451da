"""Pooling on the vector unit: max-pool (any window, stride, padding) and global average pool.

Max-pool. The vector unit's ``maxpool`` windows run along the rows of one
tile, so a window must never straddle two planes. Each chunk of planes is
loaded as a *row-group* tile ``X[P, G, kh, Wt]`` whose row ``(p, i, u)`` is
padded input row ``sh*i + u`` of plane p: the DMA picks every sh-th row
(row stride), one load per kernel row u. Windows are then the
non-overlapping ``kh x kw`` blocks of X with column stride sw, so a single
``vec maxpool`` (window kh x kw, strides kh, sw) pools P planes at once,
for overlapping and padded windows alike. Padding is -inf (a DMA with
DRAM strides 0 from a one-row constant, once per buffer slot), as in the
reference kernel.

The gradient routes dy to the first maximum of each window
(``vec maxpool_grad`` over the same X, columns already summed), giving
``T[P, G, kh, Wt]``; rows u >= sh of group i land on input row
``sh*(i+1) + u - sh``, so they are folded with vector ``copy`` (u < sh) and
``add`` (u >= sh) over strided row sets into ``F[P, sh*G, Wt]``: with G
groups per plane (``G >= Ho + ceil(kh/sh) - 1``; dy is zero in the extra
groups) every row set is one 2-D instruction across all P planes.

Global average pool: a ``[N*C, H*W]`` tile, ``reduce_sum`` along rows and
a scale by 1/(H*W); its gradient multiplies a ones tile by the per-plane
``dy/(H*W)`` (``col`` broadcast).
"""

from __future__ import annotations

import numpy as np
from satc.backends.sat.codegen.lowering import (
    MAX_PLANES,
    MAX_ROWS,
    LowerCtx,
    chunks,
    lowering,
)
from satc.backends.sat.codegen.memory import Dense
from satc.backends.sat.codegen.partition import ALIGN, align
from satc.ir.graph import Node


class _Geometry:
    """Row-group layout of one max-pool node (see the module docstring)."""

    def __init__(self, ctx: LowerCtx, node: Node, grad: bool) -> None:
        a = node.attrs
        self.kh, self.kw = a["kernel"]
        self.sh, self.sw = a["stride"]
        self.pt, self.pl = a["padding"][:2]
        x = node.inputs[0] if node.op == "maxpool2d" else node.inputs[1]
        y_hw = (node.outputs[0] if node.op == "maxpool2d" else node.inputs[0]).shape[2:]
        self.n, self.c, self.h, self.w = x.shape
        self.ho, self.wo = y_hw
        if tuple(a.get("dilation", (1, 1))) != (1, 1) or self.sh > self.kh:
            raise ctx.fail(f"max-pool kernel {a['kernel']} stride {a['stride']} dilation "
                           f"{a.get('dilation')}", "the SAT lowering needs dilation 1 and a "
                           "stride no larger than the kernel along H")
        groups = self.ho
        if grad:
            groups = max(self.ho + -(-self.kh // self.sh) - 1, -(-(self.pt + self.h) // self.sh))
        self.g = groups
        self.wt = max(self.sw * (self.wo - 1) + self.kw, self.pl + self.w)

    def rows(self, u: int) -> tuple[int, int]:
        """Groups [i0, i1) whose row u is a real input row (others are -inf padding)."""
        i0 = max(0, -(-(self.pt - u) // self.sh))
        i1 = min(self.ho, (self.h - 1 + self.pt - u) // self.sh + 1)
        return i0, max(i0, i1)

    def fill(self, ctx: LowerCtx, xt: int, planes: int) -> None:
        """-inf in every padding position of an X tile (columns and rows), once per slot."""
        ninf = ctx.const(f"neginf/{self.wt}", np.full(self.wt, -np.inf, np.float32))
        kh, wt, g = self.kh, self.wt, self.g
        pstride = g * kh * wt
        right = wt - self.pl - self.w
        for col, cols in ((0, self.pl), (self.pl + self.w, right)):
            if cols > 0:
                ctx.b.load("vec", xt + col * 4, ninf.addr, g * kh, cols, planes=planes,
                           dram_plane_stride=0, dram_row_stride=0, buf_plane_stride=pstride,
                           buf_row_stride=wt)
        for u in range(kh):
            i0, i1 = self.rows(u)
            for r0, r1 in ((0, i0), (i1, g)):
                if r1 > r0:
                    ctx.b.load("vec", xt + ((r0 * kh + u) * wt + self.pl) * 4, ninf.addr,
                               r1 - r0, self.w, planes=planes, dram_plane_stride=0,
                               dram_row_stride=0, buf_plane_stride=pstride,
                               buf_row_stride=kh * wt)

    def load(self, ctx: LowerCtx, st: Dense, xt: int, p0: int, p1: int) -> None:
        """The real rows of planes p0..p1 into an X tile."""
        hp, wp = st.hw_padded
        kh, wt = self.kh, self.wt
        for u in range(kh):
            i0, i1 = self.rows(u)
            if i1 > i0:
                h0 = self.sh * i0 + u - self.pt
                ctx.b.load("vec", xt + ((i0 * kh + u) * wt + self.pl) * 4,
                           st.region.addr + ((p0 * hp + st.pads[0] + h0) * wp + st.pads[1]) * 4,
                           i1 - i0, self.w, planes=p1 - p0, dram_plane_stride=hp * wp,
                           dram_row_stride=self.sh * wp, buf_plane_stride=self.g * kh * wt,
                           buf_row_stride=kh * wt)

    def planes_per_chunk(self, ctx: LowerCtx, per_plane: int, rows_per_plane: int) -> tuple[int, int]:
        """(planes per chunk, slots): two slots when they fit and one chunk is not enough."""
        total = self.n * self.c
        limit = min(total, MAX_PLANES, MAX_ROWS // rows_per_plane)
        free = ctx.arena.free_bytes("vec") - 8 * ALIGN - 2 * self.wt * 4
        one = min(limit, free // per_plane)
        if one < 1:
            raise ctx.fail(f"one plane of the max-pool tiles needs {per_plane} bytes of the vec "
                           f"buffer, {free} are free", "raise vec_buffer_bytes")
        if one >= total:
            return total, 1
        return max(1, min(limit, free // (2 * per_plane))), 2


def _plane_addr(st: Dense, p: int) -> int:
    hp, wp = st.hw_padded
    return st.region.addr + ((p * hp + st.pads[0]) * wp + st.pads[1]) * 4


@lowering("maxpool2d")
def lower_maxpool(ctx: LowerCtx, node: Node) -> None:
    """Max-pool: one ``vec maxpool`` per chunk of planes over the row-group tile."""
    geo = _Geometry(ctx, node, grad=False)
    x, y = ctx.dense(node.inputs[0]), ctx.dense(node.outputs[0])
    gk = geo.g * geo.kh
    per_plane = gk * geo.wt * 4 + geo.ho * geo.wo * 4
    step, slots = geo.planes_per_chunk(ctx, per_plane, gk)
    tiles = [(ctx.alloc("vec", align(step * gk * geo.wt * 4), "pool rows"),
              ctx.alloc("vec", align(step * geo.ho * geo.wo * 4), "pool output"))
             for _ in range(slots)]
    yv = y.view3()
    for xt, _ in tiles:
        geo.fill(ctx, xt, step)
    for i, (p0, p1) in enumerate(chunks(geo.n * geo.c, step)):
        xt, yt = tiles[i % slots]
        geo.load(ctx, x, xt, p0, p1)
        ctx.b.vec("maxpool", (p1 - p0) * gk, geo.wt, s0_addr=xt, d_addr=yt,
                  window=(geo.kh, geo.kw, geo.kh, geo.sw))
        ctx.dma3("store", yv, p0, p1, "vec", yt)


@lowering("maxpool2d_grad")
def lower_maxpool_grad(ctx: LowerCtx, node: Node) -> None:
    """dx: ``vec maxpool_grad`` on the row-group tile, then the kernel rows folded onto input
    rows by strided ``copy`` / ``add`` and one store per chunk."""
    geo = _Geometry(ctx, node, grad=True)
    dy, x = node.inputs
    sdy, sx, sdx = ctx.dense(dy), ctx.dense(x), ctx.dense(node.outputs[0])
    kh, sh, wt, g, wo = geo.kh, geo.sh, geo.wt, geo.g, geo.wo
    gk = g * kh
    per_plane = 2 * gk * wt * 4 + g * wo * 4 + sh * g * wt * 4
    step, slots = geo.planes_per_chunk(ctx, per_plane, max(gk, sh * g))
    tiles = [(ctx.alloc("vec", align(step * gk * wt * 4), "pool rows"),
              ctx.alloc("vec", align(step * g * wo * 4), "pooled gradient"),
              ctx.alloc("vec", align(step * gk * wt * 4), "window gradient"),
              ctx.alloc("vec", align(step * sh * g * wt * 4), "input gradient"))
             for _ in range(slots)]
    zeros = ctx.zeros(wo)
    for xt, dt, _, _ in tiles:
        geo.fill(ctx, xt, step)
        if g > geo.ho:
            ctx.b.load("vec", dt + geo.ho * wo * 4, zeros.addr, g - geo.ho, wo, planes=step,
                       dram_plane_stride=0, dram_row_stride=0, buf_plane_stride=g * wo,
                       buf_row_stride=wo)
    hy, wy = sdy.hw_padded
    hx, wx = sdx.hw_padded
    for i, (p0, p1) in enumerate(chunks(geo.n * geo.c, step)):
        xt, dt, tt, ft = tiles[i % slots]
        q = (p1 - p0) * g
        geo.load(ctx, sx, xt, p0, p1)
        ctx.b.load("vec", dt, _plane_addr(sdy, p0), geo.ho, wo, planes=p1 - p0,
                   dram_plane_stride=hy * wy, dram_row_stride=wy, buf_plane_stride=g * wo)
        ctx.b.vec("maxpool_grad", q * kh, wt, s0_addr=xt, s1_addr=dt, d_addr=tt,
                  window=(kh, geo.kw, kh, geo.sw))
        for u in range(kh):
            rows = q - u // sh
            if u < sh:
                ctx.b.vec("copy", rows, wt, s0_addr=tt + u * wt * 4, s0_stride=kh * wt,
                          d_addr=ft + u * wt * 4, d_stride=sh * wt)
            else:
                ctx.b.vec("add", rows, wt, s0_addr=ft + u * wt * 4, s0_stride=sh * wt,
                          s1_addr=tt + u * wt * 4, s1_stride=kh * wt,
                          d_addr=ft + u * wt * 4, d_stride=sh * wt)
        ctx.b.store("vec", ft + (geo.pt * wt + geo.pl) * 4, _plane_addr(sdx, p0), geo.h, geo.w,
                    planes=p1 - p0, dram_plane_stride=hx * wx, dram_row_stride=wx,
                    buf_plane_stride=sh * g * wt, buf_row_stride=wt)


@lowering("global_avgpool")
def lower_global_avgpool(ctx: LowerCtx, node: Node) -> None:
    """Mean over H, W: ``reduce_sum`` of [planes, H*W] tiles, then ``mul_imm`` 1/(H*W)."""
    vx, vy = ctx.dense(node.inputs[0]).view3(), ctx.dense(node.outputs[0]).view3()
    hw = vx.rows * vx.cols
    step, slots = ctx.chunking(vx, 2)
    tiles = [(ctx.alloc("vec", align(step * hw * 4), "pool input"),
              ctx.alloc("vec", align(step * 4), "pool output")) for _ in range(slots)]
    for i, (p0, p1) in enumerate(chunks(vx.planes, step)):
        xt, yt = tiles[i % slots]
        ctx.dma3("load", vx, p0, p1, "vec", xt)
        ctx.b.vec("reduce_sum", p1 - p0, hw, s0_addr=xt, d_addr=yt, axis=1)
        ctx.b.vec("mul_imm", 1, p1 - p0, s0_addr=yt, d_addr=yt, imm=1.0 / hw)
        ctx.dma3("store", vy, p0, p1, "vec", yt)


@lowering("global_avgpool_grad")
def lower_global_avgpool_grad(ctx: LowerCtx, node: Node) -> None:
    """dx = dy / (H*W) spread over each plane: a ones tile times the scaled dy (col broadcast)."""
    vdy, vdx = ctx.dense(node.inputs[0]).view3(), ctx.dense(node.outputs[0]).view3()
    hw = vdx.rows * vdx.cols
    step, slots = ctx.chunking(vdx, 3)
    ones = ctx.const(f"ones/{hw}", np.ones(hw, np.float32))
    tiles = [(ctx.alloc("vec", align(step * hw * 4), "ones"),
              ctx.alloc("vec", align(step * 4), "pooled gradient"),
              ctx.alloc("vec", align(step * hw * 4), "input gradient")) for _ in range(slots)]
    for ot, _, _ in tiles:
        ctx.b.load("vec", ot, ones.addr, step, hw, dram_row_stride=0)
    for i, (p0, p1) in enumerate(chunks(vdx.planes, step)):
        ot, dt, xt = tiles[i % slots]
        ctx.dma3("load", vdy, p0, p1, "vec", dt)
        ctx.b.vec("mul_imm", 1, p1 - p0, s0_addr=dt, d_addr=dt, imm=1.0 / hw)
        ctx.b.vec("mul", p1 - p0, hw, s0_addr=ot, s1_addr=dt, d_addr=xt, bcast="col")
        ctx.dma3("store", vdx, p0, p1, "vec", xt)
