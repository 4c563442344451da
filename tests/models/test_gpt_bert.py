"""GPT- and BERT-style zoo models: imported training steps equal torch autograd (loss with the
ignore index, every gradient, the SGD state), and the ops they import to."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from satc.models import count_macs, get_model

import satc
from tests.torch_reference import assert_close

VOCAB, T = 64, 16


def _ids(batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, T), generator=g)
    labels = torch.randint(0, VOCAB, (batch, T), generator=g)
    labels[:, ::3] = -100                       # ignored positions (MLM: unmasked tokens)
    return ids, labels


def _model(name: str, **kw):
    torch.manual_seed(0)
    return get_model(name, **kw)


def torch_lm_step(model, inputs: tuple, labels: torch.Tensor, lr: float, momentum: float):
    """One SGD step of token cross-entropy (ignore index -100): (loss, grads, new state)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    logits = model.train()(*inputs)
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    loss.backward()
    grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters()}
    opt.step()
    return loss.item(), grads, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def check_lm_against_torch(model, inputs: tuple, labels: torch.Tensor, names: list[str]):
    """The imported training graph's step equals torch's; returns the training graph."""
    g = satc.import_torch(model, inputs, input_names=names)
    tg = satc.build_training_graph(g, optimizer=satc.SGD(lr=0.1, momentum=0.9))
    feeds = {n: t.numpy() for n, t in zip(names, inputs)}
    out = satc.interpret(tg, {**feeds, "y": labels.numpy()})
    loss, grads, state = torch_lm_step(model, inputs, labels, 0.1, 0.9)
    assert out.loss == pytest.approx(loss, rel=1e-5)
    assert set(out.grads) == set(grads)
    for k, v in grads.items():
        assert_close(out.grads[k], v, f"grad {k}")
    for k, v in state.items():
        assert_close(out.new_state[k], v, f"state {k}")
    return tg


def test_gpt_step_matches_torch():
    ids, labels = _ids()
    tg = check_lm_against_torch(_model("gpt_tiny"), (ids,), labels, ["x"])
    ops = {n.op for n in tg.nodes}
    assert {"embedding", "embedding_grad", "softmax", "layernorm", "gelu", "cross_entropy"} <= ops
    (ce,) = [n for n in tg.nodes if n.op == "cross_entropy"]
    assert ce.attrs == {"ignore_index": -100} and ce.inputs[0].shape == (2 * T, VOCAB)
    assert tg.outputs["logits"].shape == (2, T, VOCAB)


def test_bert_step_matches_torch_with_a_padding_mask():
    ids, labels = _ids(seed=1)
    mask = torch.zeros(2, 1, 1, T)
    mask[1, ..., 12:] = float("-inf")           # the second sequence has 4 padding tokens
    check_lm_against_torch(_model("bert_tiny"), (ids, mask), labels, ["x", "mask"])


def test_bert_step_matches_torch_without_a_mask():
    ids, labels = _ids(seed=2)
    check_lm_against_torch(_model("bert_tiny", depth=1), (ids,), labels, ["x"])


def test_embedding_padding_idx_gets_no_gradient():
    class Emb(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = torch.nn.Embedding(VOCAB, 8, padding_idx=0), torch.nn.Linear(8, 5)

        def forward(self, ids):
            return self.head(self.emb(ids).mean(1))

    ids = torch.tensor([[0, 3, 3, 7], [0, 0, 5, 3]])
    torch.manual_seed(0)
    model = Emb()
    g = satc.import_torch(model, (ids,))
    tg = satc.build_training_graph(g)
    out = satc.interpret(tg, {"x": ids.numpy(), "y": np.array([1, 4])})
    F.cross_entropy(model(ids), torch.tensor([1, 4])).backward()
    assert_close(out.grads["emb.weight"], model.emb.weight.grad.numpy(), "embedding grad")
    assert not out.grads["emb.weight"][0].any()


def test_token_models_count_macs():
    model = get_model("gpt_tiny", depth=1)
    assert count_macs(model, (T,)) > 0
    assert get_model("bert_tiny")(torch.zeros(2, T, dtype=torch.int64)).shape == (2, T, VOCAB)


def test_sparsity_report_names_dense_layers_and_why():
    ids, _ = _ids()
    g = satc.import_torch(_model("gpt_tiny", depth=1), (ids,))
    report = satc.sparsify(satc.build_training_graph(g), "bdwp:2:8").meta["sparsity"]
    kinds = {r.weight: (r.kind, r.ff) for r in report.layers}
    assert kinds["tok.weight"] == ("embedding", "dense")
    assert sum(k == ("activations", "dense") for k in kinds.values()) == 2   # scores, context
    pruned = {"blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight", "blocks.0.mlp.0.weight",
              "blocks.0.mlp.2.weight", "head.weight"}
    assert set(report.sparse_weights()) == pruned
    text = report.format()
    assert "5 of 5 weight layers pruned" in text and "embedding table" in text
    assert "activation x activation GEMM (attention)" in text
