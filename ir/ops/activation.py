"""Smooth and piecewise-linear activations (torch semantics) and their backward ops.

Each activation ``f`` has a backward op ``f_grad(dy, v)``: ``v`` is the
output ``y`` where the derivative is a function of it (sigmoid, tanh) and
the input ``x`` otherwise (SiLU, hardtanh, hardswish). Kernels compute in
the input's dtype; the derivative rules follow torch's backward kernels,
including which side of a kink gets which slope.
"""

from __future__ import annotations

import numpy as np

from satc.ir.ops.registry import expect, register


def _same(ts, attrs):
    return [ts[0]]


def _grad_infer(ts, attrs):
    expect(len(ts) == 2 and ts[0].shape == ts[1].shape,
           f"an activation gradient takes dy and a value of one shape, got {[t.shape for t in ts]}")
    return [ts[0]]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


def hardswish(x: np.ndarray) -> np.ndarray:
    """x * relu6(x + 3) / 6."""
    return (x * np.clip(x + 3, 0, 6) / 6).astype(x.dtype)


def hardswish_slope(x: np.ndarray) -> np.ndarray:
    """torch's hardswish derivative: 0 up to -3 (inclusive), x/3 + 1/2 below 3, 1 from 3 on."""
    return np.where(x <= -3, 0, np.where(x < 3, x / 3 + 0.5, 1)).astype(x.dtype)


def _hardtanh_infer(ts, attrs):
    lo, hi = attrs.get("min_val"), attrs.get("max_val")
    expect(isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo < hi,
           f"hardtanh needs numeric min_val < max_val, got {lo!r}, {hi!r}")
    return [ts[0]]


def _hardtanh_grad_infer(ts, attrs):
    _hardtanh_infer(ts, attrs)
    return _grad_infer(ts, attrs)


def _from_output(grad_op: str):
    return lambda ctx, node, dys: [ctx.emit(grad_op, [dys[0], node.outputs[0]], node.attrs)]


def _from_input(grad_op: str):
    return lambda ctx, node, dys: [ctx.emit(grad_op, [dys[0], node.inputs[0]], node.attrs)]


def _hardtanh_mask(x: np.ndarray, attrs) -> np.ndarray:
    return (x > attrs["min_val"]) & (x < attrs["max_val"])


def _silu_grad(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    s = sigmoid(x)
    return (dy * s * (1 + x * (1 - s))).astype(dy.dtype)


register("sigmoid", infer=_same, kernel=lambda x, a: [sigmoid(x[0])],
         grad=_from_output("sigmoid_grad"), doc="1 / (1 + exp(-x))")
register("sigmoid_grad", infer=_grad_infer,
         kernel=lambda x, a: [(x[0] * x[1] * (1 - x[1])).astype(x[0].dtype)],
         doc="dy * y * (1 - y), from dy and the sigmoid output y")
register("tanh", infer=_same, kernel=lambda x, a: [np.tanh(x[0])],
         grad=_from_output("tanh_grad"), doc="tanh(x)")
register("tanh_grad", infer=_grad_infer,
         kernel=lambda x, a: [(x[0] * (1 - x[1] * x[1])).astype(x[0].dtype)],
         doc="dy * (1 - y^2), from dy and the tanh output y")
register("silu", infer=_same, kernel=lambda x, a: [(x[0] * sigmoid(x[0])).astype(x[0].dtype)],
         grad=_from_input("silu_grad"), doc="x * sigmoid(x) (SiLU / swish)")
register("silu_grad", infer=_grad_infer, kernel=lambda x, a: [_silu_grad(x[0], x[1])],
         doc="dy * s * (1 + x * (1 - s)), s = sigmoid(x), from dy and the input x")
register("hardtanh", infer=_hardtanh_infer,
         kernel=lambda x, a: [np.clip(x[0], a["min_val"], a["max_val"]).astype(x[0].dtype)],
         grad=_from_input("hardtanh_grad"),
         doc="clamp(x, min_val, max_val); ReLU6 is hardtanh(0, 6)")
register("hardtanh_grad", infer=_hardtanh_grad_infer,
         kernel=lambda x, a: [np.where(_hardtanh_mask(x[1], a), x[0], 0).astype(x[0].dtype)],
         doc="dy where min_val < x < max_val, else 0 (torch: the kinks get 0)")
register("hardswish", infer=_same, kernel=lambda x, a: [hardswish(x[0])],
         grad=_from_input("hardswish_grad"), doc="x * relu6(x + 3) / 6")
register("hardswish_grad", infer=_grad_infer,
         kernel=lambda x, a: [(x[0] * hardswish_slope(x[1])).astype(x[0].dtype)],
         doc="dy * hardswish'(x), from dy and the input x")
