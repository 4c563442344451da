"""N:M primitives: property tests (hypothesis) and the spec parser."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from satc.errors import SparsityError
from satc.ir.nm import nm_compress, nm_decompress, nm_mask, parse_sparsity

NM = st.sampled_from([(1, 2), (1, 4), (2, 4), (3, 4), (2, 8), (1, 8), (4, 16), (2, 32)])
VALUES = st.sampled_from([-2.0, -1.0, 0.0, 0.5, 1.0, 1.0, 3.0])  # many ties on purpose


@st.composite
def tensors(draw):
    shape = draw(st.lists(st.integers(1, 11), min_size=1, max_size=3))
    floats = st.one_of(VALUES, st.floats(-10, 10, width=32, allow_nan=False))
    return draw(arrays(np.float32, tuple(shape), elements=floats))


@settings(max_examples=150, deadline=None)
@given(tensors(), NM, st.integers(0, 2))
def test_mask_keeps_top_n_per_group_with_lower_index_ties(w, nm, axis_seed):
    n, m = nm
    axis = axis_seed % w.ndim
    mask = nm_mask(w, n, m, axis)
    assert mask.shape == w.shape
    mw = np.moveaxis(w, axis, -1)
    mm = np.moveaxis(mask, axis, -1)
    length = mw.shape[-1]
    for idx in np.ndindex(mw.shape[:-1]):
        for g0 in range(0, length, m):
            vals, keep = mw[idx][g0:g0 + m], mm[idx][g0:g0 + m]
            assert keep.sum() == min(n, len(vals))
            # the expected selection: stable sort on -|w|, i.e. ties to the lower index
            order = sorted(range(len(vals)), key=lambda i: (-abs(float(vals[i])), i))[:n]
            assert set(np.flatnonzero(keep)) == set(order)


@settings(max_examples=100, deadline=None)
@given(tensors(), NM, st.integers(0, 2))
def test_compress_decompress_round_trip(w, nm, axis_seed):
    n, m = nm
    axis = axis_seed % w.ndim
    c = nm_compress(w, n, m, axis)
    groups = -(-w.shape[axis] // m)
    assert c.values.shape[-2:] == (groups, n) and c.indices.shape == c.values.shape
    assert c.indices.dtype == np.uint8 and (np.diff(c.indices.astype(int), axis=-1) > 0).all()
    np.testing.assert_array_equal(nm_decompress(c), np.where(nm_mask(w, n, m, axis), w, 0))


def test_padding_is_never_selected_over_a_real_weight():
    w = np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)  # 6 real zeros, M = 4 pads 2 slots
    mask = nm_mask(w, 2, 4, 1)
    assert mask.tolist() == [[True, True, False, False, True, True]]


@pytest.mark.parametrize("spec,expect", [
    ("dense", ("dense", 0, 0)), ("ff:2:8", ("ff", 2, 8)), ("BDWP:2:4", ("bdwp", 2, 4)),
    ("bdwp-nested:1:8", ("bdwp-nested", 1, 8))])
def test_parse_sparsity(spec, expect):
    s = parse_sparsity(spec)
    assert (s.mode, s.n, s.m) == expect
    assert s.srste_lambda == 2e-4


@pytest.mark.parametrize("bad,msg", [
    ("sparse:2:8", "unknown sparsity mode"), ("bdwp:2", "needs the form"), ("bdwp:2:6", "power of two"),
    ("bdwp:8:8", "need 0 < N < M"), ("bdwp:2:64", "power of two"), ("bdwp:a:8", "integers"),
    ("dense:2:8", "takes no N:M")])
def test_parse_sparsity_errors(bad, msg):
    with pytest.raises(SparsityError, match=msg):
        parse_sparsity(bad)
