"""The emulator's fp16 conversions equal numpy's exact ones on every kind of value."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from satc.backends.sat import fp16
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


SPECIAL_FP32 = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 65504.0, 65520.0, -1e6,
                         2.0 ** -14, -(2.0 ** -24), 2.0 ** -25, 3 * 2.0 ** -26, 1e-30, -1e-30,
                         1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11], np.float32)
SPECIAL_FP16 = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0x7C00, 0xFC00,
                         0x7E00, 0x7C01, 0xFE01, 0x3C00], np.uint16).view(np.float16)


def test_numpy_fallback_equals_torch_bit_for_bit():
    """The converters used without torch give the torch ones' exact bits (NaN payloads aside)."""
    outs = []
    for rounder in (fp16.torch_fp16_rounder, fp16.numpy_fp16_rounder):
        out = np.empty(SPECIAL_FP32.shape, np.float32)
        rounder(SPECIAL_FP32, out, np.empty(SPECIAL_FP32.shape, np.float16))()
        outs.append(out)
    nan = np.isnan(outs[0])
    assert np.array_equal(nan, np.isnan(outs[1]))
    assert np.array_equal(outs[0][~nan].view(np.uint32), outs[1][~nan].view(np.uint32))
    wides = []
    for widener in (fp16.torch_fp16_widener, fp16.numpy_fp16_widener):
        out = np.empty(SPECIAL_FP16.shape, np.float32)
        widener(SPECIAL_FP16, out)()
        wides.append(out)
    nan = np.isnan(wides[0])
    assert np.array_equal(nan, np.isnan(wides[1]))
    assert np.array_equal(wides[0][~nan].view(np.uint32), wides[1][~nan].view(np.uint32))


def test_numpy_fallback_follows_strided_views():
    base = np.random.default_rng(2).standard_normal((32, 48)).astype(np.float32)
    view = base[::2, 4:36].T
    out = np.empty(view.shape, np.float32)
    convert = fp16.numpy_fp16_rounder(view, out, np.empty(view.shape, np.float16))
    base *= 1e4                                      # overflows some values to inf
    convert()
    with np.errstate(over="ignore"):
        assert np.array_equal(out, view.astype(np.float16).astype(np.float32))


WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None                      # any `import torch` now raises ImportError
import numpy as np
import satc.backends.sat.cost_model, satc.backends.sat.emulator, satc.backends.sat.isa
import satc.backends.sat.timing
from satc.backends.sat import fp16
x = np.array([1 + 2.0 ** -11, 2.0 ** -25, -0.0, 1e6], np.float32)
out = np.empty(4, np.float32)
fp16.fp16_rounder(x, out, np.empty(4, np.float16))()
assert out.tolist() == [1.0, 0.0, 0.0, float("inf")] and np.signbit(out[2]), out
with fp16.single_threaded():
    pass
print("ok")
"""


def test_backend_imports_and_runs_without_torch():
    """The SAT backend modules import with torch absent, and fp16 falls back to numpy."""
    res = subprocess.run([sys.executable, "-c", WITHOUT_TORCH], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
