"""Runtime inputs: NaN / inf, labels out of range, wrong dtypes are refused before the step runs,
and the state is never left half-updated; the NaN policy of N:M pruning matches the interpreter."""

from __future__ import annotations

import numpy as np
import pytest
from satc.ir.interpreter import interpret
from satc.ir.nm import nm_compress, nm_decompress, nm_mask

import satc
from satc.errors import InputError, ShapeError


@pytest.fixture(scope="module")
def prog():
    """The cnn, bdwp:2:8, batch 4."""
    return satc.compile("cnn", input_shapes={"x": (4, 1, 8, 8)}, sparsity="bdwp:2:8")


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((4, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 4)


def _state(prog):
    return {k: np.array(v) for k, v in prog.state.items()}


@pytest.mark.parametrize("bad,needle", [
    (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), y),
     r"input 'x' holds 1 NaN or infinite value\(s\) in float32 \(first at flat index 5"),
    (lambda x, y: (x * np.float64(1e39), y), "NaN or infinite"),
    (lambda x, y: (x, np.array([0, 1, 10, 2])), r"label 10 at index 2 is outside \[0, 10\)"),
    (lambda x, y: (x, np.array([0, -1, 1, 2])), r"label -1 at index 1"),
    (lambda x, y: (x, y.astype(np.float32)), "holds class labels but has dtype float32"),
    (lambda x, y: (x.astype(np.complex64), y), "has dtype complex64"),
])
def test_bad_inputs_are_refused_and_the_state_is_untouched(prog, bad, needle):
    before = _state(prog)
    version = prog.state.version
    with pytest.raises(InputError, match=needle):
        prog.step(*bad(*_batch()))
    assert prog.state.version == version
    for k, v in _state(prog).items():
        np.testing.assert_array_equal(v, before[k])


def test_wrong_batch_size_is_a_shape_error(prog):
    x, y = _batch()
    with pytest.raises(ShapeError, match=r"input 'x' has shape \(3, 1, 8, 8\); the program was compiled "
                                         r"for \(4, 1, 8, 8\)"):
        prog.step(x[:3], y[:3])


def test_an_interrupted_step_leaves_the_state_as_before(prog, monkeypatch):
    prog.step(*_batch(1))
    before = _state(prog)
    emu = prog.session.emulator
    kernels = emu._kernels
    calls = {"n": 0}

    def boom():
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(emu, "_kernels", kernels[:len(kernels) // 2] + [boom] + kernels[len(kernels) // 2:])
    with pytest.raises(KeyboardInterrupt):
        prog.step(*_batch(2))
    assert calls["n"] == 1
    for k, v in _state(prog).items():
        np.testing.assert_array_equal(v, before[k])


def test_nm_compress_keeps_a_selected_nan():
    w = np.array([[np.nan, np.nan, np.nan, 1.0]], np.float32)
    c = nm_compress(w, 2, 4, 1)
    # 1.0 first, then the lowest-index NaN; the NaN stays NaN (no longer turned into 0)
    assert c.indices.tolist() == [[[0, 3]]]
    assert np.isnan(c.values[0, 0, 0]) and c.values[0, 0, 1] == 1.0
    np.testing.assert_array_equal(np.isnan(nm_decompress(c)), nm_mask(w, 2, 4, 1) & np.isnan(w))
    short = nm_compress(np.array([[3.0, np.nan, 1.0, 2.0, 5.0]], np.float32), 2, 4, 1)
    assert short.values[0, 1].tolist() == [5.0, 0.0]                  # padding still 0


def test_nan_weights_give_nan_loss_like_the_interpreter():
    """A NaN in a pruned layer's weight: the interpreter's loss turns NaN within two steps, and the
    emulator's does too (it used to train on with finite losses: NaN compressed to 0)."""
    p = satc.compile("cnn", input_shapes={"x": (4, 1, 8, 8)}, sparsity="bdwp:2:8")
    name = next(k for k in p.state if k.endswith(".weight") and p.state[k].ndim == 4
                and p.state[k].shape[1] > 3)
    w = np.array(p.state[name])
    w[0, :8] = np.nan                                # a whole N:M group along Ci: kept by W.ff
    state = _state(p)
    state[name] = w
    p.state = state
    ref_state = dict(state)
    x, y = _batch()
    emu_losses, ref_losses = [], []
    for _ in range(2):
        emu_losses.append(p.step(x, y).loss)
        out, ref_state = _interpret(p, ref_state, x, y)
        ref_losses.append(out)
    assert np.isnan(ref_losses[-1]) and np.isnan(emu_losses[-1])
    assert [np.isnan(v) for v in emu_losses] == [np.isnan(v) for v in ref_losses]


def _interpret(p, state, x, y):
    r = interpret(p.graph, {"x": x, "y": y}, state)
    return r.loss, {**state, **r.new_state}
