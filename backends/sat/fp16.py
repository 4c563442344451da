"""Fast exact fp16 conversions for the emulator (numpy's own are scalar loops).

* :func:`widen_fp16`: fp16 -> fp32 through a 65536-entry lookup table.
* :func:`round_to_fp16`: fp32 -> nearest fp16 (ties to even), returned as
  fp32, with integer bit operations; fp16 subnormals, overflow to infinity
  and NaN are handled so the result equals ``x.astype(float16).astype(float32)``.
"""

from __future__ import annotations

import numpy as np

_F16_TO_F32 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
_F16_OVERFLOW = np.float32(65520.0)     # fp16 max 65504 plus half an ulp: rounds to inf
_F16_MIN_NORMAL = np.float32(2.0 ** -14)
_SUBNORMAL_SCALE = np.float32(2.0 ** 24)
_MANTISSA_DROP = 13                      # fp32 has 23 mantissa bits, fp16 10


def widen_fp16(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """fp16 array ``x`` as fp32 written into ``out`` (same shape)."""
    return np.take(_F16_TO_F32, x.view(np.uint16), out=out)


def round_to_fp16(x: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """fp32 ``x`` rounded to fp16 precision and range, as fp32 (``scratch``: uint32 of x's shape)."""
    bits = x.view(np.uint32)
    np.right_shift(bits, _MANTISSA_DROP, out=scratch)
    np.bitwise_and(scratch, 1, out=scratch)                          # ties to even
    np.add(scratch, (1 << (_MANTISSA_DROP - 1)) - 1, out=scratch)
    np.add(scratch, bits, out=scratch)
    np.bitwise_and(scratch, np.uint32(~((1 << _MANTISSA_DROP) - 1) & 0xFFFFFFFF), out=scratch)
    r = scratch.view(np.float32)
    mag = np.abs(x)
    small = mag < _F16_MIN_NORMAL
    if small.any():
        r[small] = np.rint(x[small] * _SUBNORMAL_SCALE) / _SUBNORMAL_SCALE
    big = ~(mag < _F16_OVERFLOW)                                    # overflow, inf or NaN
    if big.any():
        r[big] = np.where(np.isnan(x[big]), x[big], np.copysign(np.float32(np.inf), x[big]))
    return r
