"""Batch normalisation on the emulator in both layouts: NCHW (per-channel pairs broadcast
along rows) and [N, F] (BatchNorm1d: pairs broadcast along columns)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import satc
from tests.satc.test_compile import check_steps


class _MLPBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(),
                                 nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_batchnorm1d_step_matches_the_interpreter(sparsity):
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8) * 3 + 1, torch.randint(0, 10, (16,))
    prog = satc.compile(_MLPBN(), example_inputs=(x,), sparsity=sparsity, hw="sat-small")
    assert {"batchnorm_relu", "batchnorm_grad"} <= {n.op for n in prog.graph.nodes}
    check_steps(prog, x.numpy(), y.numpy(), 1)
