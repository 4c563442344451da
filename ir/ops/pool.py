"""Pooling ops and their gradients: maxpool2d, avgpool2d, global_avgpool.

Window attrs: ``kernel`` [kh, kw], ``stride`` [sh, sw], ``padding`` [top,
left, bottom, right], ``dilation`` [dh, dw] (maxpool), ``ceil_mode``
(maxpool), ``count_include_pad`` (avgpool). Maxpool gradients go to the
first maximum of each window in row-major order, as torch does.
"""

from __future__ import annotations

import numpy as np

from satc.ir.ops.registry import expect, register
from satc.ir.ops.window import fold, out_size, windows
from satc.ir.types import TensorType


def _params(attrs):
    return (tuple(attrs["kernel"]), tuple(attrs["stride"]), tuple(attrs["padding"]),
            tuple(attrs.get("dilation", (1, 1))), bool(attrs.get("ceil_mode", False)))


def pool_out_hw(in_shape, attrs) -> tuple[int, int]:
    """Output (Ho, Wo) of a pooling window over an NCHW input shape."""
    k, s, p, d, ceil = _params(attrs)
    return (out_size(in_shape[2], k[0], s[0], p[0], p[2], d[0], ceil),
            out_size(in_shape[3], k[1], s[1], p[1], p[3], d[1], ceil))


def _pool_infer(ts, attrs):
    x = ts[0]
    expect(x.rank == 4, f"pooling input must be NCHW, got {x.shape}")
    k, s, p, d, _ = _params(attrs)
    expect(p[0] <= k[0] // 2 and p[1] <= k[1] // 2 and p[2] <= k[0] // 2 and p[3] <= k[1] // 2,
           f"pool padding {list(p)} must be at most half the kernel {list(k)}")
    ho, wo = pool_out_hw(x.shape, attrs)
    expect(ho > 0 and wo > 0, f"pool output would be empty for input {x.shape}")
    return [TensorType((x.shape[0], x.shape[1], ho, wo), x.dtype)]


def _max_windows(x, attrs):
    k, s, p, d, _ = _params(attrs)
    return windows(x, k, s, p, d, -np.inf, pool_out_hw(x.shape, attrs))


def _maxpool_kernel(xs, attrs):
    return [_max_windows(xs[0], attrs).max(axis=(2, 3))]


def _maxpool_grad_kernel(xs, attrs):
    dy, x = xs
    k, s, p, d, _ = _params(attrs)
    win = _max_windows(x, attrs)
    n, c, kh, kw, ho, wo = win.shape
    arg = win.reshape(n, c, kh * kw, ho, wo).argmax(axis=2)
    cols = np.zeros((n, c, kh * kw, ho, wo), dtype=dy.dtype)
    np.put_along_axis(cols, arg[:, :, None], dy[:, :, None], axis=2)
    return [np.ascontiguousarray(fold(cols.reshape(win.shape), x.shape[2:], s, p, d))]


register("maxpool2d", infer=_pool_infer, kernel=_maxpool_kernel,
         grad=lambda ctx, node, dys: [ctx.emit("maxpool2d_grad", [dys[0], node.inputs[0]], node.attrs)],
         doc="2-D max pooling")
register("maxpool2d_grad", infer=lambda ts, a: [ts[1]], kernel=_maxpool_grad_kernel,
         doc="dx of maxpool2d from (dy, x)")


def _avg_divisor(in_shape, attrs) -> np.ndarray:
    k, s, p, d, _ = _params(attrs)
    if attrs.get("count_include_pad", True):
        return np.float32(k[0] * k[1])
    ones = np.ones((1, 1) + tuple(in_shape[2:]), dtype=np.float32)
    return windows(ones, k, s, p, d, 0.0, pool_out_hw(in_shape, attrs)).sum(axis=(2, 3))


def _avgpool_infer(ts, attrs):
    expect(not attrs.get("ceil_mode", False), "avgpool2d does not support ceil_mode; pad explicitly")
    expect(tuple(attrs.get("dilation", (1, 1))) == (1, 1), "avgpool2d does not support dilation")
    return _pool_infer(ts, attrs)


def _avgpool_kernel(xs, attrs):
    x = xs[0]
    k, s, p, d, _ = _params(attrs)
    win = windows(x, k, s, p, d, 0.0, pool_out_hw(x.shape, attrs))
    return [(win.sum(axis=(2, 3)) / _avg_divisor(x.shape, attrs)).astype(x.dtype)]


def _avgpool_grad_kernel(xs, attrs):
    dy = xs[0]
    in_shape = tuple(attrs["input_shape"])
    k, s, p, d, _ = _params(attrs)
    share = (dy / _avg_divisor(in_shape, attrs)).astype(dy.dtype)
    cols = np.broadcast_to(share[:, :, None, None], share.shape[:2] + k + share.shape[2:])
    return [np.ascontiguousarray(fold(cols, in_shape[2:], s, p, d))]


def _avgpool_grad_infer(ts, attrs):
    return [TensorType(tuple(attrs["input_shape"]), ts[0].dtype)]


register("avgpool2d", infer=_avgpool_infer, kernel=_avgpool_kernel,
         grad=lambda ctx, node, dys: [ctx.emit("avgpool2d_grad", [dys[0]],
                                               {**node.attrs, "input_shape": list(node.inputs[0].shape)})],
         doc="2-D average pooling")
register("avgpool2d_grad", infer=_avgpool_grad_infer, kernel=_avgpool_grad_kernel,
         doc="dx of avgpool2d from dy (attr input_shape)")


def _gap_infer(ts, attrs):
    x = ts[0]
    expect(x.rank == 4, f"global_avgpool input must be NCHW, got {x.shape}")
    return [TensorType((x.shape[0], x.shape[1], 1, 1), x.dtype)]


def _gap_grad_kernel(xs, attrs):
    dy = xs[0]
    shape = tuple(attrs["input_shape"])
    return [np.ascontiguousarray(np.broadcast_to(dy / np.float32(shape[2] * shape[3]), shape)).astype(dy.dtype)]


register("global_avgpool", infer=_gap_infer,
         kernel=lambda x, a: [x[0].mean(axis=(2, 3), keepdims=True).astype(x[0].dtype)],
         grad=lambda ctx, node, dys: [ctx.emit("global_avgpool_grad", [dys[0]],
                                               {"input_shape": list(node.inputs[0].shape)})],
         doc="mean over H and W, keeping them as 1x1")
register("global_avgpool_grad", infer=lambda ts, a: [TensorType(tuple(a["input_shape"]), ts[0].dtype)],
         kernel=_gap_grad_kernel, doc="dx of global_avgpool: dy / (H*W) spread over each window")
