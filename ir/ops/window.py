"""Sliding-window numpy helpers shared by convolution and pooling kernels."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from satc.errors import ShapeError


def out_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dil: int = 1,
             ceil_mode: bool = False) -> int:
    """Output length of a window of ``k`` taps sliding over ``size`` elements; ShapeError for a
    kernel, stride or dilation below 1 or a negative padding."""
    for what, v, low in (("kernel", k, 1), ("stride", stride, 1), ("dilation", dil, 1),
                         ("padding", pad_lo, 0), ("padding", pad_hi, 0)):
        if not isinstance(v, (int, np.integer)) or v < low:
            raise ShapeError(f"window {what} {v!r}: it must be an integer >= {low}")
    span = size + pad_lo + pad_hi - dil * (k - 1) - 1
    if ceil_mode:
        n = -(-span // stride) + 1
        if (n - 1) * stride >= size + pad_lo:  # last window must start inside input + left pad
            n -= 1
        return n
    return span // stride + 1


def windows(x: np.ndarray, k: tuple[int, int], stride: tuple[int, int],
            pads: tuple[int, int, int, int], dil: tuple[int, int], fill: float,
            out_hw: tuple[int, int]) -> np.ndarray:
    """View of ``x`` (N,C,H,W) as (N, C, kh, kw, Ho, Wo) windows over the padded input."""
    pt, pl, pb, pr = pads
    ho, wo = out_hw
    need_h = (ho - 1) * stride[0] + dil[0] * (k[0] - 1) + 1
    need_w = (wo - 1) * stride[1] + dil[1] * (k[1] - 1) + 1
    h, w = x.shape[2], x.shape[3]
    extra_b = max(0, need_h - (h + pt + pb))
    extra_r = max(0, need_w - (w + pl + pr))
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb + extra_b), (pl, pr + extra_r)), constant_values=fill)
    sn, sc, sh, sw = xp.strides
    return as_strided(xp, (x.shape[0], x.shape[1], k[0], k[1], ho, wo),
                      (sn, sc, sh * dil[0], sw * dil[1], sh * stride[0], sw * stride[1]),
                      writeable=False)


def fold(cols: np.ndarray, in_hw: tuple[int, int], stride: tuple[int, int],
         pads: tuple[int, int, int, int], dil: tuple[int, int]) -> np.ndarray:
    """Scatter-add windows (N, C, kh, kw, Ho, Wo) back onto an (N, C, H, W) input (col2im)."""
    n, c, kh, kw, ho, wo = cols.shape
    pt, pl, pb, pr = pads
    hp = max(in_hw[0] + pt + pb, (ho - 1) * stride[0] + dil[0] * (kh - 1) + 1)
    wp = max(in_hw[1] + pl + pr, (wo - 1) * stride[1] + dil[1] * (kw - 1) + 1)
    out = np.zeros((n, c, hp, wp), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dil[0], j * dil[1]
            out[:, :, r0:r0 + stride[0] * (ho - 1) + 1:stride[0],
                c0:c0 + stride[1] * (wo - 1) + 1:stride[1]] += cols[:, :, i, j]
    return out[:, :, pt:pt + in_hw[0], pl:pl + in_hw[1]]
