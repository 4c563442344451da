"""ONNX exports (torch.onnx.export) of a model with LeakyRelu, Elu, Selu, Celu and Softplus
train like the torch frontend and torch autograd; Softplus has ONNX's semantics (no threshold)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import helper

from satc.errors import UnsupportedOpError
from satc.frontend.onnx_import import F32_MAX, import_onnx
from satc.frontend.torch_import import import_torch
from satc.ir.interpreter import interpret
from tests.satc.test_leaky_elu_softplus_compile import ActNet
from tests.satc.test_onnx_import import _assert_same_step, _export, _model, _vi


class OnnxActNet(ActNet):
    """ActNet with softplus at torch's defaults only (inputs below torch's threshold, where
    ONNX's Softplus equals torch's)."""

    def forward(self, x):
        h = F.celu(self.fc1(self.trunk(x)) * 3.0, 0.5)
        return self.head(F.softplus(self.fc2(h) * 3.0))


@pytest.mark.parametrize("opset", [12, 13, 17, 20])
def test_activation_model_step_matches_torch(opset):
    torch.manual_seed(0)
    model = OnnxActNet()
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    y = np.array([0, 3, 1, 4])
    g = import_onnx(_export(model, torch.from_numpy(x), opset))
    elus = sorted((n.attrs["alpha"], n.attrs["scale"], n.attrs["input_scale"])
                  for n in g.nodes if n.op == "elu")
    assert elus == [(0.5, 1.0, 2.0), (0.7, 1.0, 1.0), (1.6732632, 1.050701, 1.0)]
    assert [n.attrs for n in g.nodes if n.op == "softplus"] == [{"beta": 1.0, "threshold": F32_MAX}]
    assert [n.attrs for n in g.nodes if n.op == "leaky_relu"] == [{"negative_slope": 0.1}]
    tg = import_torch(copy.deepcopy(model), (torch.from_numpy(x),))
    _assert_same_step(g, tg, model, x, y)


def _single(op_type: str, **attrs):
    node = helper.make_node(op_type, ["x"], ["y"], name="act", **attrs)
    return _model([node], [_vi("x", [2, 3])], [_vi("y", [2, 3])], 13)


def test_handmade_defaults_and_softplus_without_threshold():
    """ONNX defaults (LeakyRelu alpha 0.01, Elu alpha 1, Selu's constants); Softplus is
    log(exp(x) + 1) for every x, torch's threshold does not apply."""
    x = np.array([[-2.0, 0.0, 0.5], [3.0, 25.0, -30.0]], np.float32)
    t = torch.from_numpy(x)
    cases = {"LeakyRelu": F.leaky_relu(t, 0.01), "Elu": F.elu(t), "Selu": torch.selu(t),
             "Celu": F.celu(t), "Softplus": torch.log1p(torch.exp(t.double())).float()}
    for op_type, want in cases.items():
        out = interpret(import_onnx(_single(op_type)), {"x": x}).outputs["output"]
        np.testing.assert_allclose(out, want.numpy(), rtol=1e-6, atol=1e-7, err_msg=op_type)


def test_celu_alpha_zero_is_refused():
    with pytest.raises(UnsupportedOpError, match="Celu node 'act' with alpha=0"):
        import_onnx(_single("Celu", alpha=0.0))
