"""Scaled dot-product attention, where and masked_fill: imported as matmul / softmax / constant
masks, trained like torch autograd, and compiled to SAT (dense and bdwp:2:8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import satc
from satc.errors import UnsupportedOpError
from tests.ir.test_activations import check_against_torch
from tests.satc.test_compile import check_steps
from tests.torch_reference import assert_interpreted_step_matches_autograd

T, D, HEADS = 6, 8, 2


class AttnNet(nn.Module):
    """Tokens [B, T, D] -> qkv -> attention (``mode``) -> proj -> token mean -> head."""

    def __init__(self, mode: str, classes: int = 5):
        super().__init__()
        self.mode = mode
        self.qkv, self.proj, self.head = nn.Linear(D, 3 * D), nn.Linear(D, D), nn.Linear(D, classes)

    def _attend(self, q, k, v):
        if self.mode == "causal":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if self.mode == "plain":
            return F.scaled_dot_product_attention(q, k, v, scale=0.3)
        if self.mode == "bool_mask":        # keys 4, 5 are padding
            keep = (torch.arange(T) < 4).expand(T, T)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        if self.mode == "float_mask":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=torch.linspace(-1, 1, T * T).reshape(T, T))
        scores = q @ k.transpose(-2, -1) * (D // HEADS) ** -0.5
        tril = torch.tril(torch.ones(T, T))
        if self.mode == "masked_fill":
            scores = scores.masked_fill(tril == 0, float("-inf"))
        else:                               # where with a finite fill and a tensor branch
            scores = torch.where(tril.bool(), scores, torch.full_like(scores, -3.0))
        return torch.softmax(scores, -1) @ v

    def forward(self, x):
        b = x.shape[0]
        q, k, v = (t.reshape(b, T, HEADS, D // HEADS).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, -1))
        out = self._attend(q, k, v).transpose(1, 2).reshape(b, T, D)
        return self.head((x + self.proj(out)).mean(1))


def _tokens(batch: int = 3):
    torch.manual_seed(2)
    return torch.randn(batch, T, D)


def _model(mode: str):
    torch.manual_seed(0)
    return AttnNet(mode)


@pytest.mark.parametrize("mode", ["causal", "plain", "bool_mask", "float_mask", "masked_fill",
                                  "where"])
def test_attention_matches_torch(mode):
    g = check_against_torch(_model(mode), _tokens(), mode)
    ops = [n.op for n in g.nodes]
    assert ops.count("softmax") == 1 and ops.count("matmul") >= 2, ops
    if mode != "plain":                     # the mask is one constant added to the scores,
        (add,) = [n for n in g.nodes if n.op == "add" and n.inputs[1].name in g.constants]
        # cut to the axes it varies on: the padding mask is the same for every query
        assert add.inputs[1].shape == ((1, T) if mode == "bool_mask" else (T, T))


def test_data_dependent_masks_are_refused_with_the_fix():
    """A condition that is a graph value, not a constant (a mask computed from data), is
    refused naming the fix."""
    from types import SimpleNamespace

    from satc.frontend.torch_import import _constant_array
    from satc.ir.graph import Graph
    from satc.ir.types import TensorType

    g = Graph("masks")
    data_mask = g.add_input("m", TensorType((4,), "float32"))
    with pytest.raises(UnsupportedOpError, match="known at import time"):
        _constant_array(SimpleNamespace(g=g), data_mask, "masked_fill")


def test_a_bool_mask_buffer_is_an_import_time_constant():
    class Masked(nn.Module):         # a mask table in a bool buffer: not trained, not state
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.register_buffer("keep", torch.tensor([True, False, True, False]))

        def forward(self, x):
            return self.fc(x.masked_fill(self.keep, 0.0))

    torch.manual_seed(0)
    model, x = Masked(), torch.randn(2, 4)
    g = satc.import_torch(model, (x,))
    assert "keep" not in g.state and sorted(g.state) == ["fc.bias", "fc.weight"]
    assert_interpreted_step_matches_autograd(model, g, x.numpy(), np.array([0, 2]))


def test_fully_masked_rows_are_refused():
    class Bad(nn.Module):
        def forward(self, x):
            keep = torch.zeros(T, T, dtype=torch.bool)
            return F.scaled_dot_product_attention(x, x, x, attn_mask=keep)

    with pytest.raises(UnsupportedOpError, match="fully masked"):
        satc.import_torch(Bad(), (torch.randn(1, 2, T, 4),))


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_causal_attention_compiles(sparsity):
    """Emulated steps equal the interpreter; the attention GEMMs stay dense, the linears not."""
    x = _tokens(2)
    y = torch.tensor([1, 3])
    prog = satc.compile(_model("causal"), example_inputs=(x,), sparsity=sparsity, hw="sat-small",
                        optimizer=satc.SGD(lr=0.05, momentum=0.9))
    batched = [n for n in prog.graph.nodes if n.op == "matmul" and n.inputs[1].type.rank == 4]
    assert len(batched) == 6 and all("nm" not in n.attrs for n in batched)
    if sparsity != "dense":
        assert {k[:-3] for k in prog.graph.state if k.endswith(".ff")} == {
            "qkv.weight", "proj.weight", "head.weight"}
    check_steps(prog, x.numpy(), y.numpy(), 2)
