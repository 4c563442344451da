"""Powers, rsqrt, variance and a LLaMA-style block (RMSNorm written out, SiLU-gated MLP, causal
attention) in plain torch: imported steps equal torch autograd, compiled steps (dense and
bdwp:2:8) equal the interpreter on the emulator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import satc
from satc.errors import CompileError
from tests.models.test_gpt_bert import check_lm_against_torch
from tests.satc.test_compile import check_steps
from tests.torch_reference import assert_close, torch_sgd_step

VOCAB, T, DIM = 32, 8, 16


class RMSNorm(torch.nn.Module):
    """LLaMA's RMSNorm as written in its reference code."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps, self.weight = eps, torch.nn.Parameter(1 + 0.1 * torch.randn(dim))

    def forward(self, x):
        h = x.float()
        return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class Block(torch.nn.Module):
    """Pre-norm causal attention and a SiLU-gated MLP (SwiGLU), no biases."""

    def __init__(self, dim: int, heads: int = 2, hidden: int = 32):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = RMSNorm(dim), RMSNorm(dim)
        self.qkv, self.out = torch.nn.Linear(dim, 3 * dim, bias=False), torch.nn.Linear(dim, dim, bias=False)
        self.gate, self.up = torch.nn.Linear(dim, hidden, bias=False), torch.nn.Linear(dim, hidden, bias=False)
        self.down = torch.nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class TinyLlama(torch.nn.Module):
    """Token embedding, one block, final RMSNorm, LM head."""

    def __init__(self):
        super().__init__()
        self.tok = torch.nn.Embedding(VOCAB, DIM)
        self.block, self.norm = Block(DIM), RMSNorm(DIM)
        self.head = torch.nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, ids):
        return self.head(self.norm(self.block(self.tok(ids))))


class Powers(torch.nn.Module):
    """Every new op on the path from the weights to the loss."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = torch.nn.Linear(8, 12), torch.nn.Linear(12, 3)

    def forward(self, x):
        h = self.fc(x)
        pos = h.pow(2) + 0.5
        v, m = torch.var_mean(h, -1, keepdim=True)
        y = h / torch.sqrt(v + 1e-3) + m                       # division by a [N, 1] tensor
        y = y + h.pow(3) * 0.1 + pos.pow(-1) + pos.pow(0.5) + torch.rsqrt(pos)
        y = y + h.var(-1, unbiased=False, keepdim=True) * torch.reciprocal(pos)
        return self.head(y + h.var(-1).unsqueeze(-1))


def _ids(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (2, T), generator=g), torch.randint(0, VOCAB, (2, T), generator=g)


def test_powers_rsqrt_var_div_match_torch_autograd():
    torch.manual_seed(0)
    model, x, y = Powers(), torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    g = satc.import_torch(model, (x,))
    assert {"pow", "rsqrt", "reduce_var", "reduce_mean"} <= {n.op for n in g.nodes}
    exps = sorted({n.attrs["exponent"] for n in g.nodes if n.op == "pow"})
    assert exps == [-1.0, 0.5, 2.0, 3.0]
    assert sorted(n.attrs["correction"] for n in g.nodes if n.op == "reduce_var") == [0, 1, 1]
    tg = satc.build_training_graph(g, optimizer=satc.SGD(lr=0.1, momentum=0.9))
    assert {"pow_grad", "rsqrt_grad", "reduce_var_grad"} <= {n.op for n in tg.nodes}
    out = satc.interpret(tg, {"x": x.numpy(), "y": y.numpy()})
    losses, grads, state = torch_sgd_step(model, x, y, 0.1, 0.9, 0.0)
    assert out.loss == pytest.approx(losses[0], rel=1e-5)
    for k, v in grads.items():
        assert_close(out.grads[k], v, f"grad {k}")
    for k, v in state.items():
        assert_close(out.new_state[k], v, f"state {k}")
    linear = satc.import_torch(torch.nn.Sequential(model.fc, model.head), (x,))
    linear_tg = satc.build_training_graph(linear, optimizer=satc.SGD(lr=0.1, momentum=0.9))
    assert satc.count_ops(tg).by_stage() == satc.count_ops(linear_tg).by_stage()  # no vector MACs


def test_tiny_llama_step_matches_torch():
    ids, labels = _ids(0)
    torch.manual_seed(0)
    tg = check_lm_against_torch(TinyLlama(), (ids,), labels, ["x"])
    ops = {n.op for n in tg.nodes}
    assert {"pow", "rsqrt", "reduce_mean", "silu", "softmax", "pow_grad", "rsqrt_grad"} <= ops
    assert "layernorm" not in ops


def test_torch_rms_norm_imports_as_the_written_out_form():
    torch.manual_seed(0)
    norm, x = torch.nn.RMSNorm(DIM, eps=1e-5), torch.randn(2, T, DIM)
    g = satc.import_torch(norm, (x,))
    assert [n.op for n in g.nodes] == ["pow", "reduce_mean", "add", "rsqrt", "mul", "mul"]
    assert_close(satc.interpret(g, {"x": x.numpy()}).outputs["output"], norm(x).detach().numpy(),
                 "rms_norm")


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_tiny_llama_compiles_and_steps_match_interpreter(sparsity):
    ids, labels = _ids(1)
    torch.manual_seed(0)
    prog = satc.compile(TinyLlama(), example_inputs=(ids,), sparsity=sparsity, hw="sat-small",
                        optimizer=satc.SGD(lr=0.05, momentum=0.9))
    if sparsity != "dense":
        assert {"block.gate.weight.ff", "block.down.weight.ff", "head.weight.ff"} <= set(prog.graph.state)
    check_steps(prog, ids.numpy(), labels.numpy(), 2)


def test_powers_compile_and_step_match_interpreter():
    torch.manual_seed(0)
    model, x, y = Powers(), torch.randn(6, 8), np.array([0, 1, 2, 0, 1, 2])
    prog = satc.compile(model, example_inputs=(x,), hw="sat-small")
    check_steps(prog, x.numpy(), y, 1)


def test_variance_over_a_leading_axis_is_refused_on_sat_with_the_fix():
    class LeadVar(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x) * x.var(0, keepdim=True)[:, :3]

    with pytest.raises(CompileError, match="trailing axes"):
        satc.compile(LeadVar(), example_inputs=(torch.randn(4, 4),), hw="sat-small")
