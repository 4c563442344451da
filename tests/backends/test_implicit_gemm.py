"""Implicit-GEMM convolution: kernel taps stacked along K (FF, BP) or side by side along N (WU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import satc
from tests.satc.test_compile import check_steps
from satc.backends.sat.config import load_hardware
from satc.backends.sat.codegen.conv import tap_runs
from satc.backends.sat.codegen.tiling import GemmProblem, gemm_instructions, gemm_work, plan_tiles


def test_tap_runs_split_taps_into_constant_step_runs():
    assert tap_runs(list(range(9))) == [(0, 0, 1, 9)]
    assert tap_runs([0, 2, 6, 8]) == [(0, 0, 2, 2), (2, 6, 2, 2)]
    assert tap_runs([4]) == [(0, 4, 1, 1)]
    assert tap_runs([1, 7]) == [(0, 1, 6, 2)]


def test_tap_choices_need_whole_taps_and_byte_aligned_index_rows():
    dense = GemmProblem(64, 1024, 64, taps=9, fold="k")
    assert dense.tap_choices(1024, 64) == list(range(1, 10))
    assert dense.tap_choices(1024, 32) == [1]            # a K tile inside one tap
    # 2:8: 3-bit indices, a tap's packed row ends on a byte only when Ci % 32 == 0
    assert GemmProblem(64, 1024, 64, taps=9, fold="k", sparse="a", nm=(2, 8),
                       k_quantum=32).tap_choices(1024, 64) == list(range(1, 10))
    assert GemmProblem(64, 1024, 16, taps=9, fold="k", sparse="a", nm=(2, 8),
                       k_quantum=32).tap_choices(1024, 16) == [1]
    # the largest tap set bounds a strided input gradient's groups
    assert GemmProblem(64, 256, 64, taps=9, fold="k", tap_sets=(4, 2, 2, 1)).tap_choices(
        256, 64) == [1, 2, 3, 4]
    wu = GemmProblem(64, 32, 2048, taps=9, taps_in_k=False, fold="n")
    assert wu.tap_choices(32, 1024) == list(range(1, 10))
    assert wu.tap_choices(16, 1024) == [1]               # an N tile inside one tap
    assert GemmProblem(64, 32, 64, taps=9, taps_in_k=False).tap_choices(32, 64) == [1]


def test_gemm_instructions_count_tap_groups_per_output_tile():
    p = GemmProblem(64, 512, 64, taps=9, fold="k", tap_sets=(4, 2, 2, 1))
    # 2 M tiles x 2 N tiles; sets of 4, 2, 2, 1 taps in groups of 3: (3 + 1), 2, 2, 1
    assert gemm_instructions(p, 32, 256, 64, 3) == [(4, 256, 192, 3), (8, 256, 128, 2),
                                                    (8, 256, 64, 1)]
    # one tap per instruction: every tap of every set, times the K tiles
    assert gemm_instructions(p, 32, 256, 32, 1) == [(2 * 2 * 9 * 2, 256, 32, 1)]
    wu = GemmProblem(64, 32, 2048, taps=9, taps_in_k=False, fold="n", k_quantum=1024)
    # 9 taps in groups of 4: two of 4 (N = 128) and one of 1 (N = 32), each over 2 K tiles
    assert gemm_instructions(wu, 64, 32, 1024, 4) == [(2 * 2, 128, 1024, 4), (2, 32, 1024, 1)]


def test_folding_taps_into_k_fills_the_nm_rows():
    """Ci = 64 at 2:8 is 8 groups: with one tap per GEMM a WS pass fills 8 of the 32 PE
    rows (9 taps x 1 k-slice x 2 column blocks = 18 passes); nine taps in one GEMM are 72
    groups, 3 k-slices x 2 column blocks = 6 passes of the same length."""
    cfg = load_hardware("sat-vcu1525")
    p = GemmProblem(64, 1024, 64, taps=9, fold="k", sparse="a", nm=(2, 8), k_quantum=32,
                    a_buf="wgt", b_buf="act", n_quantum=1024)
    one, _ = gemm_work(p, 64, 1024, 64, "ws", cfg, taps=1)
    nine, _ = gemm_work(p, 64, 1024, 64, "ws", cfg, taps=9)
    body = cfg.rows * cfg.ws_preload_cycles_per_row + 1024
    fill = cfg.rows + cfg.cols
    assert one == 9 * (2 * body + fill + cfg.issue_cycles)
    assert nine == 6 * body + fill + 2 * max(0, fill - body) + cfg.issue_cycles


class _Convs(nn.Module):
    """Conv widths whose N:M index rows are byte aligned (Ci = 32 at 2:8), stride 1 and 2."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.c1 = nn.Conv2d(32, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_folded_convolutions_train_like_the_interpreter(sparsity):
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    prog = satc.compile(_Convs(), example_inputs=(x,), sparsity=sparsity, hw="sat-small")
    plan = plan_tiles(prog.graph, prog.config)
    ops = {n.op for n in prog.graph.nodes if n.name in plan and plan[n.name].tile.taps > 1}
    assert {"conv2d", "conv2d_grad_input", "conv2d_grad_weight"} <= ops
    check_steps(prog, x.numpy(), y.numpy(), 1)


def test_stride_phases_load_each_row_phase_once():
    """c2 (3x3, stride 2, pad 1, 8x8 -> 4x4) reads four stride phases of its padded 10x10
    input: rows 0, 2, .. (5 rows) and 1, 3, .. (4 rows), each loaded once over the 9
    columns both column phases read (DRAM row stride 2 x 10), then split on the vector unit:
    phase b = 0 takes 5 of 9 columns, b = 1 4 of the 7 from column 1."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    prog = satc.compile(_Convs(), example_inputs=(x,), sparsity="dense", hw="sat-small")
    mine = [i for i, lab in zip(prog.program.instructions, prog.labels) if lab == "c2/FF/conv2d"]
    loads = [i for i in mine if i.op == "load" and i.buf == "vec" and i.planes > 1]  # not the bias
    pools = [i for i in mine if i.op == "vec" and i.func == "maxpool"]
    assert loads and all(i.cols == 9 and i.dram_row_stride == 20 for i in loads)
    assert sorted({i.rows for i in loads}) == [4, 5]
    assert len(pools) == 2 * len(loads)
    assert sorted({(i.cols, i.s0_stride, i.sw) for i in pools}) == [(7, 9, 2), (9, 9, 2)]
