"""Idioms of outside model libraries, written in plain torch (the transformers models that use
them are checked in test_hf_models.py when that library is installed): a weight stored
[in, out] read by ``addmm`` (GPT-2's Conv1D), integer and non-persistent buffers, a reshape of
the token ids, an empty key / value cache concatenated, an embedding ``padding_idx`` and an
all-true or expanded attention mask. Each: imported steps equal torch autograd (or the
satc.sparsity torch layers under BDWP), compiled steps equal the interpreter on the emulator."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import satc
from satc.errors import CompileError, UnsupportedOpError
from satc.sparsity import convert
from tests.satc.test_compile import check_steps
from tests.torch_reference import assert_close, assert_interpreted_step_matches_autograd

VOCAB, T, DIM = 32, 8, 16
LR, MOMENTUM = 0.1, 0.9


class Conv1DMLP(torch.nn.Module):
    """Two layers whose weights are stored [in, out] and applied by ``addmm`` (GPT-2's Conv1D);
    the second scales by ``alpha`` and its bias by ``beta``."""

    def __init__(self, w1, b1, w2, b2, alpha: float, beta: float):
        super().__init__()
        self.w1, self.b1 = torch.nn.Parameter(w1.clone()), torch.nn.Parameter(b1.clone())
        self.w2, self.b2 = torch.nn.Parameter(w2.clone()), torch.nn.Parameter(b2.clone())
        self.alpha, self.beta = alpha, beta

    def forward(self, x):
        h = torch.relu(torch.addmm(self.b1, x, self.w1))
        return torch.addmm(self.b2, h, self.w2, beta=self.beta, alpha=self.alpha)


def _linear_twin(alpha: float = 1.0, beta: float = 1.0):
    """An nn.Linear MLP and its Conv1D twin computing the same function (w = W^T / alpha,
    b = b / beta in the second layer)."""
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    twin = Conv1DMLP(lin[0].weight.detach().T, lin[0].bias.detach(),
                     lin[2].weight.detach().T / alpha, lin[2].bias.detach() / beta, alpha, beta)
    return lin, twin


def test_addmm_with_an_in_out_weight_trains_like_autograd():
    lin, twin = _linear_twin(alpha=2.0, beta=0.5)
    x = torch.randn(4, 16)
    torch.testing.assert_close(twin(x), lin(x))
    x, y = torch.randn(4, 16), torch.tensor([0, 3, 5, 7])
    g = satc.import_torch(twin, (x,))
    mm = [n for n in g.nodes if n.op == "matmul"]
    assert [n.attrs.get("trans_b", False) for n in mm] == [False, False]
    assert {n.op for n in g.nodes} >= {"bias_add", "scale"}          # alpha and beta
    assert_interpreted_step_matches_autograd(twin, g, x.numpy(), y.numpy())


def test_bdwp_on_an_in_out_weight_equals_the_linear_layers_transposed():
    """BDWP on W [in, out]: N:M along in (Ci) for FF, along out (Co) for BP, SR-STE on the
    same mask: the step equals satc.sparsity's SparseLinear on W^T (gradients and weights
    transposed)."""
    lin, twin = _linear_twin()
    torch.manual_seed(1)
    x, y = torch.randn(4, 16), torch.tensor([0, 3, 5, 7])
    tg = satc.build_training_graph(satc.import_torch(twin, (x,)),
                                   optimizer=satc.SGD(lr=LR, momentum=MOMENTUM))
    sg = satc.sparsify(tg, "bdwp:2:8")
    out = satc.interpret(sg, {"x": x.numpy(), "y": y.numpy()}, sg.initial_state())
    ref = convert(copy.deepcopy(lin), "bdwp:2:8")
    opt = torch.optim.SGD(ref.parameters(), lr=LR, momentum=MOMENTUM)
    loss = F.cross_entropy(ref(x), y)
    loss.backward()
    grads = {k: p.grad.numpy().copy() for k, p in ref.named_parameters()}
    opt.step()
    assert out.loss == pytest.approx(loss.item(), rel=1e-5)
    pairs = {"w1": "0.weight", "b1": "0.bias", "w2": "2.weight", "b2": "2.bias"}
    for k, r in pairs.items():
        assert_close(out.grads[k], grads[r].T, f"grad {k}")
        assert_close(out.new_state[k], ref.state_dict()[r].numpy().T, f"state {k}")
    report = {r.weight: (r.ff, r.bp) for r in sg.meta["sparsity"].layers}
    assert report == {"w1": ("2:8 along Ci", "none (no BP)"), "w2": ("2:8 along Ci", "2:8 along Co")}
    ff = [n for n in sg.nodes if n.op == "matmul" and "nm" in n.attrs and n.stage.name == "FF"]
    assert [n.attrs["nm"] for n in ff] == [[2, 8, 0], [2, 8, 0]]   # groups down the in axis


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_addmm_with_an_in_out_weight_compiles(sparsity):
    _, twin = _linear_twin()
    x, y = torch.randn(4, 16), torch.tensor([0, 3, 5, 7])
    prog = satc.compile(twin, example_inputs=(x,), sparsity=sparsity, hw="sat-small",
                        optimizer=satc.SGD(lr=0.05, momentum=0.9))
    check_steps(prog, x.numpy(), y.numpy(), 2)


class TokenEncoder(torch.nn.Module):
    """A BERT-style embedding stage: position ids in an int64 buffer, token types all zero (a
    buffer too), a non-persistent float buffer (LLaMA's rotary frequencies) turned into a
    sin / cos table, the ids viewed flat before the lookup, an empty cache concatenated."""

    def __init__(self, padding_idx: int | None = None):
        super().__init__()
        self.tok = torch.nn.Embedding(VOCAB, DIM, padding_idx=padding_idx)
        self.pos, self.typ = torch.nn.Embedding(T, DIM), torch.nn.Embedding(2, DIM)
        self.register_buffer("position_ids", torch.arange(T).unsqueeze(0))
        self.register_buffer("token_type_ids", torch.zeros(1, T, dtype=torch.long))
        self.register_buffer("inv_freq", 1.0 / 100 ** (torch.arange(0, DIM, 2) / DIM),
                             persistent=False)
        self.norm, self.head = torch.nn.LayerNorm(DIM), torch.nn.Linear(DIM, VOCAB)

    def forward(self, ids):
        b, t = ids.shape
        h = self.tok(ids.view(-1)).view(b, t, DIM)
        h = h + self.pos(self.position_ids[:, :t]) + self.typ(self.token_type_ids[:, :t])
        angles = self.position_ids[0, :t, None].float() * self.inv_freq[None, :]
        h = h * torch.cat([angles.cos(), angles.sin()], dim=-1)
        cache = torch.tensor([])                   # an empty key cache on the first step
        h = torch.cat([cache, h.reshape(-1)]).view(b, t, DIM)
        return self.head(self.norm(h))


def _tokens(padding_idx=None):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, VOCAB, (2, T), generator=g)
    ids[1, -3:] = 0                                 # padding tokens (id 0) at the end
    return TokenEncoder(padding_idx), ids, torch.randint(0, VOCAB, (2, T), generator=g)


def test_integer_and_non_persistent_buffers_are_constants():
    model, ids, labels = _tokens()
    g = satc.import_torch(model, (ids,))
    assert sorted(g.params) == sorted(k for k, _ in model.named_parameters())
    assert not {"position_ids", "token_type_ids", "inv_freq"} & set(g.state)
    assert {n.op for n in g.nodes} & {"sin", "cos", "concat"} == set()   # folded
    reshapes = [n for n in g.nodes if n.op == "reshape" and n.inputs[0].name == "x"]
    assert [n.outputs[0].shape for n in reshapes] == [(2 * T,)]
    tg = satc.build_training_graph(g, optimizer=satc.SGD(lr=LR, momentum=MOMENTUM))
    out = satc.interpret(tg, {"x": ids.numpy(), "y": labels.numpy()})
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss = F.cross_entropy(model(ids).flatten(0, 1), labels.flatten())
    loss.backward()
    assert out.loss == pytest.approx(loss.item(), rel=1e-5)
    for k, p in model.named_parameters():
        assert_close(out.grads[k], p.grad.numpy(), f"grad {k}")
    opt.step()
    for k, p in model.named_parameters():
        assert_close(out.new_state[k], p.detach().numpy(), f"state {k}")


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_constant_ids_and_viewed_ids_compile(sparsity):
    """Constant position / token-type ids are stored as a one-hot table in DRAM, the flat view
    of the input ids shares the input's one-hot rows; the padding row's gradient stays zero."""
    model, ids, labels = _tokens(padding_idx=0)
    prog = satc.compile(model, example_inputs=(ids,), sparsity=sparsity, hw="sat-small",
                        optimizer=satc.SGD(lr=0.05, momentum=0.9))
    check_steps(prog, ids.numpy(), labels.numpy(), 2)
    res = prog.step(ids.numpy(), labels.numpy())
    assert not res.grads["tok.weight"][0].any() and res.grads["tok.weight"][ids[0, 0]].any()


def test_constant_ids_out_of_the_table_are_a_compile_error():
    model, ids, labels = _tokens()
    model.position_ids[0, -1] = T                 # one past the position table
    with pytest.raises(CompileError, match=r"constant ids .* outside the embedding's \[0, 8\)"):
        satc.compile(model, example_inputs=(ids,), hw="sat-small")


class MaskedAttention(torch.nn.Module):
    """Attention with a library's bool mask: ``causal`` a lower triangle expanded to
    [N, 1, T, T], else all true (what a library passes when nothing is masked)."""

    def __init__(self, causal: bool):
        super().__init__()
        self.causal, self.qkv, self.head = causal, torch.nn.Linear(DIM, 3 * DIM), torch.nn.Linear(DIM, 4)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = (z.view(n, t, 2, d // 2).transpose(1, 2) for z in self.qkv(x).split(d, -1))
        mask = torch.ones(t, t, dtype=torch.bool)
        mask = (mask.tril() if self.causal else mask).expand(n, 1, t, t)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.head(a.transpose(1, 2).reshape(n, t, d).mean(1))


@pytest.mark.parametrize("causal", [False, True])
def test_library_masks_reduce_to_what_sat_broadcasts(causal):
    torch.manual_seed(0)
    model, x, y = MaskedAttention(causal), torch.randn(2, T, DIM), torch.tensor([1, 3])
    g = satc.import_torch(model, (x,))
    masks = [v for v in g.constants.values() if v.name.startswith("attn_mask")]
    assert [v.shape for v in masks] == ([(T, T)] if causal else [])
    if causal:
        want = np.where(np.tril(np.ones((T, T), bool)), 0.0, -np.inf)
        np.testing.assert_array_equal(g.initializers[masks[0].name], want)
    assert_interpreted_step_matches_autograd(model, g, x.numpy(), y.numpy())
    prog = satc.compile(model, example_inputs=(x,), sparsity="bdwp:2:8", hw="sat-small")
    check_steps(prog, x.numpy(), y.numpy(), 1)


class PaddedAttention(torch.nn.Module):
    """Attention with an additive float padding mask given per sequence, [N, 1, 1, S] (what
    BERT-style encoders add to the scores): SAT adds it per sequence, broadcast over heads and
    queries."""

    def __init__(self):
        super().__init__()
        self.qkv, self.head = torch.nn.Linear(DIM, 3 * DIM), torch.nn.Linear(DIM, 4)

    def forward(self, x, mask):
        n, t, d = x.shape
        q, k, v = (z.view(n, t, 2, d // 2).transpose(1, 2) for z in self.qkv(x).split(d, -1))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.head(a.transpose(1, 2).reshape(n, t, d).mean(1))


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_a_per_sequence_padding_mask_compiles(sparsity):
    torch.manual_seed(0)
    model, x, y = PaddedAttention(), torch.randn(2, T, DIM), torch.tensor([1, 3])
    mask = torch.zeros(2, 1, 1, T)
    mask[1, ..., 5:] = -1e9                       # the second sequence: 3 padding tokens
    prog = satc.compile(model, example_inputs=(x, mask),
                        sparsity=sparsity, hw="sat-small", optimizer=satc.SGD(lr=0.05, momentum=0.9))
    check_steps(prog, x.numpy(), y.numpy(), 1, {"mask": mask.numpy()})
    if sparsity == "dense":          # and the interpreter's (so the emulator's) loss is torch's
        feeds = {"x": x.numpy(), "mask": mask.numpy(), "y": y.numpy()}
        ref = satc.interpret(prog.graph, feeds, prog.graph.initial_state())
        assert ref.loss == pytest.approx(F.cross_entropy(model(x, mask), y).item(), rel=1e-5)


class Gathers(torch.nn.Module):
    """``h[:, ids]`` and ``index_select`` along the last axis with constant ids (repeats and
    reorders): a gather whose gradient is the scatter-add."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = torch.nn.Linear(6, 8), torch.nn.Linear(4 * 8, 3)

    def forward(self, x):
        h = self.fc(x)                                       # [N, 5, 8]
        a = h[:, torch.tensor([4, 0, 0, 2])]                 # [N, 4, 8]
        b = torch.index_select(h, 2, torch.tensor([1, 3, 3, 7, 0, 1, 2, 5]))
        c = a + b[:, :4]
        return self.head(c.reshape(c.shape[0], -1))


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_index_by_constant_ids_trains_and_compiles(sparsity):
    torch.manual_seed(0)
    model, x, y = Gathers(), torch.randn(2, 5, 6), torch.tensor([0, 2])
    g = satc.import_torch(model, (x,))
    assert [n.op for n in g.nodes].count("embedding") == 2
    assert_interpreted_step_matches_autograd(model, g, x.numpy(), y.numpy())
    prog = satc.compile(model, example_inputs=(x,), sparsity=sparsity, hw="sat-small")
    check_steps(prog, x.numpy(), y.numpy(), 2)


def test_index_by_two_tensors_is_refused_with_the_fix():
    class Two(torch.nn.Module):
        def forward(self, x):
            return x[torch.tensor([0, 1]), torch.tensor([1, 0])]

    with pytest.raises(UnsupportedOpError, match="gathers along one axis"):
        satc.import_torch(Two(), (torch.randn(2, 3),))


class InputGather(torch.nn.Module):
    """``h[:, ids]`` with ids given as an int64 input: known only when the step runs."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = torch.nn.Linear(6, 8), torch.nn.Linear(3 * 8, 3)

    def forward(self, x, ids):
        a = self.fc(x)[:, ids]
        return self.head(a.reshape(a.shape[0], -1))


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_index_by_input_ids_runs_on_sat_with_new_ids_each_step(sparsity):
    torch.manual_seed(0)
    model, x, y = InputGather(), torch.randn(2, 5, 6), torch.tensor([0, 2])
    prog = satc.compile(model, example_inputs=(x, torch.tensor([4, 1, 1])), sparsity=sparsity,
                        hw="sat-small", optimizer=satc.SGD(lr=0.05))
    state = prog.graph.initial_state()
    for ids in ([4, 1, 1], [0, 3, 2]):
        feeds = {"x": x.numpy(), "ids": np.array(ids), "y": y.numpy()}
        ref = satc.interpret(prog.graph, feeds, state)
        res = prog.step(feeds)
        assert res.loss == pytest.approx(ref.loss, rel=1e-5)
        for k, g in ref.grads.items():
            assert_close(res.grads[k], g, f"ids {ids}: grad {k}")
        state = ref.new_state
    if sparsity == "dense":                           # the last step's loss is torch's
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=0.05)
        F.cross_entropy(m(x, torch.tensor([4, 1, 1])), y).backward()
        opt.step()
        assert ref.loss == pytest.approx(F.cross_entropy(m(x, torch.tensor([0, 3, 2])), y).item(),
                                         rel=1e-5)
