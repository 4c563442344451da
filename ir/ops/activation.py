"""Smooth and piecewise-linear activations (torch semantics) and their backward ops.

Each activation ``f`` has a backward op ``f_grad(dy, v)``: ``v`` is the
output ``y`` where the derivative is a function of it (sigmoid, tanh) and
the input ``x`` otherwise (SiLU, hardtanh, hardswish, leaky ReLU, ELU,
softplus, abs). ``minimum`` / ``maximum`` (two same-shape operands) have
``minmax_grad(dy, this, other) {mode}``, the gradient of one operand: dy where it is the
one selected, half of dy at ties (torch's rule). Kernels compute in
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


def elu(x: np.ndarray, alpha: float, scale: float, input_scale: float) -> np.ndarray:
    """torch's ELU: scale * x for x > 0, else alpha * scale * expm1(input_scale * x)
    (SELU and CELU are ELUs with other attributes)."""
    neg = np.expm1(np.minimum(x * input_scale, 0))    # the min only keeps exp from overflowing
    return np.where(x > 0, x * scale, neg * (alpha * scale)).astype(x.dtype)


def elu_slope(x: np.ndarray, alpha: float, scale: float, input_scale: float) -> np.ndarray:
    """torch's ELU derivative (elu_backward from the input): scale for x > 0, else
    input_scale * alpha * scale * exp(input_scale * x) (x = 0 takes the exponential side)."""
    neg = np.exp(np.minimum(x * input_scale, 0)) * (input_scale * alpha * scale)
    return np.where(x > 0, scale, neg).astype(x.dtype)


def softplus(x: np.ndarray, beta: float, threshold: float) -> np.ndarray:
    """torch's softplus: x where beta * x > threshold, else log(1 + exp(beta * x)) / beta
    (computed as logaddexp(0, beta * x), which equals it without overflowing)."""
    t = x * beta
    return np.where(t > threshold, x, np.logaddexp(0, t) / beta).astype(x.dtype)


def softplus_slope(x: np.ndarray, beta: float, threshold: float) -> np.ndarray:
    """torch's softplus derivative: 1 where beta * x > threshold, else sigmoid(beta * x)
    (torch's z / (z + 1), z = exp(beta * x), without its overflow)."""
    t = (x * beta).astype(x.dtype)
    return np.where(t > threshold, 1, sigmoid(t)).astype(x.dtype)


def _numeric_attrs(op: str, attrs, names: tuple[str, ...]) -> list[float]:
    vals = [attrs.get(k) for k in names]
    expect(all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals),
           f"{op} needs numeric {', '.join(names)}, got {dict(zip(names, vals))}")
    return vals


def _leaky_relu_infer(ts, attrs):
    _numeric_attrs("leaky_relu", attrs, ("negative_slope",))
    return [ts[0]]


def _elu_infer(ts, attrs):
    _numeric_attrs("elu", attrs, ("alpha", "scale", "input_scale"))
    return [ts[0]]


def _softplus_infer(ts, attrs):
    (beta, _) = _numeric_attrs("softplus", attrs, ("beta", "threshold"))
    expect(beta != 0, "softplus needs a nonzero beta (it divides by beta), got 0")
    return [ts[0]]


def _with_attrs(infer):
    """The shape rule of ``f_grad`` for an ``f`` with attributes checked by ``infer``."""
    def rule(ts, attrs):
        infer(ts, attrs)
        return _grad_infer(ts, attrs)
    return rule


def _hardtanh_infer(ts, attrs):
    lo, hi = attrs.get("min_val"), attrs.get("max_val")
    expect(isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo < hi,
           f"hardtanh needs numeric min_val < max_val, got {lo!r}, {hi!r}")
    return [ts[0]]


def _from_output(grad_op: str):
    return lambda ctx, node, dys: [ctx.emit(grad_op, [dys[0], node.outputs[0]], node.attrs)]


def _from_input(grad_op: str):
    return lambda ctx, node, dys: [ctx.emit(grad_op, [dys[0], node.inputs[0]], node.attrs)]


def sign(x: np.ndarray) -> np.ndarray:
    """torch.sign: (x > 0) - (x < 0) in x's dtype, so NaN gives 0."""
    return ((x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)).astype(x.dtype)


def _minmax_infer(ts, attrs):
    expect(len(ts) == 2 and ts[0].shape == ts[1].shape and ts[0].dtype == ts[1].dtype,
           f"minimum / maximum take two tensors of one shape and dtype, got "
           f"{[(t.shape, t.dtype) for t in ts]}")
    return [ts[0]]


def _minmax_grad(mode: str):
    def grad(ctx, node, dys):
        a, b = node.inputs
        return [ctx.emit("minmax_grad", [dys[0], a, b], {"mode": mode}, wrt=0),
                ctx.emit("minmax_grad", [dys[0], b, a], {"mode": mode}, wrt=1)]
    return grad


def _minmax_grad_infer(ts, attrs):
    expect(attrs.get("mode") in ("min", "max"), f"minmax_grad mode must be 'min' or 'max', "
           f"got {attrs.get('mode')!r}")
    expect(len(ts) == 3 and ts[0].shape == ts[1].shape == ts[2].shape,
           f"minmax_grad takes dy, this, other of one shape, got {[t.shape for t in ts]}")
    return [ts[0]]


def _minmax_grad_kernel(xs, attrs):
    dy, this, other = xs
    chosen = this < other if attrs["mode"] == "min" else this > other
    half = dy * dy.dtype.type(0.5)
    return [np.where(chosen, dy, np.where(this == other, half, 0)).astype(dy.dtype)]


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
register("hardtanh_grad", infer=_with_attrs(_hardtanh_infer),
         kernel=lambda x, a: [np.where(_hardtanh_mask(x[1], a), x[0], 0).astype(x[0].dtype)],
         doc="dy where min_val < x < max_val, else 0 (torch: the kinks get 0)")
register("hardswish", infer=_same, kernel=lambda x, a: [hardswish(x[0])],
         grad=_from_input("hardswish_grad"), doc="x * relu6(x + 3) / 6")
register("hardswish_grad", infer=_grad_infer,
         kernel=lambda x, a: [(x[0] * hardswish_slope(x[1])).astype(x[0].dtype)],
         doc="dy * hardswish'(x), from dy and the input x")
register("abs", infer=_same, kernel=lambda x, a: [np.abs(x[0])], grad=_from_input("abs_grad"),
         doc="|x|")
register("abs_grad", infer=_grad_infer,
         kernel=lambda x, a: [(x[0] * np.sign(x[1])).astype(x[0].dtype)],
         doc="dy * sign(x), from dy and the input x (torch: 0 at x = 0)")
register("sign", infer=_same, kernel=lambda x, a: [sign(x[0])], grad=lambda ctx, node, dys: [None],
         doc="-1, 0 or 1 by the sign of x (torch: 0 at 0 and NaN); no gradient flows through it")
register("minimum", infer=_minmax_infer, kernel=lambda x, a: [np.minimum(x[0], x[1])],
         grad=_minmax_grad("min"), doc="elementwise min of two same-shape tensors")
register("maximum", infer=_minmax_infer, kernel=lambda x, a: [np.maximum(x[0], x[1])],
         grad=_minmax_grad("max"), doc="elementwise max of two same-shape tensors")
register("minmax_grad", infer=_minmax_grad_infer, kernel=_minmax_grad_kernel,
         doc="dy where this operand is selected (mode min: this < other; max: this > other), "
             "dy / 2 at ties")
register("leaky_relu", infer=_leaky_relu_infer,
         kernel=lambda x, a: [np.where(x[0] > 0, x[0], x[0] * a["negative_slope"]).astype(x[0].dtype)],
         grad=_from_input("leaky_relu_grad"), doc="x where x > 0, else negative_slope * x")
register("leaky_relu_grad", infer=_with_attrs(_leaky_relu_infer),
         kernel=lambda x, a: [np.where(x[1] > 0, x[0], x[0] * a["negative_slope"]).astype(x[0].dtype)],
         doc="dy where x > 0, else negative_slope * dy (torch: x = 0 takes the slope)")
register("elu", infer=_elu_infer,
         kernel=lambda x, a: [elu(x[0], a["alpha"], a["scale"], a["input_scale"])],
         grad=_from_input("elu_grad"),
         doc="scale * x for x > 0, else alpha * scale * (exp(input_scale * x) - 1); "
             "SELU and CELU are ELUs")
register("elu_grad", infer=_with_attrs(_elu_infer),
         kernel=lambda x, a: [(x[0] * elu_slope(x[1], a["alpha"], a["scale"],
                                                a["input_scale"])).astype(x[0].dtype)],
         doc="dy * elu'(x), from dy and the input x")
register("softplus", infer=_softplus_infer,
         kernel=lambda x, a: [softplus(x[0], a["beta"], a["threshold"])],
         grad=_from_input("softplus_grad"),
         doc="log(1 + exp(beta * x)) / beta, x where beta * x > threshold")
register("softplus_grad", infer=_with_attrs(_softplus_infer),
         kernel=lambda x, a: [(x[0] * softplus_slope(x[1], a["beta"], a["threshold"])).astype(x[0].dtype)],
         doc="dy * sigmoid(beta * x), dy where beta * x > threshold; from dy and the input x")
