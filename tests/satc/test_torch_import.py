"""PyTorch frontend: op coverage, state, names, and its errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import satc
from satc.errors import FrontendError, UnsupportedOpError
from satc.ir.types import Stage


class TwoBadOps(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.cumsum(self.fc(x), 1) + torch.sort(x, 1)[0]


def test_unsupported_ops_are_all_listed_in_one_error():
    with pytest.raises(UnsupportedOpError) as e:
        satc.import_torch(TwoBadOps(), (torch.randn(2, 4),))
    msg = str(e.value)
    assert "aten.cumsum.default" in msg and "aten.sort.default" in msg
    assert "node 'cumsum'" in msg


def test_shape_mismatch_between_model_and_inputs_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    with pytest.raises(FrontendError, match=r"inputs \[\(2, 1, 8, 8\)\].*match the model"):
        satc.import_torch(model, (torch.randn(2, 1, 8, 8),))


def test_state_names_modes_and_input_name():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    g = satc.import_torch(model, (torch.randn(2, 3, 6, 6),))
    assert not model.training, "the module's own mode is restored"
    assert [v.name for v in g.inputs] == ["x"]
    assert set(g.params) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert set(g.buffers) == {"1.running_mean", "1.running_var"}  # num_batches_tracked dropped
    bn = next(n for n in g.nodes if n.op == "batchnorm")
    assert bn.attrs["training"] is True and bn.layer == "1"
    assert set(g.state_updates) == {"1.running_mean", "1.running_var"}


def test_eval_mode_import_has_no_training_gradient():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 2))
    g = satc.import_torch(model, (torch.randn(2, 3, 6, 6),), train=False)
    with pytest.raises(satc.errors.IRError, match="batchnorm in eval mode"):
        satc.build_training_graph(g)


def test_stages_first_layer_has_no_input_gradient():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(16, 3))
    tg = satc.build_training_graph(satc.import_torch(model, (torch.randn(2, 3, 6, 6),)))
    ops = {(n.op, n.layer): n.stage for n in tg.nodes}
    assert ops[("conv2d", "0")] == Stage.FF
    assert ops[("conv2d_grad_weight", "0")] == Stage.WU
    assert ("conv2d_grad_input", "0") not in ops, "no BP GEMM for the first layer"
    assert ops[("conv2d_grad_input", "2")] == Stage.BP
    assert ops[("sgd", "4")] == Stage.OPT
    stages = [n.stage for n in tg.nodes]
    assert stages.index(Stage.OPT) > max(i for i, s in enumerate(stages) if s in (Stage.BP, Stage.WU))


def test_trailing_softmax_is_dropped_for_the_loss():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.Softmax(dim=1))
    tg = satc.build_training_graph(satc.import_torch(model, (torch.randn(2, 1, 4, 4),)))
    assert all(n.op != "softmax" for n in tg.nodes)
    assert tg.outputs["logits"].producer.op == "bias_add"


def test_a_float64_model_gets_the_fix_not_an_unknown_dtype():
    import pytest
    import torch

    from satc.errors import FrontendError
    from satc.frontend.torch_import import import_torch
    from satc.models import get_model

    with pytest.raises(FrontendError, match=r"parameter '.*' is float64.*model.float\(\)"):
        import_torch(get_model("mlp").double(), (torch.zeros(2, 1, 8, 8, dtype=torch.float64),))
    with pytest.raises(FrontendError, match=r"example input 0 is float64"):
        import_torch(get_model("mlp"), (torch.zeros(2, 1, 8, 8, dtype=torch.float64),))
