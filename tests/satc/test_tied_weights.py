"""Tied weights (an LM head sharing the token embedding's table): one graph param under torch's
name, whose gradient sums both uses, equal to torch autograd in the interpreter and on the
emulator (dense and bdwp:2:8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import satc
from tests.satc.test_compile import check_steps
from tests.torch_reference import assert_close

VOCAB, T, DIM = 32, 8, 16


class TiedLM(torch.nn.Module):
    """Embedding -> layernorm -> MLP -> a head whose weight is the embedding table."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, DIM)
        self.ln = torch.nn.LayerNorm(DIM)
        self.fc = torch.nn.Linear(DIM, DIM)
        self.head = torch.nn.Linear(DIM, VOCAB, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(self.ln(self.emb(ids)))))


def _setup():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, T), generator=g)
    return TiedLM(), ids, torch.randint(0, VOCAB, (2, T), generator=g)


def test_tied_weight_is_one_param_under_torchs_name():
    model, ids, _ = _setup()
    g = satc.import_torch(model, (ids,))
    assert sorted(g.params) == sorted(k for k, _ in model.named_parameters())
    users = {n.op for n in g.nodes if any(v.name == "emb.weight" for v in n.inputs)}
    assert users == {"embedding", "matmul"}


def test_tied_step_matches_torch():
    model, ids, labels = _setup()
    tg = satc.build_training_graph(satc.import_torch(model, (ids,)),
                                   optimizer=satc.SGD(lr=0.1, momentum=0.9))
    out = satc.interpret(tg, {"x": ids.numpy(), "y": labels.numpy()})
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = F.cross_entropy(model(ids).flatten(0, 1), labels.flatten())
    loss.backward()
    grad = model.emb.weight.grad.numpy().copy()
    opt.step()
    assert out.loss == pytest.approx(loss.item(), rel=1e-5)
    assert set(out.grads) == {k for k, _ in model.named_parameters()}
    assert_close(out.grads["emb.weight"], grad, "tied grad (embedding + head)")
    for k, v in model.state_dict().items():      # head.weight is the same tensor as emb.weight
        assert_close(out.new_state[k if k != "head.weight" else "emb.weight"], v.numpy(), k)
    unseen = np.setdiff1d(np.arange(VOCAB), ids.numpy())   # rows only the head's use reaches
    assert unseen.size and np.abs(grad[unseen]).min() > 0


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_tied_steps_match_interpreter(sparsity):
    model, ids, labels = _setup()
    prog = satc.compile(model, example_inputs=(ids,), sparsity=sparsity, hw="sat-small",
                        optimizer=satc.SGD(lr=0.05, momentum=0.9))
    if sparsity != "dense":
        kinds = {(r.layer, r.kind) for r in prog.graph.meta["sparsity"].layers
                 if r.weight == "emb.weight"}
        assert kinds == {("head", "weight"), ("emb", "embedding")}
        assert "emb.weight.ff" in prog.graph.state
    check_steps(prog, ids.numpy(), labels.numpy(), 2)
