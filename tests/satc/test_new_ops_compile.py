"""The activations of MobileNet / EfficientNet-style models compiled to SAT: emulated steps
equal the interpreter (dense and bdwp:2:8), and the interpreter equals torch autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import satc
from tests.ir.test_activations import SqueezeExcite, check_against_torch
from tests.satc.test_compile import check_steps


class MobileBlockNet(nn.Module):
    """Stem conv + BN + hardswish, a 'same'-padded conv + BN + SiLU, squeeze-excite (sigmoid
    gate), a 1x1 conv + ReLU6, global pooling, linear + tanh + hardtanh, linear head."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.Hardswish())
        self.conv = nn.Sequential(nn.Conv2d(8, 16, 3, padding="same"), nn.BatchNorm2d(16), nn.SiLU())
        self.se = SqueezeExcite(16, 8)
        self.proj = nn.Sequential(nn.Conv2d(16, 16, 1), nn.ReLU6())
        self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, classes)

    def forward(self, x):
        h = self.proj(self.se(self.conv(self.stem(x))))
        h = torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)
        return self.fc2(F.hardtanh(torch.tanh(self.fc1(h)) * 2.0, -1.0, 1.0))


def _data():
    torch.manual_seed(0)
    return torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))


def _model():
    torch.manual_seed(0)
    return MobileBlockNet()


def test_interpreter_matches_torch():
    x, _ = _data()
    check_against_torch(_model(), x, "mobile block net")


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_emulated_steps_match_interpreter(sparsity):
    x, y = _data()
    prog = satc.compile(_model(), example_inputs=(x,), sparsity=sparsity, hw="sat-small",
                        optimizer=satc.SGD(lr=0.05, momentum=0.9))
    ops = {n.op for n in prog.graph.nodes}
    assert {"hardswish", "silu", "sigmoid", "hardtanh", "tanh", "mul"} <= ops
    assert {"hardswish_grad", "silu_grad", "sigmoid_grad", "hardtanh_grad", "tanh_grad"} <= ops
    if sparsity != "dense":   # every non-stem conv and linear weight is pruned, the stem is not
        pruned = {k[:-3] for k in prog.graph.state if k.endswith(".ff")}
        assert pruned == {"conv.0.weight", "se.fc1.weight", "se.fc2.weight", "proj.0.weight",
                          "fc1.weight", "fc2.weight"}
    check_steps(prog, x.numpy(), y.numpy(), 2)


def test_emulated_step_matches_torch_dense():
    """The compiled dense step's loss and gradients equal torch autograd."""
    x, y = _data()
    model = _model()
    prog = satc.compile(model, example_inputs=(x,), sparsity="dense", hw="sat-small",
                        optimizer=satc.SGD(lr=0.05, momentum=0.9))
    res = prog.step(x.numpy(), y.numpy())
    loss = F.cross_entropy(model.train()(x), y)
    loss.backward()
    assert res.loss == pytest.approx(loss.item(), rel=1e-4)
    for k, p in model.named_parameters():
        np.testing.assert_allclose(res.grads[k], p.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
