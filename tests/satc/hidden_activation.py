"""The two-layer classifier the elementwise-op tests train: ``fc2(act(fc1(x)))`` on 4 inputs
of 3x2x2, 5 classes, and the check that its interpreted step equals torch autograd."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from satc.frontend.torch_import import import_torch
from tests.torch_reference import assert_interpreted_step_matches_autograd


class HiddenActivationNet(torch.nn.Module):
    """fc2(act(fc1(x))), 12 -> 16 -> 5; ``zero_unit``: hidden unit 0 has a zero weight row and
    bias, so ``act`` sees exact zeros there (for the kinks of abs / min / max)."""

    def __init__(self, act: Callable[[torch.Tensor], torch.Tensor], zero_unit: bool = False) -> None:
        super().__init__()
        self.act = act
        self.fc1 = torch.nn.Linear(12, 16)
        self.fc2 = torch.nn.Linear(16, 5)
        if zero_unit:
            with torch.no_grad():
                self.fc1.weight[0] = 0.0
                self.fc1.bias[0] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x.flatten(1))))


def data() -> tuple[np.ndarray, np.ndarray]:
    """Inputs [4, 3, 2, 2] (standard normal, seed 0) and labels."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((4, 3, 2, 2)).astype(np.float32), np.array([0, 3, 1, 4])


def check_step_matches_autograd(model: torch.nn.Module, ops: set[str]) -> None:
    """Import ``model`` on :func:`data`, check it holds ``ops``, and that one interpreted
    training step equals torch autograd."""
    x, y = data()
    g = import_torch(model, (torch.from_numpy(x),))
    assert ops <= {n.op for n in g.nodes}, [n.op for n in g.nodes]
    assert_interpreted_step_matches_autograd(model, g, x, y)
