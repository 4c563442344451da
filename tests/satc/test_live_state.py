"""prog.state: the training state lives in modelled DRAM between steps; edits are never lost."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import satc
from satc.errors import CompileError
from satc.ir.interpreter import interpret
from satc.models import get_model


@pytest.fixture()
def mlp():
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    prog = satc.compile(get_model("mlp"), example_inputs=(x,), sparsity="bdwp:2:8", hw="sat-small",
                        optimizer=satc.SGD(lr=0.05, momentum=0.9))
    return prog, x.numpy(), y.numpy()


def test_state_read_after_a_step_is_read_only(mlp):
    prog, x, y = mlp
    prog.step(x, y)
    w = prog.state["features.2.weight"]
    with pytest.raises(ValueError, match="read-only"):
        w[0, 0] = 1.0


def test_assigned_value_is_used_by_the_next_step_and_the_rest_carries_over(mlp):
    prog, x, y = mlp
    state = prog.graph.initial_state()
    prog.step(x, y)
    after_one = interpret(prog.graph, {"x": x, "y": y}, state).new_state
    edited = dict(after_one)
    edited["features.2.weight"] = after_one["features.2.weight"] * np.float32(0.5)
    prog.state["features.2.weight"] = edited["features.2.weight"]       # only this one is re-encoded
    res = prog.step(x, y)
    ref = interpret(prog.graph, {"x": x, "y": y}, edited)
    np.testing.assert_allclose(res.loss, float(ref.outputs["loss"]), rtol=1e-4, atol=1e-5)
    for k, v in ref.new_state.items():
        np.testing.assert_allclose(prog.state[k], v, rtol=1e-4, atol=1e-5, err_msg=k)


def test_state_keys_are_fixed(mlp):
    prog, _, _ = mlp
    with pytest.raises(CompileError, match="no state 'nope'"):
        prog.state["nope"] = np.zeros(1)
    with pytest.raises(CompileError, match="cannot delete"):
        del prog.state["features.2.weight"]


def test_whole_state_assignment_must_name_every_value(mlp):
    prog, _, _ = mlp
    state = prog.graph.initial_state()
    partial = {k: v for k, v in state.items() if not k.endswith(".bp")}
    with pytest.raises(CompileError, match=r"missing \['classifier.weight.bp'"):
        prog.state = partial
    assert "features.2.weight" in prog.state and "nope" not in prog.state
