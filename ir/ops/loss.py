"""Loss ops: mean softmax cross-entropy over integer class labels."""

from __future__ import annotations

import numpy as np

from satc.ir.ops.registry import expect, register
from satc.ir.types import TensorType


def _ce_infer(ts, attrs):
    logits, labels = ts[0], ts[1]
    expect(logits.rank == 2, f"cross_entropy logits must be [N, classes], got {logits.shape}")
    expect(labels.shape == (logits.shape[0],) and labels.dtype == "int64",
           f"cross_entropy labels must be int64 [{logits.shape[0]}], got {labels}")
    return [TensorType((), logits.dtype)]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _check_labels(labels: np.ndarray, classes: int) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        from satc.errors import ShapeError
        raise ShapeError(f"labels must lie in [0, {classes}), got range "
                         f"[{labels.min()}, {labels.max()}]")


def _ce_kernel(xs, attrs):
    logits, labels = xs
    _check_labels(labels, logits.shape[1])
    lp = _log_softmax(logits)
    loss = -lp[np.arange(len(labels)), labels].mean()
    return [np.asarray(loss, dtype=logits.dtype)]


def _ce_grad_kernel(xs, attrs):
    logits, labels, dloss = xs
    p = np.exp(_log_softmax(logits))
    p[np.arange(len(labels)), labels] -= 1.0
    return [(p * (float(dloss) / len(labels))).astype(logits.dtype)]


register("cross_entropy", infer=_ce_infer, kernel=_ce_kernel,
         grad=lambda ctx, node, dys: [ctx.emit("cross_entropy_grad", [*node.inputs, dys[0]]), None],
         doc="mean over the batch of -log softmax(logits)[label]")
register("cross_entropy_grad", infer=lambda ts, a: [ts[0]], kernel=_ce_grad_kernel,
         doc="dlogits = (softmax(logits) - onehot(labels)) * dloss / N")
