"""Scheduling compiled training steps: the scheduled program trains exactly like the original."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import satc
from satc.backends.sat import time_program
from satc.data import batches, digits
from satc.models import get_model
from satc.passes.schedule import schedule_program
from satc.runtime import Session, rescheduled


@pytest.mark.parametrize("model,sparsity,method", [
    ("mlp", "bdwp:2:8", "cpsat"), ("cnn", "bdwp:2:8", "list"), ("cnn", "dense", "cpsat")])
def test_scheduled_program_trains_like_the_interpreter(model, sparsity, method):
    torch.manual_seed(0)
    x_tr, y_tr, _, _ = digits()
    it = batches(x_tr, y_tr, 8, seed=0)
    data = [next(it) for _ in range(3)]
    prog = satc.compile(get_model(model), example_inputs=(torch.from_numpy(data[0][0]),),
                        sparsity=sparsity, hw="sat-small", optimizer=satc.SGD(lr=0.05, momentum=0.9))
    base = prog.program
    result = schedule_program(base, method, labels=prog.labels, time_limit_s=2, window=300)
    result.check()
    assert result.makespan <= result.baselines["inorder"]
    assert result.makespan >= max(result.lower_bounds.values())
    scheduled = rescheduled(result)
    assert time_program(scheduled).total_cycles == result.makespan
    original, resched = Session.from_program(base), Session.from_program(scheduled)
    state = prog.graph.initial_state()
    for x, y in data:
        ref = satc.interpret(prog.graph, {"x": x, "y": y}, state)
        state = ref.new_state
        a, b = original.step(x, y).loss, resched.step(x, y).loss
        assert a == b, "same instructions, same results, whatever the order"
        assert b == pytest.approx(ref.loss, rel=1e-5)
    for name in original.manifest.state_regions:
        np.testing.assert_array_equal(original.read(name), resched.read(name), err_msg=name)
