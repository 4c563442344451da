"""F.logsigmoid (aten.log_sigmoid) as -softplus(-x): values and gradients equal torch
autograd, including far into both tails, and the compiled step (dense, bdwp:2:8) on the
emulator equals the interpreter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import satc
from satc.frontend.torch_import import import_torch
from satc.ir.interpreter import interpret
from tests.satc.test_compile import check_steps
from tests.torch_reference import assert_close, assert_interpreted_step_matches_autograd


class LogSigmoidNet(torch.nn.Module):
    """A classifier with a logsigmoid hidden activation, scaled so that some inputs lie past
    softplus's threshold (|h| > 20)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(12, 16)
        self.fc2 = torch.nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.logsigmoid(self.fc1(x.flatten(1)) * 12.0))


def _data():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((4, 3, 2, 2)) * 2).astype(np.float32), np.array([0, 3, 1, 4])


def test_logsigmoid_values_in_both_tails_equal_torch():
    class LS(torch.nn.Module):
        def forward(self, x):
            return F.logsigmoid(x)

    x = np.array([[-90.0, -25.0, -20.5, -3.0, 0.0, 2.0, 19.0, 30.0, 90.0]], np.float32)
    g = import_torch(LS(), (torch.from_numpy(x),))
    assert [n.op for n in g.nodes] == ["scale", "softplus", "scale"]
    got = interpret(g, {"x": x}).outputs["output"]
    assert_close(got, F.logsigmoid(torch.from_numpy(x)).numpy(), "logsigmoid")


def test_logsigmoid_step_matches_autograd():
    torch.manual_seed(0)
    model = LogSigmoidNet()
    x, y = _data()
    h = model.fc1(torch.from_numpy(x).flatten(1)) * 12.0
    assert (h.abs() > 20).any() and (h.abs() < 20).any()
    g = import_torch(model, (torch.from_numpy(x),))
    assert_interpreted_step_matches_autograd(model, g, x, y)


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_logsigmoid_steps_on_the_emulator_match_the_interpreter(sparsity):
    torch.manual_seed(0)
    x, y = _data()
    prog = satc.compile(LogSigmoidNet(), example_inputs=(torch.from_numpy(x),),
                        sparsity=sparsity, hw="sat-small")
    assert {"softplus", "softplus_grad"} <= {i.func for i in prog.program.instructions
                                             if i.op == "vec"}
    check_steps(prog, x, y, 2)
