"""torch frontend: ops outside satc's table are folded (shape / constant-only subgraphs) or
decomposed with torch's own core-ATen table, and the result trains like torch autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import satc
from satc.errors import UnsupportedOpError
from satc.frontend.torch_import import ATEN_HANDLERS, _decomp_table
from tests.ir.test_activations import check_against_torch


class Fn(nn.Module):
    """linear -> fn -> linear head."""

    def __init__(self, fn, width: int = 8):
        super().__init__()
        self.fn, self.fc1, self.fc2 = fn, nn.Linear(6, width), nn.Linear(width, 5)

    def forward(self, x):
        return self.fc2(self.fn(self.fc1(x)))


CASES = {
    # torch decomposes hardsigmoid to add + clamp + div: clamp becomes relu / hardtanh
    "hardsigmoid": (lambda h: F.hardsigmoid(h * 4.0), {"relu", "hardtanh", "scale"}),
    # arange < 3 builds a constant mask: folded, one constant add remains
    "arange_mask": (lambda h: h + (torch.arange(h.shape[-1]) < 3).to(h.dtype), {"add"}),
    "ones_like": (lambda h: h * torch.ones_like(h) + torch.zeros(h.shape[-1]), {"mul", "add"}),
    "full_mask_mul": (lambda h: h * torch.full((1, 8), 0.5).masked_fill(torch.arange(8) > 5, 2.0),
                      {"mul"}),
    "rsub_neg_clamp": (lambda h: (1.0 - h).clamp(-0.5, 0.7) - h.neg(), {"hardtanh", "scale"}),
    "split": (lambda h: torch.cat(list(h.split(3, -1))[::-1], -1), {"slice", "concat"}),
    "chunk": (lambda h: torch.cat([h.chunk(3, -1)[0] * 2.0, h], -1)[:, :8], {"slice", "scale"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_folded_and_decomposed_ops_match_torch(name):
    torch.manual_seed(6)
    fn, ops = CASES[name]
    g = check_against_torch(Fn(fn), torch.randn(3, 6), name)
    assert ops <= {n.op for n in g.nodes}, [n.op for n in g.nodes]


def test_the_table_is_torchs_less_what_satc_translates():
    table = _decomp_table()
    assert torch.ops.aten.hardsigmoid.default in table
    assert not set(ATEN_HANDLERS) & set(table)


def test_ops_without_a_decomposition_are_listed_once_each():
    class Bad(nn.Module):
        def forward(self, x):
            return torch.cumsum(torch.sin(x.exp()) + torch.cos(x).exp(), 1)

    with pytest.raises(UnsupportedOpError) as e:
        satc.import_torch(Bad(), (torch.randn(2, 4),))
    msg = str(e.value)
    # each unsupported op is named once, exp (translated) not at all
    for op in ("aten.cumsum.default", "aten.sin.default", "aten.cos.default"):
        assert msg.count(op) == 1, msg
    assert "aten.exp" not in msg
