"""leaky ReLU, ELU (SELU, CELU) and softplus compiled to SAT: emulated steps equal the
interpreter (dense and bdwp:2:8), the compiled dense step equals torch autograd, and the
vector functions of the lowering match the IR kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import satc
from satc.errors import CompileError
from satc.ir.ops import get_op
from tests.ir.test_activations import check_against_torch
from tests.satc.test_compile import check_steps
from tests.torch_reference import assert_close


class ActNet(nn.Module):
    """conv + BN + leaky ReLU, conv + ELU, conv + SELU, pooling, linear + CELU, linear +
    softplus (beta 2, threshold 3: both branches are taken), linear + softplus, linear head."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.LeakyReLU(0.1))
        self.conv1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ELU(0.7))
        self.conv2 = nn.Sequential(nn.Conv2d(8, 16, 1), nn.SELU())
        self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 16)
        self.head = nn.Linear(16, classes)

    def trunk(self, x):
        """The convolutions and global pooling: [N, 16]."""
        h = self.conv2(self.conv1(self.stem(x)))
        return torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)

    def forward(self, x):
        h = F.softplus(F.celu(self.fc1(self.trunk(x)) * 3.0, 0.5), 2.0, 3.0)
        return self.head(F.softplus(self.fc2(h) * 4.0))


OPS = {"leaky_relu", "elu", "softplus"}


def _data():
    torch.manual_seed(0)
    return torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))


def _model():
    torch.manual_seed(0)
    return ActNet()


def _compile(sparsity: str, model: nn.Module | None = None):
    x, _ = _data()
    return satc.compile(model or _model(), example_inputs=(x,), sparsity=sparsity,
                        hw="sat-small", optimizer=satc.SGD(lr=0.05, momentum=0.9))


def test_interpreter_matches_torch():
    x, _ = _data()
    check_against_torch(_model(), x, "leaky / elu / softplus net")


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_emulated_steps_match_interpreter(sparsity):
    x, y = _data()
    prog = _compile(sparsity)
    ops = {n.op for n in prog.graph.nodes}
    assert OPS | {f"{op}_grad" for op in OPS} <= ops
    funcs = {i.func for i in prog.program.instructions if i.op == "vec"}
    assert {"leaky_relu", "leaky_relu_grad", "elu", "elu_grad", "softplus",
            "softplus_grad"} <= funcs
    check_steps(prog, x.numpy(), y.numpy(), 2)


def test_emulated_step_matches_torch_dense():
    """The compiled dense step's loss, gradients and updated weights equal torch autograd."""
    x, y = _data()
    model = _model()
    prog = _compile("dense", model)
    res = prog.step(x.numpy(), y.numpy())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss = F.cross_entropy(model.train()(x), y)
    loss.backward()
    assert res.loss == pytest.approx(loss.item(), rel=1e-4)
    for k, p in model.named_parameters():
        np.testing.assert_allclose(res.grads[k], p.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
    opt.step()
    for k, p in model.named_parameters():
        np.testing.assert_allclose(prog.state[k], p.detach().numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=k)


def test_one_attribute_activations_are_one_vector_instruction_per_chunk():
    """Plain ELU and softplus (beta 1) add no mul_imm to the program (as many as with ReLU)."""
    x, _ = _data()

    def mul_imms(act1: nn.Module, act2: nn.Module) -> tuple[int, set[str]]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), act1, nn.Flatten(),
                              nn.Linear(256, 8), act2, nn.Linear(8, 10))
        funcs = [i.func for i in _compile("dense", model).program.instructions if i.op == "vec"]
        return funcs.count("mul_imm"), set(funcs)

    n, funcs = mul_imms(nn.ELU(), nn.Softplus())
    assert {"elu", "elu_grad", "softplus", "softplus_grad"} <= funcs
    assert n == mul_imms(nn.ReLU(), nn.ReLU())[0]


class NegInputScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.ops.aten.elu(x, 1.0, 1.0, -1.0))


def test_elu_with_negative_input_scale_is_refused():
    """The interpreter runs it; SAT names the node, the attribute and the fix."""
    with pytest.raises(CompileError, match=r"elu.*input_scale=-1.0.*fix: .*input_scale > 0"):
        satc.compile(NegInputScale(), example_inputs=(torch.randn(4, 8),), hw="sat-small")


@pytest.mark.parametrize("op,attrs,imm", [
    ("leaky_relu", {"negative_slope": 0.1}, 0.1),
    ("elu", {"alpha": 0.7, "scale": 1.0, "input_scale": 1.0}, 0.7),
    ("softplus", {"beta": 1.0, "threshold": 2.0}, 2.0),
])
def test_vector_functions_match_ir_kernels(op, attrs, imm):
    from types import SimpleNamespace

    from satc.backends.sat.vecfuncs import VEC_FUNC_BY_NAME
    x = np.concatenate([np.linspace(-100, 100, 201), [0.0, 2.0, 1e-3, -1e-3]]).astype(np.float32)
    dy = np.linspace(0.5, 1.5, x.size).astype(np.float32)
    p = SimpleNamespace(imm=imm)
    with np.errstate(over="raise", invalid="raise"):
        ours = VEC_FUNC_BY_NAME[op].kernel(x[None], None, p)[0]
        dours = VEC_FUNC_BY_NAME[f"{op}_grad"].kernel(x[None], dy[None], p)[0]
    assert_close(ours, get_op(op).kernel([x], attrs)[0], f"{op} forward")
    assert_close(dours, get_op(f"{op}_grad").kernel([dy, x], attrs)[0], f"{op} gradient")
