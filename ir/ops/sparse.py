"""N:M sparsity ops (BDWP): pruning (SORE pre-generation) and the SR-STE gradient term.

``nm_prune(w) {n, m, axis}`` keeps the top-N magnitudes of each group of M
along ``axis`` and zeroes the rest (see :mod:`satc.ir.nm`); the result is
the dense view of the compressed weight that the next step's FF (axis =
Ci) or BP (axis = Co) reads. ``srste_grad(dw, w[, w_pruned]) {n, m, axis,
lam}`` is ``dw + lam * (1 - mask(w)) * w``, the SR-STE refinement of the
dense weight gradient; the optional ``w_pruned`` is ``nm_prune(w)`` with the
same pattern (the step's pre-generated W_ff), and the term is then
``lam * (w - w_pruned)`` -- the same numbers, without pruning w again.
"""

from __future__ import annotations

import numpy as np

from satc.ir.nm import check_nm, nm_mask
from satc.ir.ops.registry import expect, register


def _nm_infer(ts, attrs):
    check_nm(attrs["n"], attrs["m"])
    r = ts[-1].rank
    expect(-r <= attrs["axis"] < r, f"N:M axis {attrs['axis']} out of range for rank {r}")
    return [ts[0]]


def _prune_kernel(xs, attrs):
    w = xs[0]
    return [np.where(nm_mask(w, attrs["n"], attrs["m"], attrs["axis"]), w, 0).astype(w.dtype)]


def _srste_kernel(xs, attrs):
    dw, w = xs[:2]
    if len(xs) == 3:
        return [(dw + np.float32(attrs["lam"]) * (w - xs[2])).astype(dw.dtype)]
    pruned = ~nm_mask(w, attrs["n"], attrs["m"], attrs["axis"])
    return [(dw + np.float32(attrs["lam"]) * np.where(pruned, w, 0)).astype(dw.dtype)]


def _srste_infer(ts, attrs):
    expect(len(ts) in (2, 3), f"srste_grad takes dw, w and optionally w_pruned, got {len(ts)} inputs")
    expect(ts[0].shape == ts[1].shape, f"srste_grad: dw {ts[0].shape} and w {ts[1].shape} differ")
    expect(len(ts) == 2 or ts[2].shape == ts[1].shape,
           f"srste_grad: w_pruned {ts[-1].shape} and w {ts[1].shape} differ")
    return _nm_infer(ts, attrs)


def _group_count(t, attrs) -> int:
    length = t.shape[attrs["axis"] % t.rank]
    return t.numel // max(length, 1) * -(-length // attrs["m"])


register("nm_prune", infer=_nm_infer, kernel=_prune_kernel,
         macs=lambda i, o, a: _group_count(i[0], a) * a["m"],
         doc="keep the top-N of each group of M along axis (SORE)")
register("srste_grad", infer=_srste_infer, kernel=_srste_kernel, macs=lambda i, o, a: i[0].numel,
         doc="dw + lam * (1 - nm_mask(w)) * w (w_pruned = nm_prune(w) if given)")
