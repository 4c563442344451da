"""GEMM-class ops: conv2d and matmul, their gradients, and bias_add.

Attributes of every conv op: ``stride`` [sh, sw], ``padding`` [top, left,
bottom, right], ``dilation`` [dh, dw], ``groups``. The gradient ops also
carry the shape they produce (``input_shape`` / ``weight_shape``).
"""

from __future__ import annotations

import numpy as np

from satc.ir.ops.registry import expect, register
from satc.ir.ops.tensor import gelu_kernel
from satc.ir.ops.window import fold, out_size, windows
from satc.ir.types import TensorType

CONV_ATTRS = ("stride", "padding", "dilation", "groups")


def conv_geometry(x_shape, w_shape, attrs) -> tuple[int, int]:
    """Output (Ho, Wo) of a conv with input ``x_shape`` and weight ``w_shape``."""
    pt, pl, pb, pr = attrs["padding"]
    sh, sw = attrs["stride"]
    dh, dw = attrs["dilation"]
    return (out_size(x_shape[2], w_shape[2], sh, pt, pb, dh),
            out_size(x_shape[3], w_shape[3], sw, pl, pr, dw))


def _check_conv(x_shape, w_shape, attrs) -> tuple[int, int]:
    expect(len(x_shape) == 4, f"conv2d input must be NCHW, got shape {x_shape}")
    expect(len(w_shape) == 4, f"conv2d weight must be [Co, Ci/groups, kh, kw], got {w_shape}")
    expect(len(attrs["stride"]) == 2 and len(attrs["padding"]) == 4 and len(attrs["dilation"]) == 2,
           "conv2d needs stride [2], padding [4] (top, left, bottom, right), dilation [2]")
    g = attrs["groups"]
    expect(g >= 1 and x_shape[1] == w_shape[1] * g and w_shape[0] % g == 0,
           f"conv2d channels do not fit: input {x_shape}, weight {w_shape}, groups {g}")
    ho, wo = conv_geometry(x_shape, w_shape, attrs)
    expect(ho > 0 and wo > 0, f"conv2d output would be empty for input {x_shape}, weight {w_shape}")
    return ho, wo


def _geom(attrs):
    return tuple(attrs["stride"]), tuple(attrs["padding"]), tuple(attrs["dilation"]), attrs["groups"]


def _cols(x: np.ndarray, w_shape, attrs) -> np.ndarray:
    """im2col of x grouped as (N, g, Ci/g * kh * kw, Ho * Wo)."""
    stride, pads, dil, g = _geom(attrs)
    ho, wo = conv_geometry(x.shape, w_shape, attrs)
    win = windows(x, (w_shape[2], w_shape[3]), stride, pads, dil, 0.0, (ho, wo))
    n = x.shape[0]
    return win.reshape(n, g, -1, ho * wo)


def conv2d_kernel(xs, attrs):
    """Forward conv (cross-correlation, like torch) as a grouped GEMM over im2col; a third
    input is a per-channel bias (``fuse_matmul_bias`` folds a conv's bias_add in)."""
    x, w = xs[:2]
    co, g = w.shape[0], attrs["groups"]
    ho, wo = conv_geometry(x.shape, w.shape, attrs)
    y = np.matmul(w.reshape(g, co // g, -1)[None], _cols(x, w.shape, attrs))
    y = y.reshape(x.shape[0], co, ho, wo)
    return [y + xs[2].reshape(1, co, 1, 1) if len(xs) > 2 else y]


def conv2d_grad_weight_kernel(xs, attrs):
    """dW = dY X^T per group, summed over batch and space."""
    dy, x = xs
    wshape = tuple(attrs["weight_shape"])
    g, co = attrs["groups"], wshape[0]
    cols = _cols(x, wshape, attrs)                       # N, g, K, L
    n, _, k, l_ = cols.shape
    dyg = dy.reshape(n, g, co // g, l_).transpose(1, 2, 0, 3).reshape(g, co // g, n * l_)
    colsg = cols.transpose(1, 0, 3, 2).reshape(g, n * l_, k)
    return [np.matmul(dyg, colsg).reshape(wshape)]


def conv2d_grad_input_kernel(xs, attrs):
    """dX = W^T dY per group, folded back onto the input (col2im); with attr ``relu_grad``
    (passes/fusion.py) the relu_grad of (dX + terms...) by y = xs[2], terms = xs[3:]."""
    dy, w = xs[:2]
    xshape = tuple(attrs["input_shape"])
    stride, pads, dil, g = _geom(attrs)
    co, cig, kh, kw = w.shape
    n, _, ho, wo = dy.shape
    wt = w.reshape(g, co // g, cig * kh * kw).transpose(0, 2, 1)
    dcols = np.matmul(wt[None], dy.reshape(n, g, co // g, ho * wo))
    dcols = dcols.reshape(n, g * cig, kh, kw, ho, wo)
    dx = np.ascontiguousarray(fold(dcols, xshape[2:], stride, pads, dil))
    if not attrs.get("relu_grad"):
        return [dx]
    stats = 3 if attrs.get("bn_stats") else 0
    dx = np.where(xs[2] > 0, sum(xs[3 + stats:], dx), 0).astype(dy.dtype)
    if not stats:
        return [dx]
    x, mean, invstd = xs[3:6]
    xhat = (x.astype(np.float64) - mean.reshape(1, -1, 1, 1)) * invstd.reshape(1, -1, 1, 1)
    d64 = dx.astype(np.float64)
    sums = np.stack([d64.sum(axis=(0, 2, 3)), (d64 * xhat).sum(axis=(0, 2, 3))], axis=1)
    return [dx, sums.astype(dy.dtype)]


def _conv_infer(ts, attrs):
    expect(len(ts) in (2, 3), f"conv2d takes x, w and optionally a bias, got {len(ts)} inputs")
    x, w = ts[:2]
    ho, wo = _check_conv(x.shape, w.shape, attrs)
    expect(len(ts) == 2 or ts[2].shape == (w.shape[0],),
           f"conv2d bias {ts[2].shape if len(ts) > 2 else ()} must be ({w.shape[0]},)")
    return [TensorType((x.shape[0], w.shape[0], ho, wo), x.dtype)]


def _conv_grad(ctx, node, dys):
    (dy,) = dys
    x, w = node.inputs[:2]
    attrs = {k: node.attrs[k] for k in CONV_ATTRS}
    dx = ctx.emit("conv2d_grad_input", [dy, w], {**attrs, "input_shape": list(x.shape)}, wrt=0)
    dw = ctx.emit("conv2d_grad_weight", [dy, x], {**attrs, "weight_shape": list(w.shape)}, wrt=1)
    if len(node.inputs) > 2:
        return [dx, dw, ctx.emit("bias_grad", [dy], {"axis": 1}, wrt=2)]
    return [dx, dw]


def conv_macs(x_shape, w_shape, y_shape) -> int:
    """MACs of one conv (and of each of its two gradients): N*Co*Ho*Wo*Ci/g*kh*kw."""
    return int(np.prod(y_shape)) * w_shape[1] * w_shape[2] * w_shape[3]


def _grad_input_infer(ts, attrs):
    stats = 3 if attrs.get("bn_stats") else 0
    expect(len(ts) == 2 or (attrs.get("relu_grad") and len(ts) >= 3 + stats),
           f"conv2d_grad_input takes dy and w (and y, [x, mean, invstd with attr bn_stats,] "
           f"terms... with attr relu_grad), got {len(ts)} inputs")
    dy, w = ts[:2]
    xshape = tuple(attrs["input_shape"])
    expect(tuple(dy.shape[2:]) == _check_conv(xshape, w.shape, attrs),
           f"conv2d_grad_input: dy {dy.shape} does not match input {xshape} and weight {w.shape}")
    same = [*ts[2:3], *(ts[3:4] if stats else ()), *ts[3 + stats:]]
    expect(all(tuple(t.shape) == xshape for t in same),
           f"conv2d_grad_input: relu output, x and terms {[t.shape for t in same]} must be {xshape}")
    if not stats:
        return [TensorType(xshape, dy.dtype)]
    expect(all(tuple(t.shape) == (xshape[1],) for t in ts[4:6]),
           f"conv2d_grad_input: mean, invstd {[t.shape for t in ts[4:6]]} must be ({xshape[1]},)")
    return [TensorType(xshape, dy.dtype), TensorType((xshape[1], 2), dy.dtype)]


def _grad_weight_infer(ts, attrs):
    dy, x = ts
    wshape = tuple(attrs["weight_shape"])
    expect(tuple(dy.shape[2:]) == _check_conv(x.shape, wshape, attrs),
           f"conv2d_grad_weight: dy {dy.shape} does not match input {x.shape} and weight {wshape}")
    return [TensorType(wshape, dy.dtype)]


register("conv2d", infer=_conv_infer, kernel=conv2d_kernel, grad=_conv_grad,
         macs=lambda i, o, a: conv_macs(i[0].shape, i[1].shape, o[0].shape),
         doc="y = conv(x, w) (+ bias per channel): FF GEMM W_ff x X")
register("conv2d_grad_input", infer=_grad_input_infer, kernel=conv2d_grad_input_kernel,
         macs=lambda i, o, a: conv_macs(o[0].shape, i[1].shape, i[0].shape),
         doc="dx from (dy, w): BP GEMM W_bp^T x dY; attr relu_grad: relu_grad(dx, y, *terms) "
             "of inputs (dy, w, y, *terms), a relu_grad fused in; attr bn_stats: inputs (dy, w, "
             "y, x, mean, invstd, *terms) and a second output [C, 2], per channel sum(dx) and "
             "sum(dx * xhat) of the batchnorm that reads dx (passes/fusion.py)")
register("conv2d_grad_weight", infer=_grad_weight_infer, kernel=conv2d_grad_weight_kernel,
         macs=lambda i, o, a: conv_macs(i[1].shape, o[0].shape, i[0].shape),
         doc="dw from (dy, x): WU GEMM dY x X^T")


# ------------------------------------------------------------------ matmul
def _mm_operands(a, b, attrs):
    ta, tb = attrs.get("trans_a", False), attrs.get("trans_b", False)
    a2 = np.swapaxes(a, -1, -2) if ta else a
    b2 = np.swapaxes(b, -1, -2) if tb else b
    return a2, b2


def _mm_infer(ts, attrs):
    a, b = ts
    expect(a.rank >= 2 and b.rank >= 2, f"matmul needs rank >= 2 operands, got {a.shape} and {b.shape}")
    sa = list(a.shape)
    sb = list(b.shape)
    if attrs.get("trans_a", False):
        sa[-1], sa[-2] = sa[-2], sa[-1]
    if attrs.get("trans_b", False):
        sb[-1], sb[-2] = sb[-2], sb[-1]
    expect(sa[-1] == sb[-2], f"matmul inner dims differ: {a.shape} x {b.shape} (trans_a="
           f"{attrs.get('trans_a', False)}, trans_b={attrs.get('trans_b', False)})")
    try:
        batch = tuple(np.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2])))
    except ValueError:
        expect(False, f"matmul batch dims do not broadcast: {a.shape} x {b.shape}")
    return [TensorType(_stored_shape(batch + (sa[-2], sb[-1]), attrs), a.dtype)]


def _stored_shape(shape: tuple[int, ...], attrs) -> tuple[int, ...]:
    """The output shape after the layout attrs ``split_heads`` / ``merge_heads``."""
    h = attrs.get("split_heads")
    if h:
        expect(len(shape) == 3 and shape[2] % h == 0,
               f"matmul split_heads={h} needs a [B, T, F] product with F % {h} == 0, got {shape}")
        return (shape[0], h, shape[1], shape[2] // h)
    if attrs.get("merge_heads"):
        expect(len(shape) == 4, f"matmul merge_heads needs a [B, H, T, d] product, got {shape}")
        return (shape[0], shape[2], shape[1], shape[3])
    return shape


def _stored(y: np.ndarray, attrs) -> np.ndarray:
    """The product as stored: [B, T, F] -> [B, H, T, F/H] (split_heads = H), or
    [B, H, T, d] -> [B, T, H, d] (merge_heads), as the fold of the attention head
    reshape / transpose into the GEMM's store (passes/layout.py)."""
    h = attrs.get("split_heads")
    if h:
        b, t, f = y.shape
        return np.ascontiguousarray(y.reshape(b, t, h, f // h).transpose(0, 2, 1, 3))
    if attrs.get("merge_heads"):
        return np.ascontiguousarray(y.transpose(0, 2, 1, 3))
    return y


def _mm_kernel(xs, attrs):
    a, b = _mm_operands(xs[0], xs[1], attrs)
    y = np.matmul(a, b)
    alpha = attrs.get("alpha", 1.0)
    return [_stored(y if alpha == 1.0 else y * np.asarray(alpha, y.dtype), attrs)]


def _mm_grad(ctx, node, dys):
    (dy,) = dys
    expect(not node.attrs.get("split_heads") and not node.attrs.get("merge_heads")
           and node.attrs.get("alpha", 1.0) == 1.0,
           f"matmul {node.name}: no gradient rule for a stored layout or a folded scale "
           "(split_heads / merge_heads / alpha are folded after autodiff); differentiate the "
           "graph before the fold")
    a, b = node.inputs
    ta, tb = node.attrs.get("trans_a", False), node.attrs.get("trans_b", False)
    if b.type.rank == 2 and a.type.rank > 2 and not ta:
        # a weight shared over a batch of rows: do its gradient as one 2-D GEMM
        a2 = ctx.emit("reshape", [a], {"shape": [int(np.prod(a.shape[:-1])), a.shape[-1]]}, wrt=1)
        dy2 = ctx.emit("reshape", [dy], {"shape": [int(np.prod(dy.shape[:-1])), dy.shape[-1]]}, wrt=1)
        db = (ctx.emit("matmul", [dy2, a2], {"trans_a": True}, wrt=1) if tb
              else ctx.emit("matmul", [a2, dy2], {"trans_a": True}, wrt=1))
    elif tb:
        db = ctx.emit("matmul", [dy, a], {"trans_a": True, "trans_b": ta}, wrt=1)
    else:
        db = ctx.emit("matmul", [a, dy], {"trans_a": not ta}, wrt=1)
    if ta:
        da = ctx.emit("matmul", [b, dy], {"trans_a": tb, "trans_b": True}, wrt=0)
    else:
        da = ctx.emit("matmul", [dy, b], {"trans_b": not tb}, wrt=0)
    out = []
    for i, (g, v) in enumerate(((da, a), (db, b))):
        out.append(g if g is None or g.shape == v.shape else ctx.emit("sum_to", [g], {"shape": list(v.shape)}, wrt=i))
    return out


def _mm_macs(ins, outs, attrs) -> int:
    k = ins[0].shape[-2] if attrs.get("trans_a", False) else ins[0].shape[-1]
    return outs[0].numel * k


register("matmul", infer=_mm_infer, kernel=_mm_kernel, grad=_mm_grad, macs=_mm_macs,
         doc="batched a @ b with optional transposes of the last two axes; attr alpha: "
             "alpha * (a @ b), a scale folded in (passes/fusion.py fold_matmul_scales)")


def _mm_bias_infer(ts, attrs):
    expect(len(ts) in (3, 4), f"matmul_bias takes a, b, a bias and optionally a residual, got "
                              f"{len(ts)} inputs")
    (y,) = _mm_infer(ts[:2], {k: v for k, v in attrs.items() if k != "split_heads"})
    expect(ts[2].rank == 1 and ts[2].shape[0] == y.shape[-1],
           f"matmul_bias bias {ts[2].shape} must be ({y.shape[-1]},), the last axis of {y.shape}")
    out = TensorType(_stored_shape(y.shape, attrs), y.dtype)
    expect(len(ts) == 3 or (ts[3].shape == out.shape and not attrs.get("split_heads")
                            and not attrs.get("merge_heads")),
           f"matmul_bias residual {ts[3].shape if len(ts) > 3 else ()} must have the product's "
           f"shape {out.shape} (and a row-major store)")
    expect(not attrs.get("gelu") or len(ts) == 3, "matmul_bias with a gelu epilogue takes no residual")
    return [out, out] if attrs.get("gelu") else [out]


def _mm_bias_kernel(xs, attrs):
    a, b = _mm_operands(xs[0], xs[1], attrs)
    y = _stored(np.matmul(a, b) + xs[2], attrs)
    if attrs.get("gelu"):
        return [y, gelu_kernel([y], {})[0]]
    return [y + xs[3] if len(xs) > 3 else y]


def _mm_bias_grad_infer(ts, attrs):
    expect(attrs.get("trans_a") is True and not attrs.get("trans_b", False)
           and len(ts) == 2 and ts[0].rank == 2 and ts[1].rank == 2,
           "matmul_bias_grad takes 2-D dy [K, M] and x [K, N] with trans_a (dW = dy^T x)")
    (dw,) = _mm_infer(ts, attrs)
    return [dw, TensorType((ts[0].shape[1],), ts[0].dtype)]


def _mm_bias_grad_kernel(xs, attrs):
    (dw,) = _mm_kernel(xs, attrs)
    return [dw, xs[0].sum(axis=0).astype(xs[0].dtype)]


register("matmul_bias", infer=_mm_bias_infer, kernel=_mm_bias_kernel,
         macs=lambda ins, outs, attrs: _mm_macs(ins[:2], outs, attrs),
         doc="a @ b + bias along the last axis (+ a residual of the product's shape): a matmul "
             "and the bias_add (and residual add) after it in one node, the bias (or the "
             "residual, with the bias added on chip) loaded into the accumulators before the "
             "GEMM; attr gelu: a second output gelu(a @ b + bias), computed from the C tile "
             "(passes/fusion.py)")
register("matmul_bias_grad", infer=_mm_bias_grad_infer, kernel=_mm_bias_grad_kernel,
         macs=_mm_macs,
         doc="(dW, db) = (dy^T x, dy summed over rows) of a Linear with a bias: its weight-gradient "
             "matmul and its bias_grad in one node, db summed from the dy tiles the GEMM loads "
             "(passes/fusion.py)")


# ------------------------------------------------------------------ bias
def _bias_infer(ts, attrs):
    x, b = ts
    ax = attrs["axis"] % x.rank
    expect(b.rank == 1 and b.shape[0] == x.shape[ax],
           f"bias {b.shape} does not match axis {ax} of {x.shape}")
    return [x]


def _bias_view(x_ndim: int, axis: int) -> tuple[int, ...]:
    shape = [1] * x_ndim
    shape[axis % x_ndim] = -1
    return tuple(shape)


def _bias_kernel(xs, attrs):
    x, b = xs
    return [x + b.reshape(_bias_view(x.ndim, attrs["axis"]))]


def _bias_grad_kernel(xs, attrs):
    dy = xs[0]
    ax = attrs["axis"] % dy.ndim
    return [dy.sum(axis=tuple(i for i in range(dy.ndim) if i != ax)).astype(dy.dtype)]


def _bias_grad_infer(ts, attrs):
    return [TensorType((ts[0].shape[attrs["axis"] % ts[0].rank],), ts[0].dtype)]


register("bias_add", infer=_bias_infer, kernel=_bias_kernel,
         grad=lambda ctx, node, dys: [dys[0], ctx.emit("bias_grad", [dys[0]], {"axis": node.attrs["axis"]}, wrt=1)],
         doc="x + b along one axis (conv: 1, linear: -1)")
register("bias_grad", infer=_bias_grad_infer, kernel=_bias_grad_kernel,
         doc="db: dy summed over every axis but 'axis'")
