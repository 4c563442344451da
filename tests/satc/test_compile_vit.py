"""satc.compile on transformers: ViT training steps on the emulator equal the interpreter.

Covers the transformer lowerings (layernorm, GELU, softmax, batched attention
GEMMs, transposes, token mean, broadcasts, sum_to) in FF, BP and WU, dense and
BDWP, and AdamW on the WUVE. fp32 ``sat-small``: rtol 1e-4, atol 1e-5.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import pytest
import torch
from torch import nn

import satc
from satc.backends.sat.codegen.tokens import unordered_hazards
from satc.backends.sat.config import load_hardware
from satc.errors import CompileError
from satc.models import get_model
from tests.satc.test_compile import _fp16_gemm_reference, check_mixed_steps, check_steps

RTOL, ATOL = 1e-4, 1e-5
TINY = {"dim": 16, "depth": 1, "heads": 2}
LINEARS = ("blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v", "blocks.0.attn.proj",
           "blocks.0.mlp.0", "blocks.0.mlp.3", "head")


def _images(batch: int = 2):
    torch.manual_seed(1)
    return torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))


@lru_cache(maxsize=None)
def _vit(**kw):
    torch.manual_seed(0)
    return get_model("vit_tiny", **kw)


@lru_cache(maxsize=None)
def _compile_vit(sparsity: str) -> satc.compiler.CompiledProgram:
    x, _ = _images()
    return satc.compile(_vit(**TINY), example_inputs=(x,), sparsity=sparsity, hw="sat-small",
                        optimizer=satc.SGD(lr=0.05, momentum=0.9, weight_decay=5e-4))


@pytest.mark.parametrize("sparsity,steps", [("dense", 1), ("bdwp:2:8", 3)])
def test_vit_steps_match_interpreter(sparsity, steps):
    x, y = _images()
    check_steps(_compile_vit(sparsity), x.numpy(), y.numpy(), steps)


def test_vit_program_uses_sat_units():
    """N:M on every linear weight (compressed regions only), a dense patch conv, batched
    attention GEMMs, and every memory hazard ordered by tokens."""
    prog = _compile_vit("bdwp:2:8")
    ops = {n.op for n in prog.graph.nodes}
    assert {"layernorm", "layernorm_grad", "gelu_grad",
            "softmax", "softmax_grad", "transpose", "reduce_mean", "broadcast_to", "sum_to",
            "conv2d", "conv2d_grad_weight"} <= ops
    assert not ops & {"layernorm_grad_input", "layernorm_grad_params", "gelu"}
    # the MLP's GELU is the first Linear's epilogue, its residual add the second Linear's input
    mlp = {n.layer: n for n in prog.graph.nodes if n.op == "matmul_bias"}
    assert mlp["blocks.0.mlp.0"].attrs.get("gelu") and len(mlp["blocks.0.mlp.3"].inputs) == 4
    # each block norm's dx is read only by a residual gradient sum: folded in as a term
    terms = {n.layer: len(n.inputs) - 5 for n in prog.graph.nodes if n.op == "layernorm_grad"}
    assert terms == {"blocks.0.norm1": 1, "blocks.0.norm2": 1, "norm": 0}
    names = {r.name for r in prog.program.regions}
    for layer in LINEARS:
        assert {f"{layer}.weight.ff#val", f"{layer}.weight.bp#idx"} <= names
        assert f"{layer}.weight.ff" not in names
    assert not any(n.startswith(("patch_embed.weight.ff", "patch_embed.weight.bp")) for n in names)
    batched = [n for n in prog.graph.nodes if n.op == "matmul" and n.inputs[1].type.rank == 4]
    assert len(batched) == 6            # scores, context, and their four gradients
    assert all("nm" not in n.attrs for n in batched)
    p = prog.program
    sizes = {"dram": p.dram_size, **p.config.buffer_bytes}
    assert unordered_hazards(p.instructions, sizes) == []


class _TokenMixer(nn.Module):
    """Layout paths ViT does not take: a last-axis transpose, a mean over the last axis (its
    gradient broadcasts along it), a broadcast add of a [T, D] parameter to [B, T, D]."""

    def __init__(self, tokens: int = 12, dim: int = 8) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(tokens, dim) * 0.1)
        self.norm = nn.LayerNorm(dim)
        self.mix = nn.Linear(tokens, tokens)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x + self.pos).transpose(1, 2)                 # [B, D, T]
        h = nn.functional.gelu(self.mix(h)).softmax(-1) + h          # [B, D, T]
        return self.head(h.mean(-1))


def test_layout_paths_match_interpreter():
    torch.manual_seed(2)
    model = _TokenMixer()
    x, y = torch.randn(3, 12, 8), torch.randint(0, 10, (3,))
    prog = satc.compile(model, example_inputs=(x,), hw="sat-small",
                        optimizer=satc.SGD(lr=0.1, momentum=0.9))
    check_steps(prog, x.numpy(), y.numpy(), 2)


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_adamw_three_steps_match_interpreter(sparsity):
    """AdamW on the WUVE; the bias corrections come from the step counter state on chip."""
    torch.manual_seed(0)
    model = get_model("mlp")
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    prog = satc.compile(model, example_inputs=(x,), sparsity=sparsity, hw="sat-small",
                        optimizer=satc.AdamW(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.05))
    assert any(i.op == "wuve" and i.func == "adamw" for i in prog.program.instructions)
    check_steps(prog, x.numpy(), y.numpy(), 3)
    assert prog.state["optimizer.step"] == 3


def test_mixed_precision_vcu1525(monkeypatch):
    """sat-vcu1525 (fp16 GEMM operands, fp32 elsewhere) vs the fp16-operand reference, two
    steps from the same state, within 2e-3 of each tensor's largest magnitude plus 1e-6: the
    key bias gradient is exactly zero in exact arithmetic (softmax ignores a shift along keys),
    so both sides hold rounding noise of ~1e-7 there."""
    x, y = _images()
    prog = satc.compile(_vit(**TINY), example_inputs=(x,), sparsity="bdwp:2:8",
                        hw="sat-vcu1525", optimizer=satc.SGD(lr=0.05, momentum=0.9))
    _fp16_gemm_reference(monkeypatch)
    check_mixed_steps(prog, x, y, grad_floor=1e-6, state_floor=1e-6, check_pruned=False)


def test_unsupported_transformer_variants_name_the_layer_and_the_fix():
    x, _ = _images()
    g = satc.build_training_graph(satc.import_torch(_vit(**TINY), (x,)))
    gelu = next(n for n in g.nodes if n.op == "gelu")
    gelu.attrs["approximate"] = "tanh"
    with pytest.raises(CompileError, match=r"layer 'blocks\.0\.mlp\.1'.*approximate.*fix:"):
        satc.compile(g, hw="sat-small")


@pytest.mark.slow
@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_full_size_vit_tiny_step(sparsity):
    """ViT-Tiny (dim 192, depth 12, 3 heads) at batch 2: one step on an fp32 SAT with
    sat-small's timing and MiB-sized buffers (the model does not fit sat-small's DRAM)."""
    cfg = dataclasses.replace(load_hardware("sat-small"), name="sat-small-vit",
                              dram_bytes=1 << 28, act_buffer_bytes=1 << 20,
                              wgt_buffer_bytes=1 << 20, acc_buffer_bytes=1 << 20,
                              vec_buffer_bytes=1 << 20)
    x, y = _images()
    prog = satc.compile(_vit(), example_inputs=(x,), sparsity=sparsity, hw=cfg,
                        optimizer=satc.SGD(lr=0.05, momentum=0.9))
    check_steps(prog, x.numpy(), y.numpy(), 1)
