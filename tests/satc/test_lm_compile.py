"""Token models compiled to SAT: GPT-style steps on the emulator equal the interpreter (dense
and bdwp:2:8): embedding as one-hot GEMMs, causal attention, token cross-entropy."""

from __future__ import annotations

import pytest
import torch
from satc.models import get_model

import satc
from tests.satc.test_compile import check_steps

VOCAB, T = 32, 8


def _batch():
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, VOCAB, (2, T), generator=g), torch.randint(0, VOCAB, (2, T), generator=g)


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_gpt_steps_match_interpreter(sparsity):
    ids, labels = _batch()
    torch.manual_seed(0)
    model = get_model("gpt_tiny", num_classes=VOCAB, context=T, dim=16, depth=1)
    prog = satc.compile(model, example_inputs=(ids,), sparsity=sparsity, hw="sat-small",
                        optimizer=satc.SGD(lr=0.05, momentum=0.9))
    ops = {n.op for n in prog.graph.nodes}
    assert {"embedding", "embedding_grad", "softmax", "cross_entropy"} <= ops
    if sparsity != "dense":
        assert "tok.weight.ff" not in prog.graph.state and "head.weight.ff" in prog.graph.state
    check_steps(prog, ids.numpy(), labels.numpy(), 2)
