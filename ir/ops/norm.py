"""Normalisation ops: batchnorm (training and eval) and layernorm, with gradients.

batchnorm(x, gamma, beta, running_mean, running_var) normalises over every
axis but 1. In training mode it returns (y, mean, invstd, new_running_mean,
new_running_var) with torch's update rule (unbiased variance in the running
estimate); in eval mode it returns y from the running statistics.
layernorm(x, gamma, beta) normalises over the last ``ndim`` axes and returns
(y, mean, invstd). Statistics are computed in float64 and stored in the input's dtype.
"""

from __future__ import annotations

import numpy as np

from satc.errors import IRError
from satc.ir.ops.registry import expect, register
from satc.ir.types import TensorType


def _bn_axes(ndim: int) -> tuple[int, ...]:
    return tuple(i for i in range(ndim) if i != 1)


def _bn_view(ndim: int) -> tuple[int, ...]:
    return (1, -1) + (1,) * (ndim - 2)


def _bn_infer(ts, attrs):
    x = ts[0]
    expect(x.rank >= 2, f"batchnorm input must be at least [N, C], got {x.shape}")
    c = x.shape[1]
    for t, what in zip(ts[1:], ("gamma", "beta", "running_mean", "running_var")):
        expect(t.shape == (c,), f"batchnorm {what} must be [{c}], got {t.shape}")
    if not attrs["training"]:
        return [x]
    stat = TensorType((c,), "float32")
    return [x, stat, stat, stat, stat]


def _bn_kernel(xs, attrs):
    x, gamma, beta, rm, rv = xs
    v = _bn_view(x.ndim)
    eps = attrs["eps"]
    if attrs["training"]:
        x64 = x.astype(np.float64)
        axes = _bn_axes(x.ndim)
        mean = x64.mean(axis=axes)
        var = x64.var(axis=axes)
        n = x.size // x.shape[1]
        invstd = 1.0 / np.sqrt(var + eps)
        y = (x64 - mean.reshape(v)) * (invstd * gamma).reshape(v) + beta.reshape(v)
        mom = attrs["momentum"]
        new_rm = (1 - mom) * rm + mom * mean
        new_rv = (1 - mom) * rv + mom * var * (n / max(n - 1, 1))
        f = x.dtype
        return [y.astype(f), mean.astype(f), invstd.astype(f), new_rm.astype(f), new_rv.astype(f)]
    invstd = 1.0 / np.sqrt(rv.astype(np.float64) + eps)
    y = (x - rm.reshape(v)) * (invstd * gamma).reshape(v) + beta.reshape(v)
    return [y.astype(x.dtype)]


def _bn_grad(ctx, node, dys):
    if not node.attrs["training"]:
        raise IRError(f"node {node.name!r}: batchnorm in eval mode has no training gradient; "
                      "import the model in train mode")
    dy = dys[0]
    x, gamma = node.inputs[0], node.inputs[1]
    mean, invstd = node.outputs[1], node.outputs[2]
    dx = ctx.emit("batchnorm_grad_input", [dy, x, gamma, mean, invstd], wrt=0)
    dgamma, dbeta = ctx.emit_multi("batchnorm_grad_params", [dy, x, mean, invstd], wrt=1)
    return [dx, dgamma, dbeta, None, None]


def _bn_xhat(x, mean, invstd):
    v = _bn_view(x.ndim)
    return (x.astype(np.float64) - mean.reshape(v)) * invstd.reshape(v)


def _bn_grad_input_kernel(xs, attrs):
    dy, x, gamma, mean, invstd = xs
    v = _bn_view(x.ndim)
    axes = _bn_axes(x.ndim)
    n = x.size // x.shape[1]
    xhat = _bn_xhat(x, mean, invstd)
    g = dy.astype(np.float64) * gamma.reshape(v)
    return [_bn_dx(g, xhat, invstd, n, g.sum(axis=axes), (g * xhat).sum(axis=axes), dy.dtype)]


def _bn_dx(g, xhat, invstd, n: int, sum_g, dot_g, dtype) -> np.ndarray:
    """dx = invstd / n * (n*g - sum(g) - xhat * sum(g*xhat)), g = dy * gamma (per channel sums)."""
    v = _bn_view(g.ndim)
    dx = (invstd.reshape(v) / n) * (n * g - sum_g.reshape(v) - xhat * dot_g.reshape(v))
    return dx.astype(dtype)


def _bn_grad_params_kernel(xs, attrs):
    dy, x, mean, invstd = xs
    axes = _bn_axes(x.ndim)
    d64 = dy.astype(np.float64)
    return [(d64 * _bn_xhat(x, mean, invstd)).sum(axis=axes).astype(dy.dtype),
            d64.sum(axis=axes).astype(dy.dtype)]


def _bn_grad_kernel(xs, attrs):
    if len(xs) == 6:                     # the sums came with dy (passes/fusion.py)
        dy, x, gamma, mean, invstd, sums = xs
        s = sums.astype(np.float64) * gamma.astype(np.float64).reshape(-1, 1)
        g = dy.astype(np.float64) * gamma.reshape(_bn_view(x.ndim))
        dx = _bn_dx(g, _bn_xhat(x, mean, invstd), invstd, x.size // x.shape[1], s[:, 0],
                    s[:, 1], dy.dtype)
        return [dx, sums[:, 1].copy(), sums[:, 0].copy()]
    dy, x, gamma, mean, invstd = xs
    return _bn_grad_input_kernel(xs, attrs) + _bn_grad_params_kernel([dy, x, mean, invstd], attrs)


def _bn_grad_infer(ts, attrs):
    expect(len(ts) in (5, 6), f"batchnorm_grad takes dy, x, gamma, mean, invstd and optionally "
                              f"the sums [C, 2], got {len(ts)} inputs")
    c = ts[1].shape[1]
    expect(len(ts) == 5 or tuple(ts[5].shape) == (c, 2),
           f"batchnorm_grad sums must be ({c}, 2), got {ts[5].shape if len(ts) > 5 else ()}")
    return [ts[1], TensorType((c,), "float32"), TensorType((c,), "float32")]


def _bn_relu_infer(ts, attrs):
    expect(attrs.get("training") is True, "batchnorm_relu fuses a training-mode batchnorm")
    expect(len(ts) in (5, 6), f"batchnorm_relu takes x, gamma, beta, running_mean, running_var "
                              f"and an optional residual, got {len(ts)} inputs")
    out = _bn_infer(ts[:5], attrs)
    if len(ts) == 6:
        expect(ts[5].shape == ts[0].shape, f"batchnorm_relu residual must be {ts[0].shape}, "
                                           f"got {ts[5].shape}")
    return out


def _bn_relu_kernel(xs, attrs):
    y, *stats = _bn_kernel(xs[:5], attrs)
    if len(xs) == 6:
        y = y + xs[5]
    return [np.maximum(y, 0).astype(y.dtype), *stats]


register("batchnorm", infer=_bn_infer, kernel=_bn_kernel, grad=_bn_grad,
         doc="batch normalisation over all axes but 1 (attrs training, momentum, eps)")
register("batchnorm_grad_input", infer=lambda ts, a: [ts[1]], kernel=_bn_grad_input_kernel,
         doc="dx of training-mode batchnorm from (dy, x, gamma, mean, invstd)")
register("batchnorm_grad_params",
         infer=lambda ts, a: [TensorType((ts[1].shape[1],), "float32")] * 2,
         kernel=_bn_grad_params_kernel, doc="(dgamma, dbeta) from (dy, x, mean, invstd)")
register("batchnorm_grad",
         infer=_bn_grad_infer,
         kernel=_bn_grad_kernel,
         doc="(dx, dgamma, dbeta) of training-mode batchnorm from (dy, x, gamma, mean, invstd): "
             "batchnorm_grad_input and batchnorm_grad_params in one node (passes/fusion.py); an "
             "optional sixth input [C, 2] holds sum(dy) and sum(dy * xhat) per channel, computed "
             "by dy's producer (fuse_batchnorm_grad_stats)")
register("batchnorm_relu", infer=_bn_relu_infer, kernel=_bn_relu_kernel,
         doc="relu(batchnorm(x) [+ residual]) with batchnorm's statistics outputs: a training-mode "
             "batchnorm, the residual add and the relu after it in one node (passes/fusion.py)")


# ------------------------------------------------------------------ layernorm
def _ln_axes(x_ndim: int, attrs) -> tuple[int, ...]:
    return tuple(range(x_ndim - attrs["ndim"], x_ndim))


def _ln_infer(ts, attrs):
    x, gamma, beta = ts
    k = attrs["ndim"]
    expect(1 <= k <= x.rank, f"layernorm ndim {k} out of range for input {x.shape}")
    norm = x.shape[x.rank - k:]
    expect(gamma.shape == norm and beta.shape == norm,
           f"layernorm gamma/beta {gamma.shape}/{beta.shape} must be {norm}")
    stat = TensorType(x.shape[:x.rank - k] + (1,) * k, "float32")
    return [x, stat, stat]


def _ln_kernel(xs, attrs):
    x, gamma, beta = xs
    axes = _ln_axes(x.ndim, attrs)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    invstd = 1.0 / np.sqrt(x64.var(axis=axes, keepdims=True) + attrs["eps"])
    y = (x64 - mean) * invstd * gamma + beta
    return [y.astype(x.dtype), mean.astype(x.dtype), invstd.astype(x.dtype)]


def _ln_grad(ctx, node, dys):
    dy = dys[0]
    x, gamma = node.inputs[0], node.inputs[1]
    mean, invstd = node.outputs[1], node.outputs[2]
    dx = ctx.emit("layernorm_grad_input", [dy, x, gamma, mean, invstd], {"ndim": node.attrs["ndim"]}, wrt=0)
    dgamma, dbeta = ctx.emit_multi("layernorm_grad_params", [dy, x, mean, invstd],
                                   {"ndim": node.attrs["ndim"]}, wrt=1)
    return [dx, dgamma, dbeta]


def _ln_grad_input_kernel(xs, attrs):
    dy, x, gamma, mean, invstd = xs
    axes = _ln_axes(x.ndim, attrs)
    d = int(np.prod([x.shape[a] for a in axes]))
    xhat = (x.astype(np.float64) - mean) * invstd
    g = dy.astype(np.float64) * gamma
    dx = (invstd / d) * (d * g - g.sum(axis=axes, keepdims=True)
                         - xhat * (g * xhat).sum(axis=axes, keepdims=True))
    return [dx.astype(dy.dtype)]


def _ln_grad_params_kernel(xs, attrs):
    dy, x, mean, invstd = xs
    lead = tuple(range(x.ndim - attrs["ndim"]))
    d64 = dy.astype(np.float64)
    xhat = (x.astype(np.float64) - mean) * invstd
    return [(d64 * xhat).sum(axis=lead).astype(dy.dtype), d64.sum(axis=lead).astype(dy.dtype)]


def _ln_params_infer(ts, attrs):
    norm = ts[1].shape[ts[1].rank - attrs["ndim"]:]
    return [TensorType(norm, "float32")] * 2


def _ln_grad_infer(ts, attrs):
    expect(len(ts) >= 5, f"layernorm_grad takes dy, x, gamma, mean, invstd and optional terms, "
                         f"got {len(ts)} inputs")
    for t in ts[5:]:
        expect(t.shape == ts[1].shape, f"layernorm_grad term must be {ts[1].shape}, got {t.shape}")
    return [ts[1], *_ln_params_infer(ts, attrs)]


def _ln_grad_kernel(xs, attrs):
    dy, x, gamma, mean, invstd, *terms = xs
    (dx,) = _ln_grad_input_kernel(xs[:5], attrs)
    for t in terms:
        dx = dx + t
    return [dx.astype(dy.dtype), *_ln_grad_params_kernel([dy, x, mean, invstd], attrs)]


register("layernorm", infer=_ln_infer, kernel=_ln_kernel, grad=_ln_grad,
         doc="layer normalisation over the last 'ndim' axes (attr eps)")
register("layernorm_grad_input", infer=lambda ts, a: [ts[1]], kernel=_ln_grad_input_kernel,
         doc="dx of layernorm from (dy, x, gamma, mean, invstd)")
register("layernorm_grad_params", infer=_ln_params_infer, kernel=_ln_grad_params_kernel,
         doc="(dgamma, dbeta) of layernorm from (dy, x, mean, invstd)")
register("layernorm_grad", infer=_ln_grad_infer, kernel=_ln_grad_kernel,
         doc="(dx + sum(terms), dgamma, dbeta) of layernorm from (dy, x, gamma, mean, invstd, "
             "*terms): layernorm_grad_input, layernorm_grad_params and the gradient sum that "
             "reads dx in one node (passes/fusion.py)")
