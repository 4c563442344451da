"""Offline data sets for training on the emulator and for studies: scikit-learn's digits."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from satc.errors import SatcError


def digits(test_fraction: float = 0.2, split_seed: int = 0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): 8x8 digits as float32 [N, 1, 8, 8] in [0, 1], int64 labels.

    A stratified split with a fixed seed, from the copy scikit-learn ships
    (no download).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images[:, None] / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction,
                                              random_state=split_seed, stratify=y)
    return x_tr, y_tr, x_te, y_te


def batches(x: np.ndarray, y: np.ndarray, batch: int, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless shuffled full batches of ``batch`` samples (a new permutation every epoch).

    Only full batches are yielded (the last ``len(x) % batch`` samples of each
    permutation are dropped), so ``batch`` must be an integer in
    ``[1, len(x)]``, and ``x`` and ``y`` must hold the same number of samples;
    otherwise :class:`satc.errors.SatcError` is raised on the first ``next()``.
    """
    if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool):
        raise SatcError(f"batches(): batch={batch!r} is not an integer; pass a batch size in [1, {len(x)}]")
    if len(x) != len(y):
        raise SatcError(f"batches(): x has {len(x)} samples but y has {len(y)}; pass one label per sample")
    if not 1 <= batch <= len(x):
        raise SatcError(f"batches(): batch={batch} does not fit a data set of {len(x)} samples "
                        f"(only full batches are yielded); pass a batch size in [1, {len(x)}]"
                        + (" or more data" if batch > len(x) else ""))
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(x))
        for i in range(0, len(order) - batch + 1, batch):
            sel = order[i:i + batch]
            yield x[sel], y[sel]


def random_batch(graph, num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic inputs for every input of ``graph`` (a satc Graph): normal images, uniform labels."""
    rng = np.random.default_rng(seed)
    out = {}
    for v in graph.inputs:
        if v.dtype == "int64":
            out[v.name] = rng.integers(0, num_classes, v.shape).astype(np.int64)
        else:
            out[v.name] = rng.standard_normal(v.shape).astype(v.dtype)
    return out
