"""Loss ops: mean softmax cross-entropy over integer class labels.

``cross_entropy(logits [R, classes], labels int64)``: the labels hold one
class per row (any shape with R elements: ``[N]`` for classifiers, ``[N, T]``
for language-model tokens whose logits were flattened to ``[N*T, V]``). With
attr ``ignore_index``, rows whose label equals it add nothing and the mean
is over the other rows (torch's ``ignore_index``; every row ignored gives a
NaN loss and a zero gradient, as in torch).
"""

from __future__ import annotations

import numpy as np

from satc.ir.ops.registry import expect, register
from satc.ir.types import TensorType


def _ce_infer(ts, attrs):
    logits, labels = ts[0], ts[1]
    expect(logits.rank == 2, f"cross_entropy logits must be [rows, classes], got {logits.shape}")
    expect(labels.numel == logits.shape[0] and labels.dtype == "int64",
           f"cross_entropy labels must be int64 with {logits.shape[0]} elements (one per logits "
           f"row), got {labels}")
    ignore = attrs.get("ignore_index")
    expect(ignore is None or (isinstance(ignore, int) and not 0 <= ignore < logits.shape[1]),
           f"cross_entropy ignore_index {ignore!r} must be an int outside [0, {logits.shape[1]})")
    return [TensorType((), logits.dtype)]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _valid(labels: np.ndarray, classes: int, attrs) -> np.ndarray:
    """The labels as a flat vector and a mask of the rows that count; checks the range."""
    labels = labels.reshape(-1)
    ignore = attrs.get("ignore_index")
    keep = labels != ignore if ignore is not None else np.ones(labels.shape, bool)
    if keep.any() and (labels[keep].min() < 0 or labels[keep].max() >= classes):
        from satc.errors import ShapeError
        raise ShapeError(f"labels must lie in [0, {classes}), got range "
                         f"[{labels[keep].min()}, {labels[keep].max()}]")
    return keep


def _ce_kernel(xs, attrs):
    logits, labels = xs
    keep = _valid(labels, logits.shape[1], attrs)
    rows = np.flatnonzero(keep)
    lp = _log_softmax(logits[rows])
    with np.errstate(invalid="ignore"):
        loss = -lp[np.arange(len(rows)), labels.reshape(-1)[rows]].sum() / len(rows)
    return [np.asarray(loss, dtype=logits.dtype)]


def _ce_grad_kernel(xs, attrs):
    logits, labels, dloss = xs
    keep = _valid(labels, logits.shape[1], attrs)
    p = np.exp(_log_softmax(logits))
    rows = np.flatnonzero(keep)
    p[rows, labels.reshape(-1)[rows]] -= 1.0
    p[~keep] = 0.0
    return [(p * (float(dloss) / max(len(rows), 1))).astype(logits.dtype)]   # torch: 0 if none


register("cross_entropy", infer=_ce_infer, kernel=_ce_kernel,
         grad=lambda ctx, node, dys: [ctx.emit("cross_entropy_grad", [*node.inputs, dys[0]],
                                               node.attrs), None],
         doc="mean over the (not ignored) rows of -log softmax(logits)[label]")
register("cross_entropy_grad", infer=lambda ts, a: [ts[0]], kernel=_ce_grad_kernel,
         doc="dlogits = (softmax(logits) - onehot(labels)) * dloss / rows counted; 0 on ignored rows")
