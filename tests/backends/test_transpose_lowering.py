"""Transposes that move the last axis: runs in, a vector transpose, runs out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import satc
from satc.backends.sat.access import vec_shapes
from satc.backends.sat.isa import Instruction
from satc.backends.sat.vecfuncs import VEC_FUNC_BY_NAME
from tests.satc.test_compile import check_steps


def test_vector_transpose_shape_and_kernel():
    ins = Instruction("vec", func="transpose", s0_buf="vec", s1_buf="vec", d_buf="vec", rows=3,
                      cols=5, s0_stride=5, d_stride=3)
    assert vec_shapes(ins)[1] == (5, 3)
    x = np.arange(15, dtype=np.float32).reshape(3, 5)
    np.testing.assert_array_equal(VEC_FUNC_BY_NAME["transpose"].kernel(x, None, None), x.T)


class _Permutes(nn.Module):
    """Token-major activations permuted the ways attention and channels-last norms do."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(12, 24)
        self.fc = nn.Linear(6 * 24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:       # x: [N, 6, 12]
        h = self.proj(x).view(x.shape[0], 6, 4, 6)              # [N, T, H, D]
        h = h.permute(0, 2, 3, 1)                                # [N, H, D, T]: moves the last axis
        h = torch.relu(h).permute(0, 3, 1, 2)                    # back to [N, T, H, D]
        return self.fc(h.reshape(x.shape[0], -1))


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_permutes_train_like_the_interpreter_with_long_runs(sparsity):
    torch.manual_seed(0)
    x, y = torch.randn(3, 6, 12), torch.randint(0, 5, (3,))
    prog = satc.compile(_Permutes(), example_inputs=(x,), sparsity=sparsity, hw="sat-small")
    ins = prog.program.instructions
    spans = [i for i, lab in enumerate(prog.labels) if lab.endswith("/transpose")]
    assert spans and any(ins[i].op == "vec" and ins[i].func == "transpose" for i in spans)
    # no transpose DMA moves single elements: every run is a whole row of the input's or
    # the output's last axis (6 or 4 elements here, never 1)
    dmas = [ins[i] for i in spans if ins[i].op in ("load", "store")]
    assert dmas and min(d.cols for d in dmas) > 1
    check_steps(prog, x.numpy(), y.numpy(), 2)
