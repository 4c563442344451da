"""The offline digits data set and the batch iterator."""

from __future__ import annotations

import numpy as np

from satc.data import batches, digits


def test_digits_split_is_fixed_and_scaled():
    x_tr, y_tr, x_te, y_te = digits()
    assert x_tr.shape == (1437, 1, 8, 8) and x_te.shape == (360, 1, 8, 8)
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.int64
    assert 0.0 <= x_tr.min() and x_tr.max() <= 1.0 and set(np.unique(y_te)) == set(range(10))
    again = digits()
    np.testing.assert_array_equal(again[0], x_tr)


def test_batches_cover_an_epoch_without_repeats():
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10)
    it = batches(x, y, 3, seed=1)
    seen = np.concatenate([next(it)[1] for _ in range(3)])
    assert len(set(seen.tolist())) == 9
    np.testing.assert_array_equal(next(batches(x, y, 3, seed=1))[1], seen[:3])


def test_batches_refuses_batch_that_never_fits():
    # before issue 18 these looped forever inside next(): the error must come at once
    import pytest

    from satc.errors import SatcError

    x = np.zeros((10, 1), np.float32)
    y = np.arange(10)
    for bad in (11, 0, -3):
        with pytest.raises(SatcError, match=rf"batch={bad} does not fit a data set of 10 samples"):
            next(batches(x, y, bad))
    with pytest.raises(SatcError, match=r"batch size in \[1, 10\] or more data"):
        next(batches(x, y, 11))
    with pytest.raises(SatcError, match="not an integer"):
        next(batches(x, y, 2.5))
    with pytest.raises(SatcError, match="x has 10 samples but y has 9"):
        next(batches(x, y[:9], 2))
    with pytest.raises(SatcError, match="does not fit a data set of 0 samples"):
        next(batches(x[:0], y[:0], 1))
    assert next(batches(x, y, 10))[0].shape == (10, 1)      # a batch of the whole set is fine
