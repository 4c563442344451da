"""Local response normalisation (AlexNet, Inception v1, ZFNet): ONNX ``LRN`` and torch's
``LocalResponseNorm`` (its ``avg_pool3d`` over the channel window) import as pow, pad, slices,
sum, scale, add, pow and mul; the forward equals the ONNX reference evaluator and torch, a
training step torch autograd, and the compiled step (dense, bdwp:2:8) the interpreter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, version_converter
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

import satc
from satc.errors import UnsupportedOpError
from satc.frontend.onnx_import import import_onnx
from satc.frontend.torch_import import import_torch
from satc.ir.interpreter import interpret
from tests.satc.test_compile import check_steps
from tests.satc.test_onnx_import import _model, _vi
from tests.satc.test_onnx_zoo import _assert_eval_forward_matches, _randomized
from tests.torch_reference import assert_close

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


class LRNNet(torch.nn.Module):
    """conv -> relu -> LRN -> conv -> relu -> global mean -> linear."""

    def __init__(self, size: int = 5) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.lrn = torch.nn.LocalResponseNorm(size, alpha=0.5, beta=0.75, k=2.0)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lrn(torch.relu(self.conv1(x)))
        return self.fc(torch.relu(self.conv2(h)).mean((2, 3)))


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((4, 3, 8, 8)).astype(np.float32), np.array([0, 3, 1, 2])


def _lrn_model(size: int, c: int = 7, **attrs):
    node = helper.make_node("LRN", ["x"], ["y"], name="lrn", size=size, **attrs)
    return _model([node], [_vi("x", [2, c, 3, 3])], [_vi("y", [2, c, 3, 3])], 13)


def _spec_lrn(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """The ONNX operator spec, channel by channel: the squares of channels max(0, c -
    floor((size-1)/2)) .. min(C-1, c + ceil((size-1)/2)). (onnx.reference's LRN loops over
    the batch axis instead of the channels, so it is not used as the reference.)"""
    x64, c = x.astype(np.float64), x.shape[1]
    out = np.empty_like(x64)
    for ch in range(c):
        lo, hi = max(0, ch - (size - 1) // 2), min(c - 1, ch + size // 2)
        s = (x64[:, lo:hi + 1] ** 2).sum(axis=1)
        out[:, ch] = x64[:, ch] / (bias + alpha / size * s) ** beta
    return out


@pytest.mark.parametrize("size", [1, 2, 4, 5])
def test_onnx_lrn_equals_the_operator_spec(size):
    """Odd and even windows (ONNX puts floor((size-1)/2) channels before c, torch size//2)."""
    x = np.random.default_rng(size).standard_normal((2, 7, 3, 3)).astype(np.float32) * 3
    g = import_onnx(_lrn_model(size, alpha=0.3, beta=0.6, bias=1.5))
    assert {n.op for n in g.nodes} <= {"pow", "pad", "slice", "sum", "scale", "add", "mul"}
    got = interpret(g, {"x": x}).outputs["output"]
    assert_close(got, _spec_lrn(x, size, 0.3, 0.6, 1.5), f"LRN size {size}")
    if size % 2:
        want = torch.nn.LocalResponseNorm(size, 0.3, 0.6, 1.5)(torch.from_numpy(x))
        assert_close(got, want.numpy(), f"LRN size {size} vs torch")


def test_onnx_lrn_defaults():
    """alpha 1e-4, beta 0.75, bias 1."""
    x = np.random.default_rng(1).standard_normal((2, 7, 3, 3)).astype(np.float32) * 30
    got = interpret(import_onnx(_lrn_model(3)), {"x": x}).outputs["output"]
    assert_close(got, _spec_lrn(x, 3, 1e-4, 0.75, 1.0), "LRN defaults")


def test_lrn_on_a_matrix_is_refused():
    node = helper.make_node("LRN", ["x"], ["y"], name="lrn", size=3)
    m = _model([node], [_vi("x", [2, 7])], [_vi("y", [2, 7])], 13)
    with pytest.raises(UnsupportedOpError, match="LRN"):
        import_onnx(m)


@pytest.mark.parametrize("size", [3, 4])
def test_torch_local_response_norm_step_matches_autograd(size):
    """torch's LocalResponseNorm (even size: torch's own window placement) trains like torch."""
    torch.manual_seed(0)
    model = LRNNet(size)
    x, y = _data()
    tg = satc.build_training_graph(import_torch(model, (torch.from_numpy(x),)),
                                   optimizer=satc.SGD(lr=0.1))
    out = interpret(tg, {"x": x, "y": y})
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    assert out.loss == pytest.approx(loss.item(), rel=1e-5)
    for k, p in model.named_parameters():
        assert_close(out.grads[k], p.grad.numpy(), f"grad {k}")


def test_onnx_lrn_trains_like_torch():
    """A handmade ONNX graph (LRN -> Flatten -> Gemm): loss and gradients of one step equal
    torch autograd through LocalResponseNorm (torch.onnx.export writes LRN out as Pad / If /
    Pow, not as an LRN node, so the graph is made by hand)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6, 3, 3)).astype(np.float32) * 2
    y = np.array([0, 3, 1, 2])
    w = (rng.standard_normal((4, 54)) * 0.2).astype(np.float32)
    b = (rng.standard_normal(4) * 0.1).astype(np.float32)
    nodes = [helper.make_node("LRN", ["x"], ["n"], name="lrn", size=5, alpha=0.5, beta=0.75,
                              bias=2.0),
             helper.make_node("Flatten", ["n"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], name="fc", transB=1)]
    m = _model(nodes, [_vi("x", [4, 6, 3, 3])], [_vi("y", [4, 4])], 13,
               {"fc.weight": w, "fc.bias": b})
    out = interpret(satc.build_training_graph(import_onnx(m)), {"x": x, "y": y})
    tw, tb = (torch.tensor(v, requires_grad=True) for v in (w, b))
    h = torch.nn.LocalResponseNorm(5, 0.5, 0.75, 2.0)(torch.from_numpy(x)).flatten(1)
    loss = torch.nn.functional.cross_entropy(h @ tw.T + tb, torch.from_numpy(y))
    loss.backward()
    assert out.loss == pytest.approx(loss.item(), rel=1e-5)
    assert_close(out.grads["fc.weight"], tw.grad.numpy(), "grad fc.weight")
    assert_close(out.grads["fc.bias"], tb.grad.numpy(), "grad fc.bias")


def test_avg_pool3d_other_than_a_depth_window_is_refused():
    class Pool3d(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.avg_pool3d(x, (2, 2, 1)).flatten(1)

    with pytest.raises(UnsupportedOpError, match="depth window"):
        import_torch(Pool3d(), (torch.zeros(2, 1, 4, 4, 4),))


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_lrn_steps_on_the_emulator_match_the_interpreter(sparsity):
    torch.manual_seed(0)
    x, y = _data()
    prog = satc.compile(LRNNet(5), example_inputs=(torch.from_numpy(x),), sparsity=sparsity,
                        hw="sat-small", optimizer=satc.SGD(lr=0.05, momentum=0.9))
    check_steps(prog, x, y, 2)


@pytest.mark.parametrize("name", ["bvlc_alexnet", "inception_v1", "zfnet512"])
def test_zoo_graphs_with_lrn_build_a_training_graph(name):
    g = import_onnx(LIGHT / f"light_{name}.onnx")
    tg = satc.sparsify(satc.build_training_graph(g), "bdwp:2:8")
    lrn_pows = [n for n in g.nodes if n.op == "pow" and n.attrs["exponent"] == -0.75]
    assert lrn_pows and any(n.op == "pow_grad" for n in tg.nodes)


class LRN(OpRun):
    """LRN for onnx.reference by the operator spec (:func:`_spec_lrn`), replacing the
    evaluator's own kernel, which loops over the batch axis (``new_ops`` matches by class
    name, so the class is called LRN)."""

    op_domain = ""

    def _run(self, x, alpha=None, beta=None, bias=None, size=None):
        return (_spec_lrn(x, size, alpha, beta, bias).astype(x.dtype),)


@pytest.mark.parametrize("name", ["bvlc_alexnet", "zfnet512",
                                  pytest.param("inception_v1", marks=pytest.mark.slow)])  # 10 s
def test_zoo_graphs_with_lrn_eval_forward_equals_the_reference_evaluator(name):
    """The whole opset-9 graph (seeded random weights) in the interpreter against
    onnx.reference on its opset-15 conversion, with the spec's LRN."""
    model, input_name, x = _randomized(LIGHT / f"light_{name}.onnx")
    evaluator = ReferenceEvaluator(version_converter.convert_version(model, 15), new_ops=[LRN])
    (ref,) = evaluator.run(None, {input_name: x})
    _assert_eval_forward_matches(name, model, x, ref)
