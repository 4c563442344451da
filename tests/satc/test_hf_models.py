"""Models from the ``transformers`` library (the ``hf`` test extra), built from small configs
with random weights (never a download): BERT for sequence classification, GPT-2 and LLaMA
language models, ViT for image classification. Each imports through torch.export, its
interpreted training step equals torch autograd (loss, every gradient, every updated weight),
and satc.compile dense and bdwp:2:8 give emulated steps equal to the interpreter, with the
sparsity report naming what stays dense. Skipped when transformers is not installed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import satc
from tests.satc.test_compile import check_steps
from tests.torch_reference import assert_close

tf = pytest.importorskip("transformers")

VOCAB, T, LR, MOMENTUM = 64, 8, 0.1, 0.9


class Logits(torch.nn.Module):
    """A transformers model with its ``.logits`` as the output."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.m = model

    def forward(self, x):
        return self.m(x).logits


def _bert():
    c = tf.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=16, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, num_labels=3)
    return tf.BertForSequenceClassification(c), torch.tensor([0, 2])


def _gpt2():
    c = tf.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=16,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
                      bos_token_id=0, eos_token_id=0)
    return tf.GPT2LMHeadModel(c), None


def _llama():
    c = tf.LlamaConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=1, intermediate_size=32, max_position_embeddings=16,
                       use_cache=False)
    return tf.LlamaForCausalLM(c), None


def _vit():
    c = tf.ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=32, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, num_labels=3)
    return tf.ViTForImageClassification(c), torch.tensor([0, 2])


FAMILIES = {"bert": _bert, "gpt2": _gpt2, "llama": _llama, "vit": _vit}


def _setup(name: str):
    """(model, input, labels): token ids or an image, class or next-token labels."""
    torch.manual_seed(0)
    model, labels = FAMILIES[name]()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 8, 8, generator=g) if name == "vit" else \
        torch.randint(0, VOCAB, (2, T), generator=g)
    if labels is None:                                  # a language model: token labels
        labels = torch.randint(0, VOCAB, (2, T), generator=g)
    return Logits(model), x, labels


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_training_step_matches_torch(name):
    model, x, labels = _setup(name)
    tg = satc.build_training_graph(satc.import_torch(model, (x,)),
                                   optimizer=satc.SGD(lr=LR, momentum=MOMENTUM))
    out = satc.interpret(tg, {"x": x.numpy(), "y": labels.numpy()})
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    logits = model.train()(x)
    loss = F.cross_entropy(logits.flatten(0, logits.dim() - 2), labels.flatten())
    loss.backward()
    params = dict(model.named_parameters())        # tied weights (GPT-2's head) appear once
    assert out.loss == pytest.approx(loss.item(), rel=1e-5)
    assert set(out.grads) == set(params)
    for k, p in params.items():
        assert_close(out.grads[k], p.grad.numpy(), f"grad {k}")
    opt.step()
    for k, p in params.items():
        assert_close(out.new_state[k], p.detach().numpy(), f"state {k}")


#: Layers BDWP leaves dense in each family, and why (the rest of the Linear / Conv1D weights
#: are N:M along Ci in FF and along Co in BP).
DENSE = {
    "bert": {"embedding table (gather by token id)": 3, "activation x activation GEMM (attention)": 2},
    "gpt2": {"embedding table (gather by token id)": 2, "activation x activation GEMM (attention)": 2},
    "llama": {"embedding table (gather by token id)": 1, "activation x activation GEMM (attention)": 2},
    "vit": {"stem (image input)": 1, "activation x activation GEMM (attention)": 2},
}
SPARSE = {"bert": 8, "gpt2": 5, "llama": 8, "vit": 7}


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_compiled_steps_match_interpreter(name, sparsity):
    model, x, labels = _setup(name)
    prog = satc.compile(model, example_inputs=(x,), sparsity=sparsity, hw="sat-small",
                        optimizer=satc.SGD(lr=0.05, momentum=0.9))
    check_steps(prog, x.numpy(), labels.numpy(), 2)
    if sparsity == "dense":
        return
    layers = prog.graph.meta["sparsity"].layers
    dense: dict[str, int] = {}
    for r in layers:
        if r.ff == "dense":
            dense[r.reason] = dense.get(r.reason, 0) + 1
    assert dense == DENSE[name]
    sparse = [r for r in layers if r.ff != "dense"]
    assert len(sparse) == SPARSE[name]
    assert all(r.ff == "2:8 along Ci" and r.bp in ("2:8 along Co", "none (no BP)") for r in sparse)
