"""The vector unit's function table: one row per function of the ``vec`` opcode.

Each :class:`VecFunc` says which sources it reads, the shape of ``s1`` and of
the result, its numpy kernel (fp32 in, fp32 out) and its work in lane
operations for the cycle model. The ISA takes its ``func`` enum from the
order of :data:`VEC_FUNCS`; the emulator and the timing model look rows up
by name. Kernels work along the last axis; the emulator transposes for
``axis=0``.

Shapes: ``s0`` is ``rows x cols``. ``s1`` is ``rows x cols`` broadcast per
the instruction's ``bcast`` field (``like_s0``) or the pooled shape
(``pooled``). The result is ``rows x cols`` (``same``), ``rows x 1`` /
``1 x cols`` for ``axis`` 1 / 0 (``reduce``), ``rows x 2`` / ``2 x cols`` (``reduce_pair``:
two reductions side by side),
``((rows-kh)//sh+1) x ((cols-kw)//sw+1)`` (``pooled``) or ``cols x rows``
(``transposed``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy.special import erf

Kernel = Callable[[np.ndarray, np.ndarray | None, Any], np.ndarray]


@dataclass(frozen=True)
class VecFunc:
    """One vector-unit function."""

    name: str
    sources: tuple[str, ...]          # which of "s0", "s1" it reads
    s1_shape: str                     # "like_s0" (bcast applies), "pooled" or "pair" (bcast: 2 values)
    out_shape: str                    # "same", "reduce", "reduce_pair", "pooled", "transposed"
    kernel: Kernel
    passes: int                       # element passes over s0 (pooled: per window element)
    doc: str


def pooled_shape(rows: int, cols: int, kh: int, kw: int, sh: int, sw: int) -> tuple[int, int]:
    """Output shape of a kh x kw window with strides sh, sw over a rows x cols tile."""
    return (rows - kh) // sh + 1, (cols - kw) // sw + 1


def _windows(p: Any):
    """Yield (u, v, slices) per window offset: x[slices][i, j] = x[i*sh + u, j*sw + v]."""
    oh, ow = pooled_shape(p.rows, p.cols, p.kh, p.kw, p.sh, p.sw)
    for u in range(p.kh):
        for v in range(p.kw):
            yield u, v, (slice(u, u + p.sh * (oh - 1) + 1, p.sh), slice(v, v + p.sw * (ow - 1) + 1, p.sw))


def _maxpool(x, _, p):
    out = None
    for _u, _v, sl in _windows(p):
        out = x[sl].copy() if out is None else np.maximum(out, x[sl])
    return out


def _avgpool(x, _, p):
    out = None
    for _u, _v, sl in _windows(p):
        out = x[sl].astype(np.float32) if out is None else out + x[sl]
    return out * np.float32(1.0 / (p.kh * p.kw))


def _maxpool_grad(x, dy, p):
    best = best_off = None
    for u, v, sl in _windows(p):
        off = u * p.kw + v
        if best is None:
            best, best_off = x[sl].copy(), np.zeros(x[sl].shape, np.int64)
        else:
            win = x[sl] > best      # strict: the first maximum in window order wins
            best = np.where(win, x[sl], best)
            best_off = np.where(win, off, best_off)
    dx = np.zeros((p.rows, p.cols), np.float32)
    for u, v, sl in _windows(p):
        dx[sl] += np.where(best_off == u * p.kw + v, dy, np.float32(0))
    return dx


def _avgpool_grad(x, dy, p):
    dx = np.zeros((p.rows, p.cols), np.float32)
    g = dy * np.float32(1.0 / (p.kh * p.kw))
    for _u, _v, sl in _windows(p):
        dx[sl] += g
    return dx


def _log_softmax(x):
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _softmax(x, _, p):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _phi_cdf(x):
    x64 = x.astype(np.float64)
    return 0.5 * (1.0 + erf(x64 / math.sqrt(2.0)))


def _gelu(x, _, p):
    return (x.astype(np.float64) * _phi_cdf(x)).astype(np.float32)


def _gelu_grad(x, dy, p):
    x64 = x.astype(np.float64)
    pdf = np.exp(-0.5 * x64 * x64) / math.sqrt(2.0 * math.pi)
    return (dy * (_phi_cdf(x) + x64 * pdf)).astype(np.float32)


def _sigmoid(x, _, p):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, np.float32(1) / (1 + e), e / (1 + e)).astype(np.float32)


def _silu_grad(x, dy, p):
    s = _sigmoid(x, None, p)
    return dy * s * (1 + x * (1 - s))


def _hardswish(x, _, p):
    return x * np.clip(x + np.float32(3), np.float32(0), np.float32(6)) / np.float32(6)


def _hardswish_grad(x, dy, p):
    slope = np.where(x <= -3, np.float32(0), np.where(x < 3, x / np.float32(3) + np.float32(0.5),
                                                     np.float32(1)))
    return (dy * slope).astype(np.float32)


def _elu(x, _, p):
    neg = np.expm1(np.minimum(x, np.float32(0)))     # the min only keeps exp from overflowing
    return np.where(x > 0, x, neg * np.float32(p.imm)).astype(np.float32)


def _elu_grad(x, dy, p):
    neg = dy * np.exp(np.minimum(x, np.float32(0))) * np.float32(p.imm)
    return np.where(x > 0, dy, neg).astype(np.float32)


def _softplus(x, _, p):
    return np.where(x > np.float32(p.imm), x, np.logaddexp(np.float32(0), x)).astype(np.float32)


def _softplus_grad(x, dy, p):
    return np.where(x > np.float32(p.imm), dy, dy * _sigmoid(x, None, p)).astype(np.float32)


def _affine(x, ab, p):
    if p.bcast == "col":
        return x * ab[:, :1] + ab[:, 1:]
    return x * ab[:1] + ab[1:]


def _mul_imm(x, _, p):
    with np.errstate(over="ignore"):                  # IEEE: overflow is +-inf, as in hardware
        return x * np.float32(p.imm)


def _pow_imm(x, imm):
    e = float(imm)
    return np.power(x, int(e) if e.is_integer() else np.float32(e)).astype(np.float32)


def _f(name, sources, kernel, doc, passes=1, s1_shape="like_s0", out_shape="same"):
    return VecFunc(name, sources, s1_shape, out_shape, kernel, passes, doc)


S0, S01 = ("s0",), ("s0", "s1")

VEC_FUNCS: tuple[VecFunc, ...] = (
    _f("copy", S0, lambda x, _, p: x, "d = s0 (also casts between fp32 and fp16)"),
    _f("add", S01, lambda x, y, p: x + y, "d = s0 + s1"),
    _f("sub", S01, lambda x, y, p: x - y, "d = s0 - s1"),
    _f("mul", S01, lambda x, y, p: x * y, "d = s0 * s1"),
    _f("add_imm", S0, lambda x, _, p: x + np.float32(p.imm), "d = s0 + imm"),
    _f("mul_imm", S0, _mul_imm, "d = s0 * imm (overflows to +-inf)"),
    _f("relu", S0, lambda x, _, p: np.maximum(x, np.float32(0)), "d = max(s0, 0)"),
    _f("relu_grad", S01, lambda x, y, p: np.where(x > 0, y, np.float32(0)),
       "d = s1 where s0 > 0 else 0 (s0: forward input, s1: upstream grad)"),
    _f("gelu", S0, _gelu, "d = s0 * Phi(s0) (exact erf GELU)"),
    _f("gelu_grad", S01, _gelu_grad, "d = s1 * (Phi(s0) + s0 * phi(s0))"),
    _f("rsqrt", S0, lambda x, _, p: np.float32(1) / np.sqrt(x + np.float32(p.imm)),
       "d = 1 / sqrt(s0 + imm) (imm: epsilon of batchnorm / layernorm)"),
    _f("exp", S0, lambda x, _, p: np.exp(x), "d = exp(s0)"),
    _f("reduce_sum", S0, lambda x, _, p: x.sum(axis=-1, keepdims=True),
       "d = sum of s0 along axis", out_shape="reduce"),
    _f("reduce_max", S0, lambda x, _, p: x.max(axis=-1, keepdims=True),
       "d = max of s0 along axis", out_shape="reduce"),
    _f("reduce_sumsq", S0, lambda x, _, p: (x * x).sum(axis=-1, keepdims=True),
       "d = sum of s0^2 along axis (variance pieces)", out_shape="reduce"),
    _f("softmax", S0, _softmax, "d = softmax(s0) along axis", passes=3),
    _f("xent", S01, lambda x, y, p: -(y * _log_softmax(x)).sum(axis=-1, keepdims=True),
       "d = -sum(s1 * log_softmax(s0)) along axis (s0: logits, s1: target probabilities)",
       passes=3, out_shape="reduce"),
    _f("xent_grad", S01, lambda x, y, p: (_softmax(x, None, p) - y) * np.float32(p.imm),
       "d = (softmax(s0) - s1) * imm along axis (imm: 1/batch)", passes=3),
    _f("maxpool", S0, _maxpool, "d = max over each kh x kw window (strides sh, sw) of s0",
       out_shape="pooled"),
    _f("avgpool", S0, _avgpool, "d = mean over each kh x kw window (strides sh, sw) of s0",
       out_shape="pooled"),
    _f("maxpool_grad", S01, _maxpool_grad,
       "d[rows x cols] = s1 (pooled grad) routed to the first maximum of s0 in each window",
       s1_shape="pooled"),
    _f("avgpool_grad", ("s1",), _avgpool_grad,
       "d[rows x cols] = s1 (pooled grad) / (kh*kw) spread over each window", s1_shape="pooled"),
    _f("sigmoid", S0, _sigmoid, "d = 1 / (1 + exp(-s0))"),
    _f("sigmoid_grad", S01, lambda y, dy, p: dy * y * (1 - y),
       "d = s1 * s0 * (1 - s0) (s0: sigmoid output, s1: upstream grad)"),
    _f("tanh", S0, lambda x, _, p: np.tanh(x), "d = tanh(s0)"),
    _f("tanh_grad", S01, lambda y, dy, p: dy * (1 - y * y),
       "d = s1 * (1 - s0^2) (s0: tanh output, s1: upstream grad)"),
    _f("silu", S0, lambda x, _, p: x * _sigmoid(x, None, p), "d = s0 * sigmoid(s0) (SiLU)"),
    _f("silu_grad", S01, _silu_grad,
       "d = s1 * s * (1 + s0 * (1 - s)), s = sigmoid(s0) (s0: forward input)"),
    _f("hardswish", S0, _hardswish, "d = s0 * clamp(s0 + 3, 0, 6) / 6"),
    _f("hardswish_grad", S01, _hardswish_grad,
       "d = s1 * (0 if s0 <= -3, s0/3 + 1/2 if s0 < 3, else 1) (s0: forward input)"),
    _f("max_imm", S0, lambda x, _, p: np.maximum(x, np.float32(p.imm)), "d = max(s0, imm)"),
    _f("min_imm", S0, lambda x, _, p: np.minimum(x, np.float32(p.imm)), "d = min(s0, imm)"),
    _f("pass_gt", S01, lambda x, y, p: np.where(x > np.float32(p.imm), y, np.float32(0)),
       "d = s1 where s0 > imm else 0 (clamp gradients)"),
    _f("pass_lt", S01, lambda x, y, p: np.where(x < np.float32(p.imm), y, np.float32(0)),
       "d = s1 where s0 < imm else 0 (clamp gradients)"),
    _f("affine", S01, _affine,
       "d = s0 * a + b, one multiply-add per element; s1 holds (a, b) per row (bcast col: "
       "rows x 2) or per column (bcast row: 2 x cols)", s1_shape="pair"),
    _f("reduce_dot", S01, lambda x, y, p: (x * y).sum(axis=-1, keepdims=True),
       "d = sum of s0 * s1 along axis, one multiply-add per element", out_shape="reduce"),
    _f("pow_imm", S0, lambda x, _, p: _pow_imm(x, p.imm),
       "d = s0 ^ imm (an integral imm: an integer power)"),
    _f("transpose", S0, lambda x, _, p: x.T,
       "d[cols x rows] = s0^T (axis 1; one element move per element, model)",
       out_shape="transposed"),
    _f("leaky_relu", S0, lambda x, _, p: np.where(x > 0, x, x * np.float32(p.imm)),
       "d = s0 if s0 > 0 else s0 * imm (imm: negative slope)"),
    _f("leaky_relu_grad", S01, lambda x, dy, p: np.where(x > 0, dy, dy * np.float32(p.imm)),
       "d = s1 if s0 > 0 else s1 * imm (s0: forward input, imm: negative slope)"),
    _f("elu", S0, _elu, "d = s0 if s0 > 0 else imm * (exp(s0) - 1) (imm: alpha)"),
    _f("elu_grad", S01, _elu_grad,
       "d = s1 if s0 > 0 else s1 * imm * exp(s0) (s0: forward input, imm: alpha)"),
    _f("softplus", S0, _softplus,
       "d = s0 if s0 > imm else log(1 + exp(s0)) (imm: threshold)"),
    _f("softplus_grad", S01, _softplus_grad,
       "d = s1 if s0 > imm else s1 * sigmoid(s0) (s0: forward input, imm: threshold)"),
    _f("log", S0, lambda x, _, p: np.log(x), "d = ln(s0) (-inf at 0, NaN below)"),
    _f("affine_relu", S01, lambda x, ab, p: np.maximum(_affine(x, ab, p), np.float32(0)),
       "d = max(s0 * a + b, 0): affine with a relu on its result (the batchnorm + relu "
       "epilogue); s1 as for affine", s1_shape="pair"),
    _f("reduce_sqdev", S01, lambda x, y, p: np.square(x - y).sum(axis=-1, keepdims=True),
       "d = sum of (s0 - s1)^2 along axis, s1 broadcast per bcast (a shifted sum of squares: "
       "variance pieces without cancellation)", out_shape="reduce"),
    _f("reduce_sum_dot", S01, lambda x, y, p: np.concatenate(
        [x.sum(axis=-1, keepdims=True), (x * y).sum(axis=-1, keepdims=True)], axis=-1),
       "d = (sum of s0, sum of s0 * s1) along axis: two accumulators over one read of both "
       "tiles (batchnorm backward's sum(dy) and sum(dy * xhat))", out_shape="reduce_pair"),
    _f("sub_scale", S01, lambda x, y, p: (x - y) * np.float32(p.imm),
       "d = (s0 - s1) * imm (with accumulate, the SR-STE term d += lam * (w - prune(w)))"),
    _f("log1p", S0, lambda x, _, p: np.log1p(x),
       "d = ln(1 + s0), exact for small s0 (-inf at -1, NaN below)"),
)

VEC_FUNC_NAMES: tuple[str, ...] = tuple(f.name for f in VEC_FUNCS)
VEC_FUNC_BY_NAME: dict[str, VecFunc] = {f.name: f for f in VEC_FUNCS}


def vec_work(func: VecFunc, rows: int, cols: int, p: Any) -> int:
    """Lane operations one instruction of ``func`` costs (the cycle model divides by lanes)."""
    if func.out_shape == "pooled" or func.s1_shape == "pooled":
        oh, ow = pooled_shape(rows, cols, p.kh, p.kw, p.sh, p.sw)
        return func.passes * oh * ow * p.kh * p.kw
    return func.passes * rows * cols
