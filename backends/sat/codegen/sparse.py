"""Lowerings of the sparse op family (``ir/ops/sparse.py``): SORE pre-generation and SR-STE.

* ``nm_prune`` -- the SORE stage: each tap matrix of the freshly updated
  dense weight is pruned and compressed by SORE straight into the
  compressed storage of ``<w>.ff`` (groups along Ci) or ``<w>.bp`` (along
  Co), which the next step's sparse GEMMs read; a dense-stored output (``ff``
  mode's ``<w>.ff_dense`` for the dense BP GEMM) is compressed and expanded
  back to dense rows by an identity N:M GEMM, as SR-STE does. ``bdwp-nested``'s
  ``<w>.bp`` prunes the compressed ``<w>.ff``: the identity GEMM expands
  ``<w>.ff`` into a DRAM scratch, and SORE prunes that along Co.
* ``srste_grad`` -- ``dw + lam * (w - prune(w))``: SORE compresses w (the
  mask is recomputed from w, as the IR op does), an N:M GEMM against a
  small identity block expands it back to the dense pruned weight on the
  STCE, and the vector unit forms the difference.
"""

from __future__ import annotations

import math

import numpy as np
from satc.backends.sat.codegen.conv import NMOperand
from satc.backends.sat.codegen.lowering import MAX_ROWS, LowerCtx, chunks, lowering
from satc.backends.sat.codegen.memory import Compressed, TapMajor
from satc.backends.sat.codegen.tiling import nm_k_quantum
from satc.backends.sat.nmformat import groups, index_bits, row_bytes
from satc.ir.graph import Node

#: Largest identity block of the expanding N:M GEMM: a WS pass preloads 32 rows and streams the
#: block's columns, so cycles per weight are (rows + block) / (rows * block) while the block's
#: groups fit one k-slice of the array (block <= rows * M): 256 at 2:8 (64: 0.047, 256: 0.035).
IDENTITY_BLOCK = 256


def _tap_matrices(ctx: LowerCtx, v) -> tuple[list[int], int, int]:
    """(address of each tap's [Co, Ci] matrix, Co, Ci) of a weight-shaped tensor."""
    s = ctx.dense(v)
    if isinstance(s, TapMajor):
        return [s.tap_addr(t) for t in range(s.taps)], s.shape[0], s.shape[1]
    addr, rows, cols = s.matrix()
    return [addr], rows, cols


def _nested_key(node: Node) -> str:
    return f"{node.outputs[0].name}#nested_source"


def _nested_scratch(node: Node) -> dict[str, tuple[int, ...]]:
    """DRAM scratch for the dense view of a pruned input (``bdwp-nested``'s W_bp from W_ff):
    [taps, Co, Ci]; none when the input is not itself an N:M prune along another axis."""
    src = node.inputs[0].producer
    if src is None or src.op != "nm_prune" or src.attrs["axis"] == node.attrs["axis"]:
        return {}
    co, ci, *k = node.inputs[0].shape
    return {_nested_key(node): (math.prod(k), co, ci)}


def _source_taps(ctx: LowerCtx, node: Node) -> tuple[list[int], int, int]:
    """Tap matrices of nm_prune's input; a compressed input (W_ff, N:M along Ci) is first
    expanded to dense rows in the node's DRAM scratch by the identity N:M GEMM."""
    w = node.inputs[0]
    s = ctx.st(w)
    if not isinstance(s, Compressed):
        return _tap_matrices(ctx, w)
    if s.axis != 1 or _nested_key(node) not in ctx.storage:
        raise ctx.fail(f"%{w.name} is a compressed weight with groups along Co",
                       "prune the dense weight or W_ff (N:M along Ci)")
    co, ci = s.shape[:2]
    scratch = ctx.storage[_nested_key(node)].region.addr
    taps = [scratch + t * co * ci * 4 for t in range(s.taps)]

    def store(t, r0, r1, tw, tc, tiles):
        ctx.b.store("acc", tc, taps[t] + r0 * ci * 4, r1 - r0, ci)
    _pruned_rows(ctx, s.n, s.m, [], co, ci, 0, store, source=s)
    ctx.fresh_arena()
    return taps, co, ci


@lowering("nm_prune", derived=_nested_scratch)
def lower_nm_prune(ctx: LowerCtx, node: Node) -> None:
    """SORE pre-generation: prune each tap matrix into the compressed ``<w>.ff`` / ``<w>.bp``."""
    a = node.attrs
    out = ctx.st(node.outputs[0])
    if not isinstance(out, Compressed):
        _prune_to_dense(ctx, node)
        return
    if (out.n, out.m, out.axis) != (a["n"], a["m"], a["axis"]):
        raise ctx.fail("nm_prune output is not a compressed weight state of the same pattern",
                       "nm_prune lowers only as the SORE update of a pruned weight state")
    taps, co, ci = _source_taps(ctx, node)
    outer, length = (co, ci) if out.axis == 1 else (ci, co)
    esz = 2 if out.val_dtype == "fp16" else 4
    per_outer = length * 4 + out.val_cols * esz + out.idx_cols + 3 * 64
    step = min(outer, ctx.arena.free_bytes("wgt") // per_outer, MAX_ROWS)
    if step < 1:
        raise ctx.fail(f"one row of {length} weights does not fit SORE's tiles in the wgt buffer",
                       "raise wgt_buffer_bytes")
    src = ctx.alloc("wgt", step * length * 4, "SORE source")
    val = ctx.alloc("wgt", step * out.val_cols * esz, "SORE values")
    idx = ctx.alloc("wgt", step * out.idx_cols, "SORE indices")
    for t, base in enumerate(taps):
        for o0, o1 in chunks(outer, step):
            if out.axis == 1:
                ctx.b.load("wgt", src, base + o0 * ci * 4, o1 - o0, ci)
                rows, cols = o1 - o0, ci
            else:
                ctx.b.load("wgt", src, base + o0 * 4, co, o1 - o0, dram_row_stride=ci)
                rows, cols = co, o1 - o0
            ctx.b.sore(out.n, out.m, rows, cols, src_buf="wgt", src_addr=src, val_buf="wgt",
                       val_addr=val, idx_buf="wgt", idx_addr=idx, axis=out.axis,
                       val_dtype=out.val_dtype)
            row = t * outer + o0
            ctx.b.store("wgt", val, out.values.addr + row * out.val_cols * esz, o1 - o0,
                        out.val_cols, dtype=out.val_dtype)
            ctx.b.store("wgt", idx, out.indices.addr + row * out.idx_cols, o1 - o0,
                        out.idx_cols, dtype="u8")


def _pruned_rows(ctx: LowerCtx, n: int, m: int, taps_w: list[int], co: int, ci: int,
                 vec_tiles: int, body, source: Compressed | None = None) -> None:
    """Prune each tap's [Co, Ci] weight rows N:M along Ci and expand them back to dense rows.

    Row chunk by row chunk: DMA the rows into ``wgt``, SORE compresses them (or, with a
    compressed ``source`` grouped along Ci, DMA its values and indices instead), and
    an N:M GEMM against an identity block writes the dense pruned rows into an
    ``acc`` tile. ``body(tap, r0, r1, w_tile, pruned_tile, vec_tiles)`` then
    uses them (``vec_tiles`` scratch rows of Ci fp32 in the vec buffer). Two sets of tiles
    alternate between chunks (double buffering) unless one chunk covers everything or two
    sets do not fit."""
    if (n, m) not in ctx.cfg.nm_patterns:
        raise ctx.fail(f"N:M {n}:{m} is not supported by {ctx.cfg.name}",
                       f"use one of {ctx.cfg.nm_patterns}")
    q = nm_k_quantum(n, m)
    block = min(IDENTITY_BLOCK, math.isqrt(ctx.arena.free_bytes("act") // 4))   # as the act room allows
    kb = ci if ci <= block else max(q, block // q * q)
    eye = ctx.const(f"eye/{kb}", np.eye(kb, dtype=np.float32))
    teye = ctx.alloc("act", kb * kb * 4, "identity block")
    ctx.b.load("act", teye, eye.addr, kb, kb)
    vcols, rb = groups(ci, m) * n, row_bytes(ci, n, m)
    vdt = "fp32" if source is None else source.val_dtype
    esz = 2 if vdt == "fp16" else 4
    dense_row = 0 if source is not None else ci * 4 + 64
    per_row = {"wgt": dense_row + vcols * esz + rb + 2 * 64, "acc": ci * 4 + 64}
    if vec_tiles:
        per_row["vec"] = vec_tiles * (ci * 4 + 64)

    def rows_per_chunk(slots: int) -> int:
        return min([co, MAX_ROWS] + [ctx.arena.free_bytes(b) // (slots * r) for b, r in per_row.items()])
    ntaps = len(taps_w) if source is None else source.taps
    step, slots = rows_per_chunk(2), 2            # double buffering: chunk k + 1 loads while k runs
    if step < 1 or (ntaps == 1 and rows_per_chunk(1) >= co):
        step, slots = rows_per_chunk(1), 1
    if step < 1:
        raise ctx.fail(f"one row of {ci} weights does not fit the pruning tiles",
                       "raise wgt, acc and vec buffer bytes")
    tiles = [(None if source is not None else ctx.alloc("wgt", step * ci * 4, "weights"),
              ctx.alloc("wgt", step * vcols * esz, "compressed values"),
              ctx.alloc("wgt", step * rb, "compressed indices"),
              ctx.alloc("acc", step * ci * 4, "pruned weights"),
              [ctx.alloc("vec", step * ci * 4, "scratch") for _ in range(vec_tiles)])
             for _ in range(slots)]
    bits = index_bits(m)
    k = 0
    for t in range(ntaps):
        for r0, r1 in chunks(co, step):
            tw, tv, ti, tc, scratch = tiles[k % slots]
            k += 1
            r = r1 - r0
            if source is None:
                ctx.b.load("wgt", tw, taps_w[t] + r0 * ci * 4, r, ci)
                ctx.b.sore(n, m, r, ci, src_buf="wgt", src_addr=tw, val_buf="wgt", val_addr=tv,
                           idx_buf="wgt", idx_addr=ti, axis=1)
            else:
                NMOperand(source).load(ctx, [t], r0, r1, 0, ci, "wgt", tv, ti)
            for c0, c1 in chunks(ci, kb):
                v0 = c0 // m * n
                ctx.b.gemm(r, c1 - c0, c1 - c0, a_buf="wgt", a_addr=tv + v0 * esz, a_dtype=vdt,
                           a_stride=vcols,
                           b_buf="act", b_addr=teye, b_stride=kb, c_addr=tc + c0 * 4, c_stride=ci,
                           n=n, m=m, idx_buf="wgt", idx_addr=ti + v0 * bits // 8, idx_stride=rb,
                           interleave=ctx.interleave,
                           dataflow=ctx.dataflow)
            body(t, r0, r1, tw, tc, scratch)


def _prune_to_dense(ctx: LowerCtx, node: Node) -> None:
    """nm_prune into a dense-stored tensor (ff mode's W_ff for the dense BP GEMM)."""
    a = node.attrs
    w, out = node.inputs[0], node.outputs[0]
    if a["axis"] % len(w.shape) != 1:
        raise ctx.fail("a dense-stored N:M prune along an axis other than Ci",
                       "store the pruned weight compressed (read it with an N:M GEMM)")
    taps_w, co, ci = _tap_matrices(ctx, w)
    taps_o, _, _ = _tap_matrices(ctx, out)

    def store(t, r0, r1, tw, tc, scratch):
        ctx.b.store("acc", tc, taps_o[t] + r0 * ci * 4, r1 - r0, ci)
    _pruned_rows(ctx, a["n"], a["m"], taps_w, co, ci, 0, store)


@lowering("srste_grad")
def lower_srste_grad(ctx: LowerCtx, node: Node) -> None:
    """dw + lam * (w - prune(w)): SORE mask of w, identity N:M GEMM to expand, and one
    accumulating vector pass dw += lam * (w - prune(w)) (``sub_scale``) per row block."""
    a = node.attrs
    n, m, lam = a["n"], a["m"], float(a["lam"])
    dw, w = node.inputs
    if a["axis"] % len(w.shape) != 1:
        raise ctx.fail("SR-STE over an axis other than Ci", "not supported by the SAT lowering yet")
    taps_w, co, ci = _tap_matrices(ctx, w)
    taps_g, _, _ = _tap_matrices(ctx, dw)
    taps_o, _, _ = _tap_matrices(ctx, node.outputs[0])

    def axpy(t, r0, r1, tw, tc, scratch):
        (tg,) = scratch
        r = r1 - r0
        ctx.b.load("vec", tg, taps_g[t] + r0 * ci * 4, r, ci)
        ctx.b.vec("sub_scale", r, ci, s0_buf="wgt", s0_addr=tw, s1_buf="acc", s1_addr=tc,
                  d_addr=tg, imm=lam, accumulate=True)
        ctx.b.store("vec", tg, taps_o[t] + r0 * ci * 4, r, ci)
    _pruned_rows(ctx, n, m, taps_w, co, ci, 1, axpy)
