"""Smoke test of bench/accuracy.py's run_study on a tiny slice of digits."""

import importlib.util
import sys
from pathlib import Path

import pytest
from torch.utils.data import DataLoader, Subset

from satc.models import get_model

_PATH = Path(__file__).resolve().parents[2] / "bench" / "accuracy.py"
_SPEC = importlib.util.spec_from_file_location("bench_accuracy", _PATH)
accuracy = sys.modules[_SPEC.name] = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(accuracy)


def test_run_study_smoke():
    train, test = accuracy.digits_loaders(batch_size=32)
    train = DataLoader(Subset(train.dataset, range(128)), batch_size=32, shuffle=True)
    test = DataLoader(Subset(test.dataset, range(64)), batch_size=64)
    results = accuracy.run_study(lambda: get_model("cnn", width=8), train, test,
                                 modes=("dense", "bdwp:2:8"), seeds=(0,), epochs=1)
    dense, bdwp = results
    assert (dense.mode, bdwp.mode) == ("dense", "bdwp:2:8")
    assert all(0.0 <= r.mean <= 100.0 and len(r.accuracies) == 1 for r in results)
    assert dense.effective_macs == dense.dense_macs
    # FF and BP of the sparse layers at 2:8, WU dense: between 1/2 and 1 of dense
    assert 0.5 < bdwp.effective_macs / bdwp.dense_macs < 0.6
    table = accuracy.format_table("cnn", results)
    assert table.count("\n") == 1 and "bdwp:2:8" in table


def test_training_macs_by_hand():
    from satc.sparsity import convert
    model = convert(get_model("mlp"), "bdwp:2:8")
    dense, effective = accuracy.training_macs(model, (1, 8, 8), batch_size=2)
    fwd = 64 * 128 + 128 * 64 + 64 * 10
    assert dense == 2 * 3 * fwd
    # last layer: Co=10 along BP keeps 2 of 8 + both of the 2-element tail = 4/10
    expected = 2 * (64 * 128 * 1.5 + 128 * 64 * 1.5 + 64 * 10 * (0.25 + 0.4 + 1))
    assert effective == pytest.approx(expected, abs=1)
