"""Shared test helpers: run one torch training step and compare it with satc's."""

from __future__ import annotations

import copy

import numpy as np
import torch

RTOL, ATOL = 1e-4, 1e-5


def torch_sgd_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float,
                   momentum: float, weight_decay: float, steps: int = 1):
    """Train a deep copy for ``steps`` SGD steps; return (losses, grads of the last step, state_dict)."""
    m = copy.deepcopy(model).train()
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    losses, grads = [], {}
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        losses.append(loss.item())
        grads = {k: p.grad.detach().numpy().copy() for k, p in m.named_parameters()}
        opt.step()
    state = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
    return losses, grads, state


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str,
                 rtol: float = RTOL, atol: float = ATOL) -> None:
    """np.testing.assert_allclose with the project tolerances and a name in the message."""
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol,
                               err_msg=what)


def assert_interpreted_step_matches_autograd(model: torch.nn.Module, graph, x: np.ndarray,
                                             y: np.ndarray) -> None:
    """The interpreted training graph of ``graph`` (``model`` imported) gives torch
    autograd's cross-entropy loss and every parameter gradient on (x, y)."""
    import pytest

    import satc
    from satc.ir.interpreter import interpret

    out = interpret(satc.build_training_graph(graph), {"x": x, "y": y})
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    assert out.loss == pytest.approx(loss.item(), rel=1e-5)
    for k, p in model.named_parameters():
        assert_close(out.grads[k], p.grad.numpy(), f"grad {k}")
