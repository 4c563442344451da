"""torch.abs (aten.abs, ONNX Abs): values and gradients equal torch autograd, with
sign(0) = 0 at exact zeros, and the compiled step (dense, bdwp:2:8) on the emulator equals
the interpreter."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import satc
from satc.frontend.onnx_import import import_onnx
from satc.frontend.torch_import import import_torch
from satc.ir.ops import get_op
from satc.ir.interpreter import interpret
from tests.satc.test_compile import check_steps
from tests.satc.test_onnx_import import _assert_same_step, _export
from tests.satc.hidden_activation import HiddenActivationNet, check_step_matches_autograd, data
from tests.torch_reference import assert_close


def _abs_net() -> HiddenActivationNet:
    """|h| with hidden unit 0 exactly zero (its gradient is 0, so the row stays zero)."""
    return HiddenActivationNet(torch.abs, zero_unit=True)


def test_abs_values_and_gradient_at_zero_equal_torch():
    class Abs(torch.nn.Module):
        def forward(self, x):
            return torch.abs(x)

    x = np.array([[-3.0, -0.5, 0.0, 0.25, 7.0]], np.float32)
    g = import_torch(Abs(), (torch.from_numpy(x),))
    assert [n.op for n in g.nodes] == ["abs"]
    assert_close(interpret(g, {"x": x}).outputs["output"], np.abs(x), "abs")
    xt = torch.from_numpy(x).requires_grad_()
    torch.abs(xt).sum().backward()
    dy = np.ones_like(x)
    (dx,) = get_op("abs_grad").kernel([dy, x], {})
    np.testing.assert_array_equal(dx, xt.grad.numpy())
    assert dx[0, 2] == 0.0


def test_abs_step_matches_autograd():
    torch.manual_seed(0)
    check_step_matches_autograd(_abs_net(), {"abs"})


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_abs_steps_on_the_emulator_match_the_interpreter(sparsity):
    torch.manual_seed(0)
    x, y = data()
    model = _abs_net()
    prog = satc.compile(model, example_inputs=(torch.from_numpy(x),), sparsity=sparsity,
                        hw="sat-small")
    funcs = [i.func for i in prog.program.instructions if i.op == "vec"]
    assert {"leaky_relu", "pass_gt", "pass_lt"} <= set(funcs)
    check_steps(prog, x, y, 2)


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_abs_step_matches_torch(opset):
    torch.manual_seed(0)
    model = _abs_net()
    x, y = data()
    g = import_onnx(_export(model, torch.from_numpy(x), opset))
    assert "abs" in {n.op for n in g.nodes}
    _assert_same_step(g, import_torch(copy.deepcopy(model), (torch.from_numpy(x),)), model, x, y)
