"""Optimizer ops (stage OPT), matching torch.optim.SGD and torch.optim.AdamW.

sgd(w, g[, momentum_buffer]) -> (w'[, momentum_buffer'])
adamw(w, g, exp_avg, exp_avg_sq, step) -> (w', exp_avg', exp_avg_sq'), where
``step`` is the 1-based count of this update (a float32 scalar).
"""

from __future__ import annotations

import numpy as np

from satc.ir.ops.registry import expect, register


def _sgd_infer(ts, attrs):
    for t in ts[1:]:
        expect(t.shape == ts[0].shape, f"sgd operands differ in shape: {[x.shape for x in ts]}")
    expect((len(ts) == 3) == (attrs["momentum"] != 0), "sgd takes a momentum buffer iff momentum != 0")
    return list(ts[:1]) * (2 if len(ts) == 3 else 1)


def _sgd_kernel(xs, attrs):
    w, g = xs[0], xs[1]
    f = np.float32
    d = g + f(attrs["weight_decay"]) * w if attrs["weight_decay"] else g
    if attrs["momentum"] == 0:
        return [(w - f(attrs["lr"]) * d).astype(w.dtype)]
    buf = f(attrs["momentum"]) * xs[2] + f(1 - attrs.get("dampening", 0.0)) * d
    step = d + f(attrs["momentum"]) * buf if attrs.get("nesterov", False) else buf
    return [(w - f(attrs["lr"]) * step).astype(w.dtype), buf.astype(w.dtype)]


def _adamw_infer(ts, attrs):
    for t in ts[1:4]:
        expect(t.shape == ts[0].shape, f"adamw operands differ in shape: {[x.shape for x in ts]}")
    expect(ts[4].shape == (), f"adamw step must be a scalar, got {ts[4].shape}")
    return list(ts[:3])


def _adamw_kernel(xs, attrs):
    w, g, m, v, step = (x.astype(np.float64) for x in xs)
    lr, b1, b2 = attrs["lr"], attrs["beta1"], attrs["beta2"]
    w = w * (1 - lr * attrs["weight_decay"])
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    denom = np.sqrt(v) / np.sqrt(1 - b2 ** step) + attrs["eps"]
    w = w - (lr / (1 - b1 ** step)) * m / denom
    dt = xs[0].dtype
    return [w.astype(dt), m.astype(dt), v.astype(dt)]


def _sgd_macs(ins, outs, attrs) -> int:
    """Multiply-adds per element: weight decay, momentum, the step itself."""
    per = 1 + (attrs["weight_decay"] != 0) + (attrs["momentum"] != 0)
    return ins[0].numel * per


register("sgd", infer=_sgd_infer, kernel=_sgd_kernel, macs=_sgd_macs,
         doc="SGD with momentum, dampening, nesterov and L2 weight decay (torch semantics)")
register("adamw", infer=_adamw_infer, kernel=_adamw_kernel,
         macs=lambda i, o, a: i[0].numel * 5,  # decay, two moments, bias-corrected step
         doc="AdamW with decoupled weight decay (torch semantics)")
