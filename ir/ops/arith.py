"""Powers and variance: pow by a constant exponent, exp, log, log1p, rsqrt, variance over axes,
and their gradients.

These are what an RMSNorm written out in plain torch (``x * rsqrt(mean(x^2) + eps) * w``, as
in LLaMA-style models) and a hand-written layer norm (``(x - mean) / sqrt(var + eps)``) import
as. ``sqrt``, ``reciprocal`` and division by a tensor are ``pow`` with exponent 0.5 / -1 (a
quotient ``a / b`` is ``a * pow(b, -1)``). The derivative rules are torch's: ``pow_backward``
(``dy * p * x^(p-1)``, zero for ``p == 0``), ``rsqrt_backward`` (``-0.5 * dy * y^3`` from the
output ``y``), ``exp`` (``dy * y``), ``log`` (``dy / x``, as ``dy * pow(x, -1)``), ``log1p`` (``dy / (1 + x)``, one op
``log1p_grad``) and
``var_backward`` (``dy * 2 (x - mean) / (n - correction)``). Vector work:
no MACs are counted.
"""

from __future__ import annotations

import numpy as np
from satc.ir.ops.registry import expect, register
from satc.ir.types import TensorType


def _same(ts, attrs):
    return [ts[0]]


def _exponent(attrs) -> float:
    p = attrs.get("exponent")
    expect(isinstance(p, (int, float)) and not isinstance(p, bool) and np.isfinite(p),
           f"pow needs a finite numeric 'exponent', got {p!r}")
    return float(p)


def _pow_infer(ts, attrs):
    _exponent(attrs)
    return [ts[0]]


def _pow_grad_infer(ts, attrs):
    _exponent(attrs)
    expect(len(ts) == 2 and ts[0].shape == ts[1].shape,
           f"pow_grad takes dy and x of one shape, got {[t.shape for t in ts]}")
    return [ts[0]]


def power(x: np.ndarray, p: float) -> np.ndarray:
    """x ** p in x's dtype (an integral exponent as an integer power: exact for p = 2)."""
    return np.power(x, int(p) if float(p).is_integer() else x.dtype.type(p)).astype(x.dtype)


def _pow_grad_kernel(xs, attrs):
    dy, x = xs
    p = _exponent(attrs)
    if p == 0:
        return [np.zeros_like(dy)]
    return [(dy * (x.dtype.type(p) * power(x, p - 1))).astype(dy.dtype)]


register("pow", infer=_pow_infer, kernel=lambda x, a: [power(x[0], _exponent(a))],
         grad=lambda ctx, node, dys: [ctx.emit("pow_grad", [dys[0], node.inputs[0]], node.attrs)],
         doc="x ** exponent (a compile-time scalar; sqrt is 0.5, reciprocal -1)")
register("pow_grad", infer=_pow_grad_infer, kernel=_pow_grad_kernel,
         doc="dy * exponent * x^(exponent - 1), from dy and the input x (0 for exponent 0)")


def _pair_infer(op: str, second: str):
    """The shape rule of ``op(dy, second)``: two inputs of one shape, the result dy's type."""
    def infer(ts, attrs):
        expect(len(ts) == 2 and ts[0].shape == ts[1].shape,
               f"{op} takes dy and {second} of one shape, got {[t.shape for t in ts]}")
        return [ts[0]]
    return infer


def _rsqrt_grad_kernel(xs, attrs):
    dy, y = xs
    return [(dy * y * y * y * dy.dtype.type(-0.5)).astype(dy.dtype)]


register("rsqrt", infer=_same,
         kernel=lambda x, a: [(x[0].dtype.type(1) / np.sqrt(x[0])).astype(x[0].dtype)],
         grad=lambda ctx, node, dys: [ctx.emit("rsqrt_grad", [dys[0], node.outputs[0]])],
         doc="1 / sqrt(x)")
register("rsqrt_grad", infer=_pair_infer("rsqrt_grad", "y"), kernel=_rsqrt_grad_kernel,
         doc="-0.5 * dy * y^3, from dy and the rsqrt output y")


# ------------------------------------------------------------------ variance
def _axes(rank: int, attrs) -> tuple[int, ...]:
    return tuple(sorted({a % rank for a in attrs["axes"]}))


def _count(shape: tuple[int, ...], attrs) -> int:
    return int(np.prod([shape[a] for a in _axes(len(shape), attrs)]))


def _var_check(t: TensorType, attrs) -> None:
    r = t.rank
    expect(len(attrs.get("axes", [])) > 0 and all(-r <= a < r for a in attrs["axes"]),
           f"reduce_var axes {attrs.get('axes')} out of range for rank {r}")
    c = attrs.get("correction", 1)
    n = _count(t.shape, attrs)
    expect(isinstance(c, int) and 0 <= c < n,
           f"reduce_var correction {c!r} over {n} elements: need an integer 0 <= correction < "
           f"{n} (torch divides by n - correction)")


def _var_infer(ts, attrs):
    x = ts[0]
    _var_check(x, attrs)
    axes = _axes(x.rank, attrs)
    keep = attrs.get("keepdims", False)
    shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape) if keep or i not in axes)
    return [TensorType(shape, x.dtype)]


def _var_kernel(xs, attrs):
    x = xs[0]
    v = x.astype(np.float64).var(axis=_axes(x.ndim, attrs), ddof=attrs.get("correction", 1),
                                 keepdims=attrs.get("keepdims", False))
    return [np.asarray(v).astype(x.dtype)]


def _var_grad_infer(ts, attrs):
    dy, x = ts
    _var_check(x, attrs)
    expect(dy.shape == tuple(_var_infer([x], attrs)[0].shape),
           f"reduce_var_grad dy {dy.shape} does not match the variance of {x.shape}")
    return [x]


def _var_grad_kernel(xs, attrs):
    dy, x = xs
    axes = _axes(x.ndim, attrs)
    x64 = x.astype(np.float64)
    g = dy.astype(np.float64)
    if not attrs.get("keepdims", False):
        g = np.expand_dims(g, axes)
    n = _count(x.shape, attrs)
    dx = g * (x64 - x64.mean(axis=axes, keepdims=True)) * (2.0 / (n - attrs.get("correction", 1)))
    return [dx.astype(x.dtype)]


register("reduce_var", infer=_var_infer, kernel=_var_kernel,
         grad=lambda ctx, node, dys: [ctx.emit("reduce_var_grad", [dys[0], node.inputs[0]],
                                               node.attrs)],
         doc="variance over 'axes', divided by n - correction (default 1; keepdims optional)")
register("reduce_var_grad", infer=_var_grad_infer, kernel=_var_grad_kernel,
         doc="dy * 2 (x - mean(x)) / (n - correction), from dy and the input x")


def _log_kernel(xs, attrs):
    with np.errstate(divide="ignore", invalid="ignore"):     # torch: -inf at 0, NaN below
        return [np.log(xs[0])]


register("exp", infer=_same, kernel=lambda x, a: [np.exp(x[0])],
         grad=lambda ctx, node, dys: [ctx.emit("mul", [dys[0], node.outputs[0]])],
         doc="e ** x (the gradient dy * y, from the output)")
register("log", infer=_same, kernel=_log_kernel,
         grad=lambda ctx, node, dys: [ctx.emit("mul", [dys[0], ctx.emit(
             "pow", [node.inputs[0]], {"exponent": -1.0})])],
         doc="natural logarithm (the gradient dy / x)")


def _log1p_kernel(xs, attrs):
    with np.errstate(divide="ignore", invalid="ignore"):     # torch: -inf at -1, NaN below
        return [np.log1p(xs[0])]


def _log1p_grad_kernel(xs, attrs):
    dy, x = xs
    with np.errstate(divide="ignore"):
        return [(dy / (x + x.dtype.type(1))).astype(dy.dtype)]


register("log1p", infer=_same, kernel=_log1p_kernel,
         grad=lambda ctx, node, dys: [ctx.emit("log1p_grad", [dys[0], node.inputs[0]])],
         doc="ln(1 + x), exact for small x")
register("log1p_grad", infer=_pair_infer("log1p_grad", "x"), kernel=_log1p_grad_kernel,
         doc="dy / (1 + x), from dy and the input x")
