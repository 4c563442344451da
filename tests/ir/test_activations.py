"""Activations (sigmoid, tanh, SiLU, hardtanh / ReLU6, hardswish) and string conv padding:
import + autodiff + interpreter against torch autograd (loss, every gradient, the SGD state)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import satc
from satc.errors import ShapeError, UnsupportedOpError
from satc.frontend.torch_import import _string_padding
from satc.ir.graph import Graph
from satc.ir.ops import get_op
from satc.ir.types import TensorType
from tests.torch_reference import assert_close, torch_sgd_step


class Net(nn.Module):
    """conv -> act -> linear head (the conv makes the activation's input depend on a param)."""

    def __init__(self, act: nn.Module, padding: int | str = 1, kernel: int = 3, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel, padding=padding, dilation=dilation)
        self.act = act
        self.fc = nn.LazyLinear(5)

    def forward(self, x):
        return self.fc(torch.flatten(self.act(self.conv(x) * 3.0), 1))


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(silu(fc1(mean(x))))) as torchvision's SqueezeExcitation (1x1 convs)."""

    def __init__(self, c: int, r: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.silu(self.fc1(s))))


ACTS = {
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "silu": nn.SiLU, "hardswish": nn.Hardswish,
    "relu6": nn.ReLU6, "relu6_inplace": lambda: nn.ReLU6(inplace=True),
    "hardtanh": lambda: nn.Hardtanh(-0.5, 1.5), "silu_inplace": lambda: nn.SiLU(inplace=True),
    "squeeze_excite": lambda: SqueezeExcite(4, 2),
}


def check_against_torch(model: nn.Module, x: torch.Tensor, what: str) -> Graph:
    """One SGD step of the imported training graph equals torch: loss, every grad, state."""
    y = torch.arange(x.shape[0]) % 5
    with torch.no_grad():
        model(x)                                      # materialise lazy layers
    g = satc.import_torch(model, (x,))
    tg = satc.build_training_graph(g, optimizer=satc.SGD(lr=0.1, momentum=0.9))
    out = satc.interpret(tg, {"x": x.numpy(), "y": y.numpy()})
    losses, grads, state = torch_sgd_step(model, x, y, 0.1, 0.9, 0.0)
    assert out.loss == pytest.approx(losses[0], rel=1e-5), what
    assert set(out.grads) == set(grads)
    for k, v in grads.items():
        assert_close(out.grads[k], v, f"{what}: grad {k}")
    for k, v in state.items():
        if not k.endswith("num_batches_tracked"):     # satc's BN uses a fixed momentum
            assert_close(out.new_state[k], v, f"{what}: state {k}")
    return g


@pytest.mark.parametrize("name", sorted(ACTS))
def test_activation_matches_torch(name):
    torch.manual_seed(3)
    model = Net(ACTS[name]())
    g = check_against_torch(model, torch.randn(3, 3, 6, 6), name)
    ops = {n.op for n in g.nodes}
    want = {"relu6": "hardtanh", "relu6_inplace": "hardtanh", "silu_inplace": "silu",
            "squeeze_excite": "sigmoid"}.get(name, name)
    assert want in ops, ops


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (4, 1), (3, 2), (2, 3)])
def test_string_padding_same_matches_torch(kernel, dilation):
    torch.manual_seed(4)
    model = Net(nn.ReLU(), padding="same", kernel=kernel, dilation=dilation)
    g = check_against_torch(model, torch.randn(2, 3, 7, 7), f"same k{kernel} d{dilation}")
    (conv,) = [n for n in g.nodes if n.op == "conv2d"]
    total = dilation * (kernel - 1)
    assert conv.attrs["padding"] == [total // 2] * 2 + [total - total // 2] * 2
    assert conv.outputs[0].shape[2:] == (7, 7)


def test_string_padding_valid_and_refusals():
    torch.manual_seed(5)
    check_against_torch(Net(nn.ReLU(), padding="valid"), torch.randn(2, 3, 6, 6), "valid")
    with pytest.raises(UnsupportedOpError, match="stride 1"):
        _string_padding("same", [3, 3], [2, 2], [1, 1])


KINKS = np.array([-3.0, -0.5, 0.0, 1.5, 3.0, 6.0, -4.0, 7.0], np.float32)


@pytest.mark.parametrize("op,fn,attrs", [
    ("hardtanh", lambda t: F.hardtanh(t, -0.5, 1.5), {"min_val": -0.5, "max_val": 1.5}),
    ("hardtanh", F.relu6, {"min_val": 0.0, "max_val": 6.0}),
    ("hardswish", F.hardswish, {}),
    ("silu", F.silu, {}),
    ("sigmoid", torch.sigmoid, {}),
    ("tanh", torch.tanh, {}),
])
def test_kernels_and_kink_slopes_match_torch(op, fn, attrs):
    """At and around the kinks, forward values and torch's one-sided slopes agree exactly."""
    x = torch.tensor(np.concatenate([KINKS, np.linspace(-8, 8, 41, dtype=np.float32)]),
                     requires_grad=True)
    y = fn(x)
    dy = torch.linspace(0.5, 1.5, x.numel())
    (dx,) = torch.autograd.grad(y, x, dy)
    (ours,) = get_op(op).kernel([x.detach().numpy()], attrs)
    assert_close(ours, y.detach().numpy(), f"{op} forward")
    grad_in = ours if op in ("sigmoid", "tanh") else x.detach().numpy()
    (dours,) = get_op(f"{op}_grad").kernel([dy.numpy(), grad_in], attrs)
    assert_close(dours, dx.numpy(), f"{op} gradient")


def test_hardtanh_needs_ordered_bounds():
    g = Graph("bad")
    x = g.add_input("x", TensorType((2, 3)))
    with pytest.raises(ShapeError, match="min_val < max_val"):
        g.add1("hardtanh", [x], {"min_val": 1.0, "max_val": 0.0})
