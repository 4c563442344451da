"""Embedding: a gather of table rows by integer ids, and its scatter-add gradient.

``embedding(weight [V, D], ids int64 [...]) -> [..., D]`` (torch's argument
order); ``padding_idx`` (-1: none) gets no gradient, as in torch. The MAC
count is the one-hot GEMM ``onehot(ids) [R, V] x weight [V, D]`` the SAT
backend runs (``R`` = number of ids): the table stays dense.
"""

from __future__ import annotations

import numpy as np
from satc.ir.ops.registry import expect, register
from satc.ir.types import TensorType

from satc.errors import ShapeError


def _check_ids(ids: np.ndarray, vocab: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise ShapeError(f"embedding ids must lie in [0, {vocab}), got range "
                         f"[{ids.min()}, {ids.max()}]; fix: clamp or remap the token ids")


def _infer(ts, attrs):
    w, ids = ts
    expect(w.rank == 2, f"embedding weight must be [vocab, dim], got {w.shape}")
    expect(ids.dtype == "int64", f"embedding ids must be int64, got {ids.dtype}")
    return [TensorType(ids.shape + (w.shape[1],), w.dtype)]


def _kernel(xs, attrs):
    w, ids = xs
    _check_ids(ids, w.shape[0])
    return [np.ascontiguousarray(w[ids])]


def _grad_infer(ts, attrs):
    dy, ids = ts
    expect(ids.dtype == "int64" and dy.shape == ids.shape + dy.shape[-1:],
           f"embedding_grad takes dy [..., D] and int64 ids [...], got {dy} and {ids}")
    return [TensorType((int(attrs["vocab"]), dy.shape[-1]), dy.dtype)]


def _grad_kernel(xs, attrs):
    dy, ids = xs
    vocab, pad = int(attrs["vocab"]), int(attrs.get("padding_idx", -1))
    _check_ids(ids, vocab)
    flat, rows = ids.reshape(-1), dy.reshape(-1, dy.shape[-1])
    keep = flat != pad
    out = np.zeros((vocab, dy.shape[-1]), dy.dtype)
    np.add.at(out, flat[keep], rows[keep])
    return [out]


def _grad(ctx, node, dys):
    attrs = {"vocab": node.inputs[0].shape[0], "padding_idx": node.attrs.get("padding_idx", -1)}
    return [ctx.emit("embedding_grad", [dys[0], node.inputs[1]], attrs, wrt=0), None]


def _macs(ins, outs, attrs) -> int:
    return outs[0].numel * ins[0].shape[0]


def _grad_macs(ins, outs, attrs) -> int:
    return ins[0].numel * outs[0].shape[0]


register("embedding", infer=_infer, kernel=_kernel, grad=_grad, macs=_macs,
         doc="weight[ids]: rows of the table gathered by int64 ids")
register("embedding_grad", infer=_grad_infer, kernel=_grad_kernel, macs=_grad_macs,
         doc="dweight: dy rows scatter-added into [vocab, D] by ids (padding_idx skipped)")
