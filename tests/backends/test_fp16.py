"""The emulator's fp16 conversions equal numpy's exact ones on every kind of value."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from satc.backends.sat.fp16 import fp16_rounder, fp16_widener


def round_to_fp16(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, np.float32)
    fp16_rounder(x, out, np.empty(x.shape, np.float16))()
    return out


def widen_fp16(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, np.float32)
    fp16_widener(x, out)()
    return out


def _same(a, b):
    return np.array_equal(a, b) or (np.array_equal(np.isnan(a), np.isnan(b))
                                    and np.array_equal(a[~np.isnan(a)], b[~np.isnan(b)]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2 ** 32 - 1), min_size=1, max_size=64))
def test_round_to_fp16_random_bits(words):
    x = np.array(words, np.uint32).view(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        ref = x.astype(np.float16).astype(np.float32)
    got = round_to_fp16(x)
    assert _same(got, ref)
    real = ~np.isnan(ref)                            # a NaN's sign bit carries no value
    assert np.array_equal(np.signbit(got[real]), np.signbit(ref[real]))


def test_round_to_fp16_edges():
    x = np.array([0.0, -0.0, 65504.0, 65519.0, 65520.0, -70000.0, 2.0 ** -14, 2.0 ** -24,
                  2.0 ** -25, 3 * 2.0 ** -26, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, np.inf, np.nan],
                 np.float32)
    with np.errstate(over="ignore"):
        ref = x.astype(np.float16).astype(np.float32)
    got = round_to_fp16(x)
    assert _same(got, ref)
    assert np.array_equal(np.signbit(got), np.signbit(ref))


def test_round_to_fp16_subnormal_range_and_signs():
    rng = np.random.default_rng(0)
    mags = np.exp2(rng.uniform(-30, -13, 4096)).astype(np.float32)
    x = mags * rng.choice(np.array([-1, 1], np.float32), mags.size)
    ref = x.astype(np.float16).astype(np.float32)
    got = round_to_fp16(x)
    assert np.array_equal(got, ref)
    assert np.array_equal(np.signbit(got), np.signbit(ref))


def test_widen_fp16_all_values():
    h = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(256, 256)
    assert _same(widen_fp16(h), h.astype(np.float32))


def test_converters_follow_strided_views_and_memory_changes():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((64, 96)).astype(np.float32)
    view = base[::2, 8:72].T                         # neither axis contiguous in the parent
    out = np.empty(view.shape, np.float32)
    convert = fp16_rounder(view, out, np.empty(view.shape, np.float16))
    convert()
    assert np.array_equal(out, view.astype(np.float16).astype(np.float32))
    base *= 3.0                                      # the converter reads the memory, not a copy
    convert()
    assert np.array_equal(out, view.astype(np.float16).astype(np.float32))
    half = base.astype(np.float16)[1::3, ::2]
    wide = np.empty(half.shape, np.float32)
    fp16_widener(half, wide)()
    assert np.array_equal(wide, half.astype(np.float32))
