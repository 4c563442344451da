"""leaky ReLU, ELU (SELU, CELU) and softplus: torch import + autodiff + interpreter against
torch autograd (loss, every gradient, the SGD state), and the kernels at their kinks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import satc
from satc.errors import ShapeError
from satc.ir.graph import Graph
from satc.ir.ops import get_op
from satc.ir.types import TensorType
from tests.ir.test_activations import KINKS, Net, check_against_torch
from tests.torch_reference import assert_close

ACTS = {
    "leaky_relu": (lambda: nn.LeakyReLU(0.1), "leaky_relu"),
    "leaky_relu_default_inplace": (lambda: nn.LeakyReLU(inplace=True), "leaky_relu"),
    "elu": (lambda: nn.ELU(0.7), "elu"),
    "elu_inplace": (lambda: nn.ELU(inplace=True), "elu"),
    "selu": (nn.SELU, "elu"),
    "celu": (lambda: nn.CELU(0.6), "elu"),
    "softplus": (nn.Softplus, "softplus"),
    "softplus_beta_threshold": (lambda: nn.Softplus(2.0, 5.0), "softplus"),
    "mish": (nn.Mish, "softplus"),      # torch decomposes it to x * tanh(softplus(x))
}


@pytest.mark.parametrize("name", sorted(ACTS))
def test_activation_matches_torch(name):
    make, op = ACTS[name]
    torch.manual_seed(3)
    g = check_against_torch(Net(make()), torch.randn(3, 3, 6, 6), name)
    assert op in {n.op for n in g.nodes}


def test_attrs_follow_torch():
    x = torch.randn(2, 3)
    cases = [(nn.LeakyReLU(0.2), "leaky_relu", {"negative_slope": 0.2}),
             (nn.ELU(0.5), "elu", {"alpha": 0.5, "scale": 1.0, "input_scale": 1.0}),
             (nn.SELU(), "elu", {"alpha": 1.6732632423543772, "scale": 1.0507009873554805,
                                 "input_scale": 1.0}),
             (nn.CELU(0.5), "elu", {"alpha": 0.5, "scale": 1.0, "input_scale": 2.0}),
             (nn.Softplus(), "softplus", {"beta": 1.0, "threshold": 20.0}),
             (nn.Softplus(3.0, 4.0), "softplus", {"beta": 3.0, "threshold": 4.0})]
    for mod, op, attrs in cases:
        g = satc.import_torch(nn.Sequential(mod), (x,))
        (node,) = [n for n in g.nodes if n.op == op]
        assert node.attrs == pytest.approx(attrs), mod


ATTRS = [
    ("leaky_relu", lambda t: F.leaky_relu(t, 0.1), {"negative_slope": 0.1}),
    ("leaky_relu", lambda t: F.leaky_relu(t, -0.3), {"negative_slope": -0.3}),
    ("elu", lambda t: F.elu(t, 0.7), {"alpha": 0.7, "scale": 1.0, "input_scale": 1.0}),
    ("elu", torch.selu, {"alpha": 1.6732632423543772, "scale": 1.0507009873554805,
                         "input_scale": 1.0}),
    ("elu", lambda t: F.celu(t, 0.5), {"alpha": 0.5, "scale": 1.0, "input_scale": 2.0}),
    ("elu", lambda t: torch.ops.aten.elu(t, 1.5, 0.5, 2.0),
     {"alpha": 1.5, "scale": 0.5, "input_scale": 2.0}),
    ("softplus", F.softplus, {"beta": 1.0, "threshold": 20.0}),
    ("softplus", lambda t: F.softplus(t, 2.0, 3.0), {"beta": 2.0, "threshold": 3.0}),
    ("softplus", lambda t: F.softplus(t, 0.5, 1.0), {"beta": 0.5, "threshold": 1.0}),
]


@pytest.mark.parametrize("op,fn,attrs", ATTRS)
def test_kernels_and_kink_slopes_match_torch(op, fn, attrs):
    """At and around the kinks (0, the softplus threshold), forward values and torch's
    one-sided slopes agree; large inputs do not overflow."""
    pts = np.concatenate([KINKS, [1.5, 2.0, 3.0, 40.0, -40.0, 100.0, -100.0],
                          np.linspace(-8, 8, 41)]).astype(np.float32)
    x = torch.tensor(pts, requires_grad=True)
    y = fn(x)
    dy = torch.linspace(0.5, 1.5, x.numel())
    (dx,) = torch.autograd.grad(y, x, dy)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        (ours,) = get_op(op).kernel([x.detach().numpy()], attrs)
        (dours,) = get_op(f"{op}_grad").kernel([dy.numpy(), x.detach().numpy()], attrs)
    assert ours.dtype == dours.dtype == np.float32
    assert_close(ours, y.detach().numpy(), f"{op} {attrs} forward")
    assert_close(dours, dx.numpy(), f"{op} {attrs} gradient")


def test_bad_attrs_are_refused():
    g = Graph("bad")
    x = g.add_input("x", TensorType((2, 3)))
    with pytest.raises(ShapeError, match="softplus needs a nonzero beta"):
        g.add1("softplus", [x], {"beta": 0.0, "threshold": 20.0})
    with pytest.raises(ShapeError, match="elu needs numeric alpha, scale, input_scale"):
        g.add1("elu", [x], {"alpha": 1.0, "scale": 1.0})
    with pytest.raises(ShapeError, match="leaky_relu needs numeric negative_slope"):
        g.add1("leaky_relu", [x], {"negative_slope": "0.1"})

