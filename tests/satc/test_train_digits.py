"""Training on the emulator: the small CNN on scikit-learn digits follows torch's loss curve."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import satc
from satc.data import batches, digits
from satc.models import get_model

STEPS, BATCH, LR, MOMENTUM = 20, 32, 0.05, 0.9


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_cnn_on_digits_follows_torch_for_20_steps(sparsity):
    torch.manual_seed(0)
    model = get_model("cnn")
    x_tr, y_tr, _, _ = digits()
    data = list(zip(range(STEPS), batches(x_tr, y_tr, BATCH, seed=0)))
    prog = satc.compile(copy.deepcopy(model), example_inputs=(torch.from_numpy(data[0][1][0]),),
                        sparsity=sparsity, hw="sat-small", optimizer=satc.SGD(lr=LR, momentum=MOMENTUM))
    ref = satc.sparsity.convert(copy.deepcopy(model), sparsity).train()
    opt = torch.optim.SGD(ref.parameters(), lr=LR, momentum=MOMENTUM)
    emulated, expected = [], []
    for _, (xb, yb) in data:
        emulated.append(prog.step(xb, yb).loss)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(ref(torch.from_numpy(xb)), torch.from_numpy(yb))
        loss.backward()
        opt.step()
        expected.append(loss.item())
    np.testing.assert_allclose(emulated, expected, rtol=1e-5, atol=1e-6)  # measured: 3e-7
    assert expected[-1] < 0.6 * expected[0], "the curve must actually go down"
