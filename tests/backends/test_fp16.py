"""The emulator's fast fp16 conversions equal numpy's exact ones on every kind of value."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from satc.backends.sat.fp16 import round_to_fp16, widen_fp16


def _same(a, b):
    return np.array_equal(a, b) or (np.array_equal(np.isnan(a), np.isnan(b))
                                    and np.array_equal(a[~np.isnan(a)], b[~np.isnan(b)]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2 ** 32 - 1), min_size=1, max_size=64))
def test_round_to_fp16_random_bits(words):
    x = np.array(words, np.uint32).view(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        ref = x.astype(np.float16).astype(np.float32)
    got = round_to_fp16(x, np.empty(x.shape, np.uint32))
    assert _same(got, ref)
    assert np.array_equal(np.signbit(got), np.signbit(ref))


def test_round_to_fp16_edges():
    x = np.array([0.0, -0.0, 65504.0, 65519.0, 65520.0, -70000.0, 2.0 ** -14, 2.0 ** -24,
                  2.0 ** -25, 3 * 2.0 ** -26, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, np.inf, np.nan],
                 np.float32)
    with np.errstate(over="ignore"):
        ref = x.astype(np.float16).astype(np.float32)
    assert _same(round_to_fp16(x, np.empty(x.shape, np.uint32)), ref)


def test_widen_fp16_all_values():
    h = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(256, 256)
    assert _same(widen_fp16(h, np.empty(h.shape, np.float32)), h.astype(np.float32))
