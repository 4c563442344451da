"""torch.log1p (aten.log1p) and torch.sign (aten.sign, ONNX Sign): values and gradients equal
torch autograd (log1p exact near 0; sign with torch's 0 at 0 and NaN and no gradient), and the
compiled steps (dense, bdwp:2:8) on the emulator equal the interpreter."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import satc
from satc.backends.sat.vecfuncs import VEC_FUNC_BY_NAME
from satc.frontend.onnx_import import import_onnx
from satc.frontend.torch_import import import_torch
from satc.ir.interpreter import interpret
from satc.ir.ops import get_op
from tests.satc.hidden_activation import HiddenActivationNet, check_step_matches_autograd, data
from tests.satc.test_compile import check_steps
from tests.satc.test_onnx_import import _assert_same_step, _export
from tests.torch_reference import assert_close, assert_interpreted_step_matches_autograd


def _log1p_net() -> HiddenActivationNet:
    """log1p(|h| ... ) kept above -1: log1p(h * h) (h * h >= 0, small near the zero unit)."""
    return HiddenActivationNet(lambda h: torch.log1p(h * h), zero_unit=True)


def _sign_net() -> HiddenActivationNet:
    """tanh(h) + sign(h): the gradient flows through tanh only; unit 0 is exactly zero."""
    return HiddenActivationNet(lambda h: torch.tanh(h) + torch.sign(h), zero_unit=True)


class _Unary(torch.nn.Module):
    def __init__(self, f) -> None:
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


def test_log1p_values_and_gradient_equal_torch_near_zero():
    x = np.array([[-0.5, -1e-7, 0.0, 3e-8, 1e-3, 4.0]], np.float32)
    g = import_torch(_Unary(torch.log1p), (torch.from_numpy(x),))
    assert [n.op for n in g.nodes] == ["log1p"]
    y = interpret(g, {"x": x}).outputs["output"]
    np.testing.assert_array_equal(y, torch.log1p(torch.from_numpy(x)).numpy())
    assert y[0, 3] == np.float32(3e-8)          # ln(1 + 3e-8) computed as ln(1.0) would be 0
    xt = torch.from_numpy(x).requires_grad_()
    torch.log1p(xt).backward(torch.full_like(xt, 2.0))
    (dx,) = get_op("log1p_grad").kernel([np.full_like(x, 2.0), x], {})
    assert_close(dx, xt.grad.numpy(), "log1p_grad")


def test_vec_log1p_is_exact_near_zero():
    f = VEC_FUNC_BY_NAME["log1p"]
    x = np.array([[1e-30, 3e-8, -1e-7, 0.5]], np.float32)
    got, want = f.kernel(x, None, None), torch.log1p(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)   # ln(1 + x) would be off 19% at 3e-8


def test_sign_values_equal_torch_including_zero_nan_inf_and_denormals():
    x = np.array([[np.nan, -0.0, 0.0, np.inf, -np.inf, -1e-45, 1e-45, 2.5, -3e38]], np.float32)
    g = import_torch(_Unary(torch.sign), (torch.from_numpy(x),))
    assert [n.op for n in g.nodes] == ["sign"]
    expect = torch.sign(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(interpret(g, {"x": x}).outputs["output"], expect)
    np.testing.assert_array_equal(expect, [[0, 0, 0, 1, -1, -1, 1, 1, -1]])


class _SignOfInput(torch.nn.Module):
    """fc(sign(x)): the input's NaN / inf / denormals / signed zeros reach only sign, so the
    loss stays finite and every logit depends on each sign value."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(12, 5)

    def forward(self, x):
        return self.fc(torch.sign(x).flatten(1))


def test_sign_of_special_values_trains_on_the_emulator_like_torch():
    """Signed zeros, denormals and values near fp32's limits (the session refuses NaN / inf
    inputs; the emitted pass sequence is run on those below)."""
    torch.manual_seed(0)
    x, y = data()
    special = [-0.0, 0.0, -1e-45, 1e-45, 7e-39, -3e38, 3e38, 2.5, -0.1, 0.0, 1e-20, -6e-8]
    x.reshape(4, 12)[:] = np.roll(np.array(special, np.float32), 1)[None]
    x.reshape(4, 12)[1:] *= np.float32(-1.0)
    model = _SignOfInput()
    g = import_torch(copy.deepcopy(model), (torch.from_numpy(x),))
    assert_interpreted_step_matches_autograd(model, g, x, y)
    prog = satc.compile(_SignOfInput(), example_inputs=(torch.from_numpy(x),), hw="sat-small")
    check_steps(prog, x, y, 2)

    vec = [i for i in prog.program.instructions if i.op == "vec"]
    funcs = [i.func for i in vec]
    at = next(k for k in range(len(vec)) if funcs[k:k + 5] == SIGN_PASSES)
    t = np.array([[np.nan, np.inf, -np.inf, -0.0, 1e-45, -3e38]], np.float32)
    for ins in vec[at:at + 5]:                      # the emitted passes, in place on one tile
        assert ins.s0_addr == ins.d_addr
        t = VEC_FUNC_BY_NAME[ins.func].kernel(t, t, ins)
    np.testing.assert_array_equal(t, torch.sign(torch.tensor([[np.nan, np.inf, -np.inf, -0.0, 1e-45,
                                                               -3e38]])).numpy())


SIGN_PASSES = ["mul_imm", "mul_imm", "max_imm", "min_imm", "pass_lt"]


@pytest.mark.parametrize("make, ops", [(_log1p_net, {"log1p"}), (_sign_net, {"sign", "tanh"})])
def test_step_matches_autograd(make, ops):
    torch.manual_seed(0)
    check_step_matches_autograd(make(), ops)


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
@pytest.mark.parametrize("make, funcs", [(_log1p_net, {"log1p", "pow_imm"}),
                                         (_sign_net, {"mul_imm", "max_imm", "min_imm", "pass_lt"})])
def test_steps_on_the_emulator_match_the_interpreter(make, funcs, sparsity):
    torch.manual_seed(0)
    x, y = data()
    prog = satc.compile(make(), example_inputs=(torch.from_numpy(x),), sparsity=sparsity,
                        hw="sat-small")
    assert funcs <= {i.func for i in prog.program.instructions if i.op == "vec"}
    check_steps(prog, x, y, 2)


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_sign_and_log1p_step_matches_torch(opset):
    torch.manual_seed(0)
    model = HiddenActivationNet(lambda h: torch.tanh(h) + torch.sign(h) + torch.log1p(h * h))
    x, y = data()
    g = import_onnx(_export(model, torch.from_numpy(x), opset))
    assert "sign" in {n.op for n in g.nodes}
    _assert_same_step(g, import_torch(copy.deepcopy(model), (torch.from_numpy(x),)), model, x, y)
