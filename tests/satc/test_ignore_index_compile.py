"""cross_entropy with ignore_index on SAT: ignored labels are stored as zero one-hot rows, the
program counts the kept rows; emulated steps equal the interpreter and torch autograd (loss,
every gradient, the updated weights) for [N, C] logits and for [N, T, V] token logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from satc.models import get_model

import satc
from satc.backends.sat.codegen.memory import OneHot
from satc.backends.sat.program import Region
from satc.errors import InputError
from tests.models.test_gpt_bert import torch_lm_step
from tests.satc.test_compile import check_steps

IGNORE = -100
LR, MOMENTUM = 0.05, 0.9


def _close(a, b, what):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=what)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 5))


def _classifier_program(model: nn.Module, x: torch.Tensor):
    """A compiled [N, C] classifier step whose cross-entropy ignores label -100 (the training
    graph's loss nodes get the attribute; build_training_graph sets it for token logits)."""
    g = satc.import_torch(model, (x,))
    tg = satc.build_training_graph(g, optimizer=satc.SGD(lr=LR, momentum=MOMENTUM))
    for n in tg.nodes:
        if n.op in ("cross_entropy", "cross_entropy_grad"):
            n.attrs["ignore_index"] = IGNORE
    return satc.compile(tg, hw="sat-small")


def _torch_step(model, inputs, loss_of):
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss = loss_of(model.train()(*inputs))
    loss.backward()
    grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters()}
    opt.step()
    return loss.item(), grads, {k: p.detach().numpy().copy() for k, p in model.named_parameters()}


def _assert_step_matches(res, prog, torch_result):
    loss, grads, weights = torch_result
    assert res.loss == pytest.approx(loss, rel=1e-4)
    assert set(res.grads) == set(grads)
    for k, g in grads.items():
        _close(res.grads[k], g, f"grad {k}")
        _close(prog.state[k], weights[k], f"updated {k}")


def test_classifier_step_matches_torch():
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, IGNORE, 3, 4, IGNORE, 1])
    prog = _classifier_program(_mlp(), x)
    assert prog.plan.inputs["y"].ignore_index == IGNORE
    res = prog.step(x.numpy(), y.numpy())
    _assert_step_matches(res, prog, _torch_step(
        _mlp(), (x,), lambda out: F.cross_entropy(out, y, ignore_index=IGNORE)))
    assert np.all(res.grads["2.bias"] != 0)           # the kept rows reach every class


def test_classifier_steps_match_interpreter():
    """Steps with different ignored rows each (the count is computed per step)."""
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(2))
    prog = _classifier_program(_mlp(), x)
    for y in ([IGNORE, 1, 2, 3, 4, 0], [0, 1, 2, IGNORE, IGNORE, IGNORE], [4, 3, 2, 1, 0, 1]):
        check_steps(prog, x.numpy(), np.array(y), 1)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")
def test_all_rows_ignored_give_nan_loss_and_zero_gradients_as_torch():
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(3))
    y = torch.full((4,), IGNORE)
    prog = _classifier_program(_mlp(), x)
    res = prog.step(x.numpy(), y.numpy())
    loss, grads, weights = _torch_step(_mlp(), (x,),
                                       lambda out: F.cross_entropy(out, y, ignore_index=IGNORE))
    assert np.isnan(loss) and np.isnan(res.loss)
    for k, g in grads.items():
        assert not g.any() and not res.grads[k].any(), k
        _close(prog.state[k], weights[k], f"updated {k}")
    ref = satc.interpret(prog.graph, {"x": x.numpy(), "y": y.numpy()}, prog.graph.initial_state())
    assert np.isnan(ref.loss) and not any(g.any() for g in ref.grads.values())


def test_labels_neither_class_nor_ignored_are_refused():
    x = torch.randn(6, 8)
    prog = _classifier_program(_mlp(), x)
    with pytest.raises(InputError, match=r"label -5 at index 1 is outside \[0, 5\).*ignore index -100"):
        prog.step(x.numpy(), np.array([0, -5, IGNORE, 1, 2, 3]))


def test_one_hot_encoding_round_trips():
    hot = OneHot(Region("y", 0, (4, 3), "fp32"), 3, IGNORE)
    ((_, rows),) = hot.encode(np.array([2, IGNORE, 0, IGNORE]))
    np.testing.assert_array_equal(rows, [[0, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 0]])
    assert hot.decode(lambda name: rows).tolist() == [2, IGNORE, 0, IGNORE]
    assert OneHot.from_json(hot.to_json(), lambda name: hot.region) == hot
    plain = OneHot(hot.region, 3)
    assert "ignore_index" not in plain.to_json()        # manifests without it are unchanged
    assert OneHot.from_json(plain.to_json(), lambda name: hot.region) == plain


VOCAB, T = 32, 8


def _tokens():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, VOCAB, (2, T), generator=g)
    labels = torch.randint(0, VOCAB, (2, T), generator=g)
    labels[:, ::3] = IGNORE
    labels[1, 5] = IGNORE
    return ids, labels


def _gpt():
    torch.manual_seed(0)
    return get_model("gpt_tiny", num_classes=VOCAB, context=T, dim=16, depth=1)


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_token_steps_match_interpreter(sparsity):
    ids, labels = _tokens()
    prog = satc.compile(_gpt(), example_inputs=(ids,), sparsity=sparsity, hw="sat-small",
                        optimizer=satc.SGD(lr=LR, momentum=MOMENTUM))
    (ce,) = [n for n in prog.graph.nodes if n.op == "cross_entropy"]
    assert ce.attrs == {"ignore_index": IGNORE} and ce.inputs[0].shape == (2 * T, VOCAB)
    check_steps(prog, ids.numpy(), labels.numpy(), 2)


def test_token_step_matches_torch():
    ids, labels = _tokens()
    model = _gpt()
    prog = satc.compile(model, example_inputs=(ids,), sparsity="dense", hw="sat-small",
                        optimizer=satc.SGD(lr=LR, momentum=MOMENTUM))
    res = prog.step(ids.numpy(), labels.numpy())
    loss, grads, state = torch_lm_step(model, (ids,), labels, LR, MOMENTUM)
    _assert_step_matches(res, prog, (loss, grads, state))


def test_program_file_keeps_the_ignore_index(tmp_path):
    """A saved program's manifest carries ignore_index; a loaded session steps alike."""
    from satc.runtime.session import Session

    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(4))
    y = np.array([IGNORE, 1, 2, IGNORE, 4, 0])
    prog = _classifier_program(_mlp(), x)
    prog.save(tmp_path / "mlp.satbin")
    session = Session.load(tmp_path / "mlp.satbin")
    assert session.manifest.inputs["y"].ignore_index == IGNORE
    assert session.step(x.numpy(), y).loss == pytest.approx(prog.step(x.numpy(), y).loss, rel=1e-6)
