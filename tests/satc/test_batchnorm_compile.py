"""Batch normalisation on the emulator in both layouts: NCHW (per-channel pairs broadcast
along rows) and [N, F] (BatchNorm1d: pairs broadcast along columns)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import satc
from satc.backends.sat.codegen.tiling import plan_tiles
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


class _ResidualBN(nn.Module):
    """conv-BN-relu, then conv-BN + identity, relu (a ResNet block tail) over inputs whose
    mean is far from zero compared with their spread."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.b1(self.c1(x)))
        h = torch.relu(self.b2(self.c2(h)) + h)
        return self.fc(h.flatten(1))


def _data_passes(prog, node_op: str) -> list[list[str]]:
    """Per node of ``node_op``: the vector functions over whole data tiles (more than one
    row or column: the per-channel [C] vector steps are left out), in program order."""
    ins, out = prog.program.instructions, {}
    for i, lab in enumerate(prog.labels):
        if lab.endswith("/" + node_op) and ins[i].op == "vec" and min(ins[i].rows, ins[i].cols) > 1:
            out.setdefault(lab, []).append(ins[i].func)
    return list(out.values())


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_batchnorm2d_residual_relu_in_few_passes(sparsity):
    """batchnorm_relu after a conv: the conv adds its bias and computes the statistics (sum,
    shifted sum of squares) from each C tile before storing it, so the batchnorm reads x
    once, for one affine_relu, or with a residual an accumulating affine onto the loaded
    residual and a relu; the step still trains like the interpreter with a data offset 50x
    the spread."""
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 6, 6) * 0.5 + 25, torch.randint(0, 10, (4,))
    prog = satc.compile(_ResidualBN(), example_inputs=(x,), sparsity=sparsity, hw="sat-small")
    plain, residual = _data_passes(prog, "batchnorm_relu")
    assert plain == ["affine_relu"] * 4, plain
    assert residual == ["affine", "relu"] * 4, residual
    plan = plan_tiles(prog.graph, prog.config)
    wide = {n.layer: plan[n.name].tile.wide for n in prog.graph.nodes if n.op == "conv2d"}
    assert not wide["c1"]
    convs = _data_passes(prog, "conv2d")[:2]
    for layer, conv in zip(("c1", "c2"), convs):
        if not wide[layer]:
            # per C tile: the bias, then the sum and the sum of squares about the first tile's mean
            assert len(conv) % 3 == 0 and conv == ["add", "reduce_sum", "reduce_sqdev"] * (len(conv) // 3)
            continue
        # a wide C tile (padding columns between output rows): the bias over its columns,
        # then one sum and one sum of squares per image and output row, over 6 valid columns
        ins = [i for i, lab in zip(prog.program.instructions, prog.labels)
               if lab.endswith(f"{layer}/FF/conv2d") and i.op == "vec" and i.func.startswith("reduce")]
        assert {(i.func, i.cols) for i in ins} == {("reduce_sum", 6), ("reduce_sqdev", 6)}
        assert len(ins) == 2 * 4 * 6                # 4 images x 6 output rows, two reduces
    check_steps(prog, x.numpy(), y.numpy(), 2)


class _PooledBN(nn.Module):
    """A batchnorm whose input a maxpool makes (not a conv): it computes its own statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 3 * 3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.b1(nn.functional.max_pool2d(self.c1(x), 2))).flatten(1))


def test_batchnorm2d_of_a_pool_computes_its_statistics():
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 6, 6) * 0.5 + 25, torch.randint(0, 10, (4,))
    prog = satc.compile(_PooledBN(), example_inputs=(x,), sparsity="dense", hw="sat-small")
    (bn,) = _data_passes(prog, "batchnorm_relu")
    assert bn == ["reduce_sum", "reduce_sqdev"] * 4 + ["affine_relu"] * 4, bn
    check_steps(prog, x.numpy(), y.numpy(), 2)
