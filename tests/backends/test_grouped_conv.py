"""Grouped and depthwise convolutions (groups > 1) on SAT: FF, BP and WU per conv group."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import satc
from satc.errors import CompileError
from tests.satc.test_compile import check_steps


class _Mobile(nn.Module):
    """MobileNetV2-style inverted residual (expand 1x1, ReLU6, depthwise 3x3 stride 1,
    project 1x1, residual), then a depthwise 3x3 stride 2 (asymmetric padding) and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.expand = nn.Conv2d(8, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.project = nn.Conv2d(16, 8, 1)
        self.down = nn.Conv2d(8, 8, 3, stride=2, groups=8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = nn.functional.relu6(self.dw(nn.functional.relu6(self.expand(x))))
        x = x + self.project(y)
        x = self.down(nn.functional.pad(x, (0, 1, 0, 1)))
        return self.fc(torch.relu(x).flatten(1))


class _ResNeXt(nn.Module):
    """A ResNeXt-style grouped 3x3 (g=2, 32 channels per group: N:M under BDWP), a grouped
    1x1 (g=4, 16 in / 4 out per group: dense under BDWP, Co/g < 32) and a strided grouped
    5x5 (g=4, stride 2, 1 out channel per group)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.g3 = nn.Conv2d(64, 64, 3, padding=1, groups=2)
        self.g1 = nn.Conv2d(64, 16, 1, groups=4)
        self.g5 = nn.Conv2d(16, 8, 5, stride=2, padding=2, groups=4)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.g1(torch.relu(self.g3(x))))
        return self.fc(torch.relu(self.g5(x)).flatten(1))


class _ConvNeXt(nn.Module):
    """A ConvNeXt-style block: patchify stem, 7x7 depthwise, a pointwise MLP (1x1 convs:
    the Linears of ConvNeXt, GELU), residual; then a depthwise 4x4 with "same" (asymmetric)
    padding and a head. (No channels-last LayerNorm: its permutes are another change.)"""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 2, stride=2)
        self.dw = nn.Conv2d(16, 16, 7, padding=3, groups=16)
        self.fc1, self.fc2 = nn.Conv2d(16, 64, 1), nn.Conv2d(64, 16, 1)
        self.dw4 = nn.Conv2d(16, 16, 4, padding="same", groups=16)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.fc2(nn.functional.gelu(self.fc1(self.dw(x))))
        x = self.dw4(x + y)
        return self.fc(x.flatten(1))


def _data(batch: int = 2):
    torch.manual_seed(0)
    return torch.randn(batch, 3, 8, 8), torch.randint(0, 10, (batch,))


def _compile(model: nn.Module, sparsity: str):
    torch.manual_seed(0)
    x, _ = _data()
    return satc.compile(model, example_inputs=(x,), sparsity=sparsity, hw="sat-small",
                        optimizer=satc.SGD(lr=0.05, momentum=0.9))


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
@pytest.mark.parametrize("make", [_Mobile, _ResNeXt, _ConvNeXt])
def test_grouped_convs_train_like_the_interpreter(make, sparsity):
    """Two emulated steps equal the interpreter: loss, logits, every gradient, all state."""
    torch.manual_seed(0)
    prog = _compile(make(), sparsity)
    x, y = _data()
    check_steps(prog, x.numpy(), y.numpy(), 2)


def test_grouped_conv_ff_equals_torch():
    """The logits of a dense step equal torch's forward pass (grouped F.conv2d)."""
    torch.manual_seed(0)
    model = _ResNeXt()
    prog = _compile(model, "dense")
    x, y = _data()
    res = prog.step(x, y)
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(res.outputs["logits"], want, rtol=1e-4, atol=1e-5)


def test_bdwp_keeps_grouped_and_depthwise_convs_dense_with_a_reason():
    torch.manual_seed(0)
    rows = {r.layer: r for r in _compile(_Mobile(), "bdwp:2:8").graph.meta["sparsity"].layers}
    assert (rows["dw"].ff, rows["dw"].reason) == ("dense", "depthwise conv: 1 input channel per group")
    assert rows["down"].reason == "depthwise conv: 1 input channel per group"
    assert rows["expand"].ff == "2:8 along Ci"
    torch.manual_seed(0)
    rows = {r.layer: r for r in _compile(_ResNeXt(), "bdwp:2:8").graph.meta["sparsity"].layers}
    assert (rows["g3"].ff, rows["g3"].bp) == ("2:8 along Ci", "2:8 along Co")
    assert rows["g1"].ff == "dense" and rows["g1"].reason.startswith(
        "grouped conv: Co/g = 4 is not a multiple of 32")


def test_dilated_grouped_conv_is_refused_naming_the_node():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, dilation=2, padding=2, groups=2),
                          nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    with pytest.raises(CompileError, match=r"layer '1'.*dilated convolution.*fix: use dilation 1"):
        _compile(model, "dense")


def test_coverage_reports_grouped_convs_on_sat_and_dilated_ones_not():
    from satc.coverage import coverage
    x, _ = _data()
    rows = {r.op: r for r in coverage(_ResNeXt(), example_inputs=(x,))}
    assert rows["conv2d"].status == "sat" and "groups [2, 4]" in rows["conv2d"].note
    dil = nn.Sequential(nn.Conv2d(3, 8, 3, dilation=2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    assert {r.op: r for r in coverage(dil, example_inputs=(x,))}["conv2d"].status == "interpreter"


def test_torch_convert_keeps_the_same_grouped_layers_dense():
    """satc.sparsity.convert applies the IR pass's rule: same layers dense, same reasons."""
    from satc.sparsity import convert, report
    torch.manual_seed(0)
    rows = {r.name: r for r in report(convert(_ResNeXt(), "bdwp:2:8"))}
    assert rows["g3"].ff == "2:8 along Ci" and rows["g3"].bp == "2:8 along Co"
    assert rows["g1"].ff == "dense" and rows["g1"].reason.startswith("grouped conv: Co/g = 4")
    rows = {r.name: r for r in report(convert(_Mobile(), "bdwp:2:8"))}
    assert rows["dw"].reason == "depthwise conv: 1 input channel per group"


def test_stride1_depthwise_runs_on_the_vector_engine():
    """The stride-1 depthwise FF and BP are 9 accumulating vec muls per image (16 channels
    in one chunk), WU 9 reduce_dots per image; no GEMM. The strided depthwise conv uses the
    STCE."""
    torch.manual_seed(0)
    prog = _compile(_Mobile(), "dense")
    ins = prog.program.instructions

    def ops(layer, op):
        spans = [s for s in prog.spans if s.node.layer == layer and s.node.op == op]
        return [ins[i].op for s in spans for i in range(s.start, s.end)]
    ff = ops("dw", "conv2d")
    assert "gemm" not in ff and ff.count("vec") == 2 * 9
    bp = ops("dw", "conv2d_grad_input")
    assert "gemm" not in bp and bp.count("vec") == 2 * 9
    wu = [ins[i] for s in prog.spans if s.node.layer == "dw" and s.node.op == "conv2d_grad_weight"
          for i in range(s.start, s.end)]
    assert [i.func for i in wu if i.op == "vec"] == ["reduce_dot"] * (2 * 9)
    assert "gemm" not in [i.op for i in wu] and "gemm" in ops("down", "conv2d")
