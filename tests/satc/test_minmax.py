"""torch.minimum / torch.maximum (ONNX Min / Max of two inputs): values and gradients equal
torch autograd, ties split in half as torch does, and the compiled step (dense, bdwp:2:8)
on the emulator equals the interpreter; other shapes are refused by name."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import satc
from satc.errors import UnsupportedOpError
from satc.frontend.onnx_import import import_onnx
from satc.frontend.torch_import import import_torch
from satc.ir.interpreter import interpret
from satc.ir.ops import get_op
from tests.satc.test_compile import check_steps
from tests.satc.test_onnx_import import _assert_same_step, _export
from tests.satc.hidden_activation import HiddenActivationNet, check_step_matches_autograd, data
from tests.torch_reference import assert_close


def _minmax_net() -> HiddenActivationNet:
    """max(h, relu(h)) ties wherever h > 0; min(h, -h) = -|h| ties where h = 0, which hidden
    unit 0 is everywhere."""
    return HiddenActivationNet(lambda h: torch.maximum(h, torch.relu(h)) + torch.minimum(h, -h),
                               zero_unit=True)


@pytest.mark.parametrize("fn", [torch.minimum, torch.maximum])
def test_values_and_tie_gradients_equal_torch(fn):
    class F(torch.nn.Module):
        def forward(self, a, b):
            return fn(a, b)

    a = np.array([[-3.0, 1.0, 2.0, 0.0, 5.0]], np.float32)
    b = np.array([[-1.0, 1.0, -2.0, 0.0, 7.0]], np.float32)
    g = import_torch(F(), (torch.from_numpy(a), torch.from_numpy(b)))
    op = "minimum" if fn is torch.minimum else "maximum"
    assert [n.op for n in g.nodes] == [op]
    names = [v.name for v in g.inputs]
    assert_close(interpret(g, dict(zip(names, (a, b)))).outputs["output"],
                 fn(torch.from_numpy(a), torch.from_numpy(b)).numpy(), op)
    at, bt = (torch.from_numpy(v).requires_grad_() for v in (a, b))
    dy = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    (fn(at, bt) * dy).sum().backward()
    k = get_op("minmax_grad").kernel
    mode = {"mode": op[:3]}
    np.testing.assert_array_equal(k([dy.numpy(), a, b], mode)[0], at.grad.numpy())
    np.testing.assert_array_equal(k([dy.numpy(), b, a], mode)[0], bt.grad.numpy())


def test_minmax_step_matches_autograd():
    torch.manual_seed(0)
    check_step_matches_autograd(_minmax_net(), {"minimum", "maximum"})


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_minmax_steps_on_the_emulator_match_the_interpreter(sparsity):
    torch.manual_seed(0)
    x, y = data()
    prog = satc.compile(_minmax_net(), example_inputs=(torch.from_numpy(x),), sparsity=sparsity,
                        hw="sat-small")
    ops = {n.op for n in prog.graph.nodes}
    assert {"minimum", "maximum", "minmax_grad"} <= ops
    check_steps(prog, x, y, 2)


def test_onnx_min_max_step_matches_torch():
    torch.manual_seed(0)
    model = _minmax_net()
    x, y = data()
    g = import_onnx(_export(model, torch.from_numpy(x), 13))
    assert {"minimum", "maximum"} <= {n.op for n in g.nodes}
    _assert_same_step(g, import_torch(copy.deepcopy(model), (torch.from_numpy(x),)), model, x, y)


def test_minimum_of_two_shapes_is_refused_by_name():
    class Bad(torch.nn.Module):
        def forward(self, x):
            return torch.minimum(x, x[:1])

    with pytest.raises(UnsupportedOpError, match=r"minimum of .*2, 4.*1, 4.*one shape"):
        import_torch(Bad(), (torch.randn(2, 4),))
