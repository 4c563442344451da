"""ONNX exports (torch.onnx.export, opsets 11-20) of a model with the MobileNet / EfficientNet
activations and 'same' padding train like the torch frontend and torch autograd."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from satc.frontend.onnx_import import import_onnx
from satc.frontend.torch_import import import_torch
from tests.satc.test_new_ops_compile import MobileBlockNet
from tests.satc.test_onnx_import import _assert_same_step, _export


@pytest.mark.parametrize("opset", [11, 13, 14, 17, 20])
def test_activation_model_step_matches_torch(opset):
    torch.manual_seed(0)
    model = MobileBlockNet()
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    y = np.array([0, 3, 1, 4])
    g = import_onnx(_export(model, torch.from_numpy(x), opset))
    ops = {n.op for n in g.nodes}
    assert {"sigmoid", "tanh", "hardtanh"} <= ops
    assert ("hardswish" in ops) == (opset >= 14)    # HardSwish is an ONNX op from opset 14
    tg = import_torch(copy.deepcopy(model), (torch.from_numpy(x),))
    _assert_same_step(g, tg, model, x, y)
