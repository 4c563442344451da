"""Elementwise, broadcast, reduction and layout ops."""

from __future__ import annotations

import numpy as np

from satc.ir.ops.registry import expect, register
from satc.ir.types import TensorType


def _same(ts, attrs):
    return [ts[0]]


def _broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError:
        expect(False, f"shapes {a} and {b} do not broadcast")
        raise  # unreachable


def _reduce_to(ctx, dy, target: TensorType, wrt: int):
    """``dy`` summed down to ``target``'s shape (the gradient of a broadcast)."""
    if dy is None or dy.shape == target.shape:
        return dy
    return ctx.emit("sum_to", [dy], {"shape": list(target.shape)}, wrt=wrt)


# ------------------------------------------------------------------ binary
def _binary_infer(ts, attrs):
    expect(len(ts) == 2, f"needs 2 inputs, got {len(ts)}")
    return [TensorType(_broadcast_shape(ts[0].shape, ts[1].shape), ts[0].dtype)]


def _add_grad(ctx, node, dys):
    (dy,) = dys
    a, b = node.inputs
    return [_reduce_to(ctx, dy, a.type, 0), _reduce_to(ctx, dy, b.type, 1)]


def _mul_grad(ctx, node, dys):
    (dy,) = dys
    a, b = node.inputs
    da = _reduce_to(ctx, ctx.emit("mul", [dy, b], wrt=0), a.type, 0)
    db = _reduce_to(ctx, ctx.emit("mul", [dy, a], wrt=1), b.type, 1)
    return [da, db]


register("add", infer=_binary_infer, kernel=lambda x, a: [np.add(x[0], x[1])],
         grad=_add_grad, doc="a + b with numpy broadcasting")
register("mul", infer=_binary_infer, kernel=lambda x, a: [np.multiply(x[0], x[1])],
         grad=_mul_grad, doc="a * b with numpy broadcasting")


def _sum_infer(ts, attrs):
    expect(len(ts) >= 1, "sum needs at least one input")
    for t in ts[1:]:
        expect(t.shape == ts[0].shape, f"sum inputs differ in shape: {ts[0].shape} vs {t.shape}")
    return [ts[0]]


def _sum_kernel(xs, attrs):
    out = np.array(xs[0], copy=True)
    for x in xs[1:]:
        out += x
    return [out]


register("sum", infer=_sum_infer, kernel=_sum_kernel,
         grad=lambda ctx, node, dys: [dys[0]] * len(node.inputs),
         doc="elementwise sum of n same-shape inputs")


def _scale_infer(ts, attrs):
    expect(isinstance(attrs.get("factor"), (int, float)), "scale needs a numeric 'factor'")
    return [ts[0]]


register("scale", infer=_scale_infer,
         kernel=lambda x, a: [(x[0] * np.float32(a["factor"])).astype(x[0].dtype)],
         grad=lambda ctx, node, dys: [ctx.emit("scale", [dys[0]], {"factor": node.attrs["factor"]})],
         doc="x * factor (a compile-time scalar)")

register("dropout", infer=_same, kernel=lambda x, a: [x[0]],
         grad=lambda ctx, node, dys: [dys[0]],
         doc="identity in the compiled step (dropout is not emulated); attr p recorded")


# ------------------------------------------------------------------ activations
def _relu_grad_rule(ctx, node, dys):
    return [ctx.emit("relu_grad", [dys[0], node.outputs[0]])]


register("relu", infer=_same, kernel=lambda x, a: [np.maximum(x[0], 0).astype(x[0].dtype)],
         grad=_relu_grad_rule, doc="max(x, 0)")
def _relu_grad_infer(ts, attrs):
    expect(len(ts) >= 2, "relu_grad needs dy and the relu output y")
    return _sum_infer(ts, attrs)


def _relu_grad_kernel(xs, attrs):
    dy = _sum_kernel([xs[0], *xs[2:]], attrs)[0]   # the terms of a fused gradient sum
    return [np.where(xs[1] > 0, dy, 0).astype(xs[0].dtype)]


register("relu_grad", infer=_relu_grad_infer, kernel=_relu_grad_kernel,
         doc="dy * (y > 0), from dy and the relu output y; inputs after y are added to dy "
             "first (dy + d2 + ...: a gradient sum fused in, passes/fusion.py)")


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf
    return erf(x)


_SQRT_2_OVER_PI = np.sqrt(2.0 / np.pi)


def gelu_kernel(xs, attrs):
    """GELU (exact erf, or tanh with approximate='tanh') in float64, rounded to x's dtype."""
    x = xs[0].astype(np.float64)
    if attrs.get("approximate", "none") == "tanh":
        y = 0.5 * x * (1 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))
    else:
        y = 0.5 * x * (1 + _erf(x / np.sqrt(2.0)))
    return [y.astype(xs[0].dtype)]


def _gelu_grad_kernel(xs, attrs):
    dy, x = xs[0], xs[1].astype(np.float64)
    if attrs.get("approximate", "none") == "tanh":
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)
        t = np.tanh(inner)
        d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
    else:
        d = 0.5 * (1 + _erf(x / np.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    return [(dy * d).astype(dy.dtype)]


def _gelu_infer(ts, attrs):
    expect(attrs.get("approximate", "none") in ("none", "tanh"),
           f"gelu approximate must be 'none' or 'tanh', got {attrs.get('approximate')!r}")
    return [ts[0]]


register("gelu", infer=_gelu_infer, kernel=gelu_kernel,
         grad=lambda ctx, node, dys: [ctx.emit("gelu_grad", [dys[0], node.inputs[0]], node.attrs)],
         doc="GELU, exact (erf) or tanh approximation")
register("gelu_grad", infer=lambda ts, a: [ts[0]], kernel=_gelu_grad_kernel,
         doc="dy * gelu'(x)")


# ------------------------------------------------------------------ softmax
def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)


def _axis_infer(ts, attrs):
    r = ts[0].rank
    expect(-r <= attrs.get("axis", -1) < r, f"axis {attrs.get('axis')} out of range for rank {r}")
    return [ts[0]]


def _softmax_grad_kernel(xs, attrs):
    dy, y = xs
    ax = attrs["axis"]
    return [(y * (dy - (dy * y).sum(axis=ax, keepdims=True))).astype(dy.dtype)]


register("softmax", infer=_axis_infer, kernel=lambda x, a: [_softmax(x[0], a["axis"])],
         grad=lambda ctx, node, dys: [ctx.emit("softmax_grad", [dys[0], node.outputs[0]],
                                               {"axis": node.attrs["axis"]})],
         doc="softmax along axis")
register("softmax_grad", infer=lambda ts, a: [ts[0]], kernel=_softmax_grad_kernel,
         doc="y * (dy - sum(dy * y, axis)), from dy and the softmax output y")


# ------------------------------------------------------------------ broadcast / reduce
def _sum_to_infer(ts, attrs):
    shape = tuple(attrs["shape"])
    expect(tuple(np.broadcast_shapes(shape, ts[0].shape)) == ts[0].shape,
           f"cannot sum {ts[0].shape} down to {shape}")
    return [TensorType(shape, ts[0].dtype)]


def _sum_to_kernel(xs, attrs):
    x, shape = xs[0], tuple(attrs["shape"])
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1 and x.shape[lead + i] != 1)
    return [x.sum(axis=axes, keepdims=True).reshape(shape).astype(x.dtype)]


def _broadcast_to_infer(ts, attrs):
    shape = tuple(attrs["shape"])
    expect(tuple(np.broadcast_shapes(shape, ts[0].shape)) == shape,
           f"cannot broadcast {ts[0].shape} to {shape}")
    return [TensorType(shape, ts[0].dtype)]


register("sum_to", infer=_sum_to_infer, kernel=_sum_to_kernel,
         grad=lambda ctx, node, dys: [ctx.emit("broadcast_to", [dys[0]],
                                               {"shape": list(node.inputs[0].shape)})],
         doc="sum a broadcast tensor back down to 'shape'")
register("broadcast_to", infer=_broadcast_to_infer,
         kernel=lambda x, a: [np.ascontiguousarray(np.broadcast_to(x[0], tuple(a["shape"])))],
         grad=lambda ctx, node, dys: [_reduce_to(ctx, dys[0], node.inputs[0].type, 0)],
         doc="numpy broadcast to 'shape'")


def _mean_axes(rank: int, attrs) -> tuple[int, ...]:
    return tuple(sorted(a % rank for a in attrs["axes"]))


def _reduce_mean_infer(ts, attrs):
    r = ts[0].rank
    for a in attrs["axes"]:
        expect(-r <= a < r, f"axis {a} out of range for rank {r}")
    axes = _mean_axes(r, attrs)
    keep = attrs.get("keepdims", False)
    shape = tuple(1 if i in axes else s for i, s in enumerate(ts[0].shape) if keep or i not in axes)
    return [TensorType(shape, ts[0].dtype)]


def _reduce_mean_grad(ctx, node, dys):
    x = node.inputs[0]
    axes = _mean_axes(x.type.rank, node.attrs)
    kept = [1 if i in axes else s for i, s in enumerate(x.shape)]
    dy = dys[0] if dys[0].shape == tuple(kept) else ctx.emit("reshape", [dys[0]], {"shape": kept})
    count = int(np.prod([x.shape[i] for i in axes]))
    dx = ctx.emit("broadcast_to", [dy], {"shape": list(x.shape)})
    return [ctx.emit("scale", [dx], {"factor": 1.0 / count})]


register("reduce_mean", infer=_reduce_mean_infer,
         kernel=lambda x, a: [x[0].mean(axis=_mean_axes(x[0].ndim, a),
                                        keepdims=a.get("keepdims", False)).astype(x[0].dtype)],
         grad=_reduce_mean_grad, doc="mean over 'axes' (keepdims optional)")


# ------------------------------------------------------------------ layout
def _reshape_infer(ts, attrs):
    shape = tuple(attrs["shape"])
    expect(all(isinstance(s, int) and s >= 0 for s in shape),
           f"reshape target {shape} must be resolved non-negative sizes")
    expect(int(np.prod(shape)) == ts[0].numel, f"cannot reshape {ts[0].shape} to {shape}")
    return [TensorType(shape, ts[0].dtype)]


register("reshape", infer=_reshape_infer, kernel=lambda x, a: [x[0].reshape(tuple(a["shape"]))],
         grad=lambda ctx, node, dys: [ctx.emit("reshape", [dys[0]], {"shape": list(node.inputs[0].shape)})],
         doc="reshape to a static shape (flatten lowers to this)")


def _transpose_infer(ts, attrs):
    perm = list(attrs["perm"])
    expect(sorted(perm) == list(range(ts[0].rank)), f"perm {perm} is not a permutation of rank {ts[0].rank}")
    return [TensorType(tuple(ts[0].shape[p] for p in perm), ts[0].dtype)]


register("transpose", infer=_transpose_infer,
         kernel=lambda x, a: [np.ascontiguousarray(np.transpose(x[0], a["perm"]))],
         grad=lambda ctx, node, dys: [ctx.emit("transpose", [dys[0]],
                                               {"perm": [int(i) for i in np.argsort(node.attrs["perm"])]})],
         doc="permute axes")


def _concat_infer(ts, attrs):
    r = ts[0].rank
    ax = attrs["axis"] % r
    for t in ts:
        expect(t.rank == r and all(t.shape[i] == ts[0].shape[i] for i in range(r) if i != ax),
               f"concat inputs {[x.shape for x in ts]} differ outside axis {ax}")
    shape = list(ts[0].shape)
    shape[ax] = sum(t.shape[ax] for t in ts)
    return [TensorType(tuple(shape), ts[0].dtype)]


def _concat_grad(ctx, node, dys):
    ax = node.attrs["axis"] % node.inputs[0].type.rank
    out, start = [], 0
    for i, v in enumerate(node.inputs):
        end = start + v.shape[ax]
        out.append(ctx.emit("slice", [dys[0]], {"axis": ax, "start": start, "end": end}, wrt=i))
        start = end
    return out


register("concat", infer=_concat_infer,
         kernel=lambda x, a: [np.concatenate(x, axis=a["axis"])],
         grad=_concat_grad, doc="concatenate along axis")


def _slice_infer(ts, attrs):
    r = ts[0].rank
    ax = attrs["axis"] % r
    n = ts[0].shape[ax]
    expect(0 <= attrs["start"] <= attrs["end"] <= n,
           f"slice [{attrs['start']}:{attrs['end']}] out of range for size {n} on axis {ax}")
    shape = list(ts[0].shape)
    shape[ax] = attrs["end"] - attrs["start"]
    return [TensorType(tuple(shape), ts[0].dtype)]


def _slice_kernel(xs, attrs):
    x = xs[0]
    idx = [slice(None)] * x.ndim
    idx[attrs["axis"] % x.ndim] = slice(attrs["start"], attrs["end"])
    return [np.ascontiguousarray(x[tuple(idx)])]


def _slice_grad(ctx, node, dys):
    x = node.inputs[0]
    ax = node.attrs["axis"] % x.type.rank
    return [ctx.emit("pad", [dys[0]], {"axis": ax, "before": node.attrs["start"],
                                       "after": x.shape[ax] - node.attrs["end"]})]


register("slice", infer=_slice_infer, kernel=_slice_kernel, grad=_slice_grad,
         doc="x[start:end] along axis")


def _pad_infer(ts, attrs):
    expect(attrs["before"] >= 0 and attrs["after"] >= 0, "pad amounts must be >= 0")
    shape = list(ts[0].shape)
    shape[attrs["axis"] % ts[0].rank] += attrs["before"] + attrs["after"]
    return [TensorType(tuple(shape), ts[0].dtype)]


def _pad_kernel(xs, attrs):
    x = xs[0]
    widths = [(0, 0)] * x.ndim
    widths[attrs["axis"] % x.ndim] = (attrs["before"], attrs["after"])
    return [np.pad(x, widths)]


register("pad", infer=_pad_infer, kernel=_pad_kernel,
         grad=lambda ctx, node, dys: [ctx.emit("slice", [dys[0]], {
             "axis": node.attrs["axis"], "start": node.attrs["before"],
             "end": node.attrs["before"] + node.inputs[0].shape[node.attrs["axis"] % node.inputs[0].type.rank]})],
         doc="zero-pad along one axis")
