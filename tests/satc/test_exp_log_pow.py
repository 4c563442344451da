"""exp, log and pow by a tensor exponent (``x ** y`` as ``exp(y * log x)``, ``c ** y`` as
``exp(y * ln c)``), from torch and ONNX: values and gradients equal torch autograd, and the
compiled step (dense, bdwp:2:8) on the emulator equals the interpreter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper

import satc
from satc.errors import UnsupportedOpError
from satc.frontend.onnx_import import import_onnx
from satc.frontend.torch_import import import_torch
from satc.ir.interpreter import interpret
from tests.satc.test_compile import check_steps
from tests.satc.test_onnx_import import _model, _vi
from tests.satc.hidden_activation import HiddenActivationNet, check_step_matches_autograd, data
from tests.torch_reference import assert_close


def _pow_net() -> HiddenActivationNet:
    """Positive bases (sigmoid + 0.5) raised to data-dependent exponents, exp and log."""
    def act(h: torch.Tensor) -> torch.Tensor:
        base, e = torch.sigmoid(h) + 0.5, torch.tanh(h)
        return base ** e + torch.log(base) + 2.0 ** e - torch.exp(-0.5 * h * h)
    return HiddenActivationNet(act)


def test_pow_exp_log_step_matches_autograd():
    torch.manual_seed(0)
    check_step_matches_autograd(_pow_net(), {"exp", "log"})


def test_log_of_zero_and_negatives_follows_torch():
    class Log(torch.nn.Module):
        def forward(self, x):
            return torch.log(x)

    x = np.array([[0.0, -1.0, 1.0, np.e]], np.float32)
    got = interpret(import_torch(Log(), (torch.from_numpy(x),)), {"x": x}).outputs["output"]
    np.testing.assert_array_equal(np.isnan(got), [[False, True, False, False]])
    assert got[0, 0] == -np.inf and got[0, 3] == pytest.approx(1.0)


def test_constant_negative_base_is_refused():
    class NegBase(torch.nn.Module):
        def forward(self, x):
            return (-2.0) ** x

    with pytest.raises(UnsupportedOpError, match="positive base"):
        import_torch(NegBase(), (torch.zeros(2, 3),))


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_pow_exp_log_steps_on_the_emulator_match_the_interpreter(sparsity):
    torch.manual_seed(0)
    x, y = data()
    prog = satc.compile(_pow_net(), example_inputs=(torch.from_numpy(x),), sparsity=sparsity,
                        hw="sat-small", optimizer=satc.SGD(lr=0.05, momentum=0.9))
    assert {"exp", "log"} <= {i.func for i in prog.program.instructions if i.op == "vec"}
    check_steps(prog, x, y, 2)


def test_onnx_exp_log_and_pow_by_a_tensor():
    nodes = [helper.make_node("Exp", ["a"], ["ea"], name="exp"),
             helper.make_node("Log", ["ea"], ["la"], name="log"),
             helper.make_node("Pow", ["b", "a"], ["pb"], name="pow"),
             helper.make_node("Pow", ["b", "two"], ["sq"], name="square"),
             helper.make_node("Sum", ["la", "pb", "sq"], ["y"], name="sum")]
    m = _model(nodes, [_vi("a", [2, 3]), _vi("b", [2, 3])], [_vi("y", [2, 3])], 13,
               {"two": np.array(2.0, np.float32)})
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 3)).astype(np.float32)
    b = rng.uniform(0.2, 3.0, (2, 3)).astype(np.float32)
    g = import_onnx(m)
    assert sorted(n.attrs["exponent"] for n in g.nodes if n.op == "pow") == [2.0]
    got = interpret(g, {"a": a, "b": b}).outputs["output"]
    assert_close(got, a + b.astype(np.float64) ** a + b.astype(np.float64) ** 2, "Exp/Log/Pow")
