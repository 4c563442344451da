"""Each op's kernel and gradient rule, through import + autodiff + interpreter, against torch autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import satc
from tests.torch_reference import assert_close, torch_sgd_step


class Head(nn.Module):
    """body(x) then flatten and a linear head, so every case ends in logits."""

    def __init__(self, body: nn.Module, features: int):
        super().__init__()
        self.body, self.fc = body, nn.Linear(features, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.body(x), 1))


class Lambda(nn.Module):
    def __init__(self, fn, *params):
        super().__init__()
        self.fn = fn
        self.p = nn.ParameterList([nn.Parameter(torch.randn(*s) * 0.5) for s in params])

    def forward(self, x):
        return self.fn(x, *self.p)


def conv(**kw):
    return nn.Conv2d(4, 6, 3, **kw)


# Modules are built inside the test, after seeding, so each case's weights do
# not depend on which tests ran before it in the same worker.
CASES = {
    "conv_stride_pad": (lambda: conv(stride=2, padding=1), (4, 8, 8)),
    "conv_dilation": (lambda: conv(dilation=2, padding=2, bias=False), (4, 9, 9)),
    "conv_groups": (lambda: nn.Conv2d(4, 6, 3, groups=2, padding=1), (4, 6, 6)),
    "conv_asym_pad": (lambda: Lambda(lambda x, w: F.conv2d(F.pad(x, (0, 1, 1, 0)), w), (6, 4, 2, 2)), (4, 5, 5)),
    "depthwise_1x1": (lambda: nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 3, 1)), (4, 6, 6)),
    "maxpool_pad": (lambda: nn.Sequential(conv(padding=1), nn.MaxPool2d(3, 2, 1)), (4, 7, 7)),
    "maxpool_ceil": (lambda: nn.Sequential(conv(), nn.MaxPool2d(2, 2, ceil_mode=True)), (4, 7, 7)),
    "maxpool_relu_ties": (lambda: nn.Sequential(conv(), nn.ReLU(), nn.MaxPool2d(2)), (4, 6, 6)),
    "avgpool_pad_incl": (lambda: nn.Sequential(conv(), nn.AvgPool2d(3, 2, 1)), (4, 7, 7)),
    "avgpool_pad_excl": (lambda: nn.Sequential(conv(), nn.AvgPool2d(3, 2, 1, count_include_pad=False)), (4, 7, 7)),
    "global_avgpool": (lambda: nn.Sequential(conv(), nn.AdaptiveAvgPool2d(1)), (4, 5, 5)),
    "adaptive_2x2": (lambda: nn.Sequential(conv(), nn.AdaptiveAvgPool2d(2)), (4, 6, 6)),
    "batchnorm2d": (lambda: nn.Sequential(conv(), nn.BatchNorm2d(6), nn.ReLU()), (4, 5, 5)),
    "batchnorm1d": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8)), (1, 4, 4)),
    "layernorm_gelu": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.LayerNorm(8), nn.GELU()), (1, 4, 4)),
    "gelu_tanh": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.GELU(approximate="tanh")), (1, 4, 4)),
    "softmax": (lambda: Lambda(lambda x, w: torch.softmax(x.flatten(1) @ w, -1), (16, 7)), (1, 4, 4)),
    "concat_slice": (lambda: Lambda(lambda x, w: torch.cat([x * w, x], 1)[:, 1:6], (1, 4, 4)), (3, 4, 4)),
    "transpose_reshape": (lambda: Lambda(lambda x, w: (x.reshape(2, 3, 16).transpose(1, 2) @ w).permute(0, 2, 1),
                                 (3, 5)), (3, 4, 4)),
    "mean_broadcast": (lambda: Lambda(lambda x, c: torch.cat([c.expand(2, -1, -1), x.flatten(2)], 1).mean(1),
                              (1, 1, 16)), (3, 4, 4)),
    "add_mul_broadcast": (lambda: Lambda(lambda x, a, b: (x + a) * b - 0.5 * x, (3, 1, 1), (1, 4, 4)), (3, 4, 4)),
    "batched_linear": (lambda: Lambda(lambda x, w, b: F.linear(x.reshape(2, 4, 12), w, b), (6, 12), (6,)), (3, 4, 4)),
    "attention": (lambda: Lambda(lambda x, w: torch.softmax((x @ w) @ (x @ w).transpose(-2, -1) / 2.0, -1) @ x,
                         (4, 4)), (2, 4, 4)),
    "scalar_add_sub_div": (lambda: Lambda(lambda x, w: ((x * w + 1.0) - 0.5 * x + 2.0) / 4.0, (3, 4, 4)), (3, 4, 4)),
    "dropout_p0": (lambda: nn.Sequential(nn.Flatten(), nn.Dropout(0.0), nn.Linear(16, 4)), (1, 4, 4)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_gradients_match_torch(case):
    torch.manual_seed(1)
    make_body, shape = CASES[case]
    body = make_body()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        feats = torch.flatten(body.train()(x), 1).shape[1]
    model = Head(body, feats)
    y = torch.tensor([1, 3])
    g = satc.import_torch(model, (x,))
    tg = satc.build_training_graph(g, optimizer=satc.SGD(lr=0.1, momentum=0.9))
    out = satc.interpret(tg, {"x": x.numpy(), "y": y.numpy()})
    losses, grads, state = torch_sgd_step(model, x, y, 0.1, 0.9, 0.0)
    assert out.loss == pytest.approx(losses[0], rel=1e-5)
    assert set(out.grads) == set(grads)
    for k, v in grads.items():
        assert_close(out.grads[k], v, f"{case}: grad {k}")
    for k, v in state.items():
        if not k.endswith("num_batches_tracked"):
            assert_close(out.new_state[k], v, f"{case}: state {k}")


def test_adamw_matches_torch_over_three_steps():
    torch.manual_seed(2)
    # no conv bias: before BN its true gradient is 0, and Adam would amplify rounding noise
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5))
    x, y = torch.randn(4, 3, 6, 6), torch.tensor([0, 1, 2, 4])
    opt = satc.AdamW(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)
    tg = satc.build_training_graph(satc.import_torch(model, (x,)), optimizer=opt)
    state = tg.initial_state()
    ref = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)
    for step in range(3):
        out = satc.interpret(tg, {"x": x.numpy(), "y": y.numpy()}, state)
        state = out.new_state
        ref.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        ref.step()
        assert out.loss == pytest.approx(loss.item(), rel=1e-5)
    assert state["optimizer.step"] == 3
    for k, v in model.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert_close(state[k], v.numpy(), f"adamw state {k}")
        if k in dict(model.named_parameters()):
            assert_close(state[f"{k}.exp_avg"], ref.state[dict(model.named_parameters())[k]]["exp_avg"].numpy(),
                         f"exp_avg {k}")


def test_conv_with_a_bias_input_differentiates_like_torch():
    """conv2d's optional bias input (fuse_matmul_bias folds a bias_add into it): folded in the
    forward graph before autodiff, its gradient rule gives torch's dw, dx and db."""
    from satc.passes.fusion import fuse_matmul_bias
    torch.manual_seed(3)
    model = nn.Sequential(conv(padding=1), nn.Flatten(), nn.Linear(6 * 5 * 5, 5, bias=False))
    x, y = torch.randn(2, 4, 5, 5), torch.tensor([1, 3])
    g = fuse_matmul_bias(satc.import_torch(model, (x,)))
    (c,) = [n for n in g.nodes if n.op == "conv2d"]
    assert len(c.inputs) == 3 and "bias_add" not in [n.op for n in g.nodes]
    tg = satc.build_training_graph(g, optimizer=satc.SGD(lr=0.1, momentum=0.9))
    out = satc.interpret(tg, {"x": x.numpy(), "y": y.numpy()})
    losses, grads, _ = torch_sgd_step(model, x, y, 0.1, 0.9, 0.0)
    assert out.loss == pytest.approx(losses[0], rel=1e-5)
    for k, v in grads.items():
        assert_close(out.grads[k], v, f"grad {k}")
