"""The packed N:M format: bit layout, round trips, agreement with satc.ir.nm."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satc.backends.sat.nmformat import (compress_rows, decompress_rows, index_bits, pack_indices,
                                        row_bytes, unpack_indices)
from satc.ir.nm import nm_compress, nm_mask


def test_bit_layout_little_endian():
    # 2:8 -> 3-bit indices; one row, two groups: (1, 6), (0, 7)
    idx = np.array([[[1, 6], [0, 7]]], np.uint8)
    packed = pack_indices(idx, 8)
    bits = 1 | 6 << 3 | 0 << 6 | 7 << 9
    assert packed.tolist() == [[bits & 0xFF, bits >> 8]]
    assert row_bytes(16, 2, 8) == 2 and index_bits(8) == 3 and index_bits(4) == 2 and index_bits(2) == 1


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([(1, 2), (1, 4), (2, 4), (1, 8), (2, 8), (2, 16), (1, 32)]),
       st.integers(1, 5), st.integers(1, 40), st.integers(0, 1), st.integers(0, 2 ** 31))
def test_roundtrip_matches_oracle(nm, rows, length, axis, seed):
    n, m = nm
    rng = np.random.default_rng(seed)
    shape = (rows, length) if axis == 1 else (length, rows)
    w = rng.integers(-3, 4, size=shape).astype(np.float32)        # many ties
    vals, packed = compress_rows(w, n, m, axis)
    c = nm_compress(w, n, m, axis)
    assert np.array_equal(unpack_indices(packed, length, n, m), c.indices)
    dense = decompress_rows(vals, packed, length, n, m)
    ref = np.where(nm_mask(w, n, m, axis), w, 0)
    assert np.array_equal(dense, ref if axis == 1 else ref.T)


@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_value_dtype(dtype):
    vals, _ = compress_rows(np.ones((2, 8), np.float32), 2, 8, 1, dtype)
    assert vals.dtype == (np.float16 if dtype == "fp16" else np.float32)
