"""SAT's N:M compressed memory format: packing of values and in-group indices.

A compressed operand is a 2-D pair of tiles, one row per *outer* index (the
non-reduction axis), groups of M along the reduction axis:

* values: ``outer x (G*N)`` elements (fp32 or fp16), group-major;
* indices: ``outer x row_bytes`` bytes; the G*N in-group indices of a row,
  each ``ceil(log2 M)`` bits, form one little-endian bit stream (index j
  occupies bits ``j*b .. j*b+b-1``, bit 0 being the LSB of byte 0), padded
  with zero bits to a whole byte per row.

Which elements are kept follows :mod:`satc.ir.nm` (magnitude top-N per
group, ties to the lower index, padding never selected over a real value).
"""

from __future__ import annotations

import math

import numpy as np

from satc.backends.sat.isa import NP_DTYPES
from satc.ir.nm import nm_compress


def index_bits(m: int) -> int:
    """Bits of one in-group index: ceil(log2 M)."""
    return max(1, math.ceil(math.log2(m)))


def groups(length: int, m: int) -> int:
    """Groups of M covering ``length`` elements (the last one padded)."""
    return -(-length // m)


def row_bytes(length: int, n: int, m: int) -> int:
    """Bytes of packed indices per compressed row of a reduction axis of ``length``."""
    return -(-groups(length, m) * n * index_bits(m) // 8)


def pack_indices(idx: np.ndarray, m: int) -> np.ndarray:
    """Pack (outer, G, N) in-group indices to (outer, row_bytes) uint8, little-endian bits."""
    idx = np.asarray(idx)
    outer = idx.shape[0]
    b = index_bits(m)
    flat = idx.reshape(outer, -1).astype(np.uint8)
    bits = (flat[:, :, None] >> np.arange(b, dtype=np.uint8)) & 1       # (outer, G*N, b)
    bits = bits.reshape(outer, -1)
    pad = (-bits.shape[1]) % 8
    if pad:
        bits = np.concatenate([bits, np.zeros((outer, pad), np.uint8)], axis=1)
    return np.packbits(bits, axis=1, bitorder="little")


class IndexUnpacker:
    """Vectorised unpacking of (outer, row_bytes) packed indices, times ``scale``, to (outer, count) intp.

    Built once per tile shape; each call is one ``unpackbits`` and one small
    integer matmul of the bits with the weights ``scale << bit`` into ``out``
    (allocated when not given, reused between calls). ``scale`` lets a caller get
    flat offsets (index * row stride) in the same pass.
    """

    def __init__(self, outer: int, count: int, m: int, scale: int = 1,
                 out: np.ndarray | None = None) -> None:
        self.bits = index_bits(m)
        self.count = count
        self.shape = (outer, count, self.bits)
        self.weights = np.intp(scale) << np.arange(self.bits, dtype=np.intp)
        self.out = np.empty((outer, count), np.intp) if out is None else out

    def __call__(self, packed: np.ndarray) -> np.ndarray:
        """In-group indices times ``scale`` (outer, count) from packed bytes (outer, >= row_bytes)."""
        bits = np.unpackbits(packed, axis=1, count=self.count * self.bits,
                             bitorder="little").reshape(self.shape)
        return np.matmul(bits, self.weights, out=self.out)


class IndexOffsets:
    """In-group indices times ``scale`` of a packed index tile in memory, read through 16-bit windows.

    ``memory`` is the byte array holding the tile at ``offset`` with rows
    ``row_stride`` bytes apart. Index j (``b`` bits at bit ``j*b``) lies in
    the little-endian 16-bit word starting at byte ``min(j*b // 8, row_bytes
    - 2)`` of its row, so one gather of those words, a shift and a mask give
    every index (about twice as fast as unpacking bits). Rows of one byte fall
    back to :class:`IndexUnpacker`. Each call reads the current bytes and
    writes ``out`` ((outer, count) intp, allocated when not given).
    """

    def __init__(self, memory: np.ndarray, offset: int, row_stride: int, outer: int, count: int,
                 m: int, scale: int = 1, out: np.ndarray | None = None) -> None:
        b = index_bits(m)
        nbytes = -(-count * b // 8)
        self.out = np.empty((outer, count), np.intp) if out is None else out
        if nbytes < 2:
            packed = np.ndarray((outer, nbytes), np.uint8, buffer=memory, offset=offset,
                                strides=(row_stride, 1))
            unpack = IndexUnpacker(outer, count, m, scale, out=self.out)
            self._read = lambda: unpack(packed)
            return
        self._words = np.ndarray((outer, nbytes - 1), np.dtype("<u2"), buffer=memory, offset=offset,
                                 strides=(row_stride, 1))
        first = np.arange(count) * b
        self._start = np.minimum(first // 8, nbytes - 2)
        self._shift = (first - 8 * self._start).astype(np.uint16)
        self._mask = np.uint16((1 << b) - 1)
        self._scale = np.intp(scale)
        self._read = self._windows

    def _windows(self) -> None:
        w = self._words[:, self._start]
        np.right_shift(w, self._shift, out=w)
        np.bitwise_and(w, self._mask, out=w)
        np.multiply(w, self._scale, out=self.out)

    def __call__(self) -> np.ndarray:
        """(outer, count) intp: index * scale of every value, from the bytes in memory now."""
        self._read()
        return self.out


def unpack_indices(packed: np.ndarray, length: int, n: int, m: int) -> np.ndarray:
    """Inverse of :func:`pack_indices`: (outer, G, N) uint8 indices."""
    packed = np.asarray(packed, dtype=np.uint8)
    g = groups(length, m)
    out = IndexUnpacker(packed.shape[0], g * n, m)(packed)
    return out.reshape(packed.shape[0], g, n).astype(np.uint8)


def compress_rows(w: np.ndarray, n: int, m: int, axis: int, dtype: str = "fp32"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """SAT format of a 2-D ``w`` pruned N:M along ``axis``: (values (outer, G*N), packed indices).

    ``axis=1`` groups along columns (outer = rows); ``axis=0`` groups along rows
    (outer = columns), exactly as the SORE instruction's ``axis`` field. ``dtype``: ``'fp32'`` or ``'fp16'`` values.
    """
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"compress_rows takes a 2-D array, got shape {w.shape}")
    c = nm_compress(w, n, m, axis)
    outer = c.values.shape[0]
    values = c.values.reshape(outer, -1).astype(NP_DTYPES[dtype])
    return values, pack_indices(c.indices, m)


def decompress_rows(values: np.ndarray, packed: np.ndarray, length: int, n: int, m: int) -> np.ndarray:
    """Dense (outer, length) rows rebuilt from SAT-format values and packed indices."""
    outer = values.shape[0]
    g = groups(length, m)
    idx = unpack_indices(packed, length, n, m).astype(np.intp).reshape(outer, g * n)
    dense = np.zeros((outer, g * m), dtype=values.dtype)
    cols = idx + (np.arange(g * n) // n * m)[None, :]
    np.put_along_axis(dense, cols, values[:, :g * n], axis=1)
    return dense[:, :length]
