"""Wide conv windows: a stride-1 conv input (and the dY of its input gradient) loaded once per
K tile for all kernel taps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import satc
from satc.backends.sat.codegen import tiling
from satc.backends.sat.codegen.tiling import GemmProblem, Tile, conv_window, wide_work
from satc.backends.sat.config import load_hardware
from satc.ir.graph import Graph
from satc.ir.types import TensorType
from tests.satc.test_compile import check_steps


def _conv_node(h: int, w: int, k: int, pad: int, stride: int = 1):
    g = Graph("c")
    x = g.add_input("x", TensorType((2, 8, h, w)))
    wt = g.add_param("w", np.zeros((16, 8, k, k), np.float32))
    y = g.add1("conv2d", [x, wt], {"stride": [stride, stride], "padding": [pad] * 4,
                                   "dilation": [1, 1], "groups": 1})
    return y.producer


def test_conv_window_geometry():
    # 3x3 pad 1 on 8x8: padded rows of wp = 10; each image's segment covers output rows
    # 0..7 and the two rows below them: (8 + 3 - 2) * 10 + 8 = 98 elements
    assert conv_window(_conv_node(8, 8, 3, 1)) == (3, 3, 10, 98)
    assert conv_window(_conv_node(8, 8, 5, 2)) == (5, 5, 12, (8 + 5 - 2) * 12 + 8)
    assert conv_window(_conv_node(8, 8, 3, 1, stride=2)) == ()      # strided: stride phases
    assert conv_window(_conv_node(8, 8, 1, 0)) == ()                # 1x1: no taps to share
    # the input gradient reads dY padded for the full correlation: kw - 1 - pl = 1 left,
    # W - Wo + pl = 1 right (wp = 10), and writes dX rows of 8: the same segment
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1),
                          nn.Flatten(), nn.Linear(16 * 64, 10))
    tg = satc.build_training_graph(satc.import_torch(model, (torch.zeros(2, 3, 8, 8),)))
    gi = next(n for n in tg.nodes if n.op == "conv2d_grad_input")
    assert conv_window(gi) == (3, 3, 10, 98)


def test_wide_work_counts_one_window_load_per_k_tile():
    cfg = load_hardware("sat-vcu1525")
    p = GemmProblem(64, 4 * 64, 64, taps=9, n_quantum=64, a_buf="wgt", b_buf="act", fold="k",
                    window=(3, 3, 10, 98), row=8)
    assert p.wide_columns(2) == 2 * 98 - 2 * 10
    # taps stack along K: at 2:8 each tap's packed index row must end on a byte (Ci % 32)
    nm = GemmProblem(64, 256, 48, taps=9, n_quantum=64, sparse="a", nm=(2, 8), k_quantum=32,
                     fold="k", window=(3, 3, 10, 98), row=8)
    assert nm.wide_fits_fields(128, 32) and not nm.wide_fits_fields(128, 48)
    assert not p.wide_fits_fields(64 * 700, 32)         # 700 segments: N over the 16-bit field
    compute, dma = wide_work(p, 64, 128, 32, "ws", cfg)
    tiles = 1 * 2 * 2                                   # M, N (2 images each), K tiles
    burst, rate = cfg.dram_burst_bytes, cfg.dram_stream_bytes_per_cycle
    assert burst == 64
    # A: one kernel row (3 taps x 32 channels) x 64 rows per GEMM, 3 GEMMs per tile, in
    # runs of 32 fp32 (128 B: two whole bursts)
    a_moved = tiles * 3 * 64 * 3 * 32 * 4
    # B: 3 shifted copies of 32 channels x 2 images per tile, runs of one 98-element
    # segment (392 B -> 7 bursts = 448 B)
    b_moved = tiles * 3 * 32 * 2 * 448
    # C: 64 x 256 outputs stored in rows of 8 fp32 (32 B -> one 64 B burst)
    c_moved = 64 * 256 // 8 * 64
    transfers = tiles * (3 + 3) + 2
    want = -(-a_moved // rate) - (-b_moved // rate) - (-c_moved // rate) \
        + transfers * cfg.issue_cycles
    assert dma == want
    # WS, B stationary (no stationary_a): 1 k-slice (96 / 2 = 48 k-steps > 32 rows: 2),
    # ceil(176 / 32) = 6 column blocks of body 32 + 64 streamed rows
    ksl, blocks, body, fill = 2, 6, cfg.rows + 64, cfg.rows + cfg.cols
    gemm = ksl * blocks * body + fill + (ksl - 1) * max(0, fill - (blocks - 1) * body)
    assert compute == tiles * 3 * (gemm + cfg.issue_cycles)


class _SameConvs(nn.Module):
    """Stride-1 convs (Ci = 32, 64: byte-aligned 2:8 index rows); a 3x3 and a 5x5 read the
    same input, whose storage is padded for the 5x5, so the 3x3 falls back to per-tap."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.c1 = nn.Conv2d(32, 64, 3, padding=1)
        self.c2 = nn.Conv2d(64, 32, 3, padding=1)
        self.c3 = nn.Conv2d(64, 32, 5, padding=2)
        self.fc = nn.Linear(32 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.c1(torch.relu(self.stem(x))))
        return self.fc((torch.relu(self.c2(a)) + torch.relu(self.c3(a))).flatten(1))


def _forced_wide(monkeypatch, kt: int | None, images: int) -> list[str]:
    """Make every conv with a window take a wide tile of ``images`` images and K tile ``kt``."""
    picked: list[str] = []
    choose = tiling.choose_tile

    def forced(node, p, cfg, interleave=True):
        if not p.window or p.m_quantum != 1:
            return choose(node, p, cfg, interleave)
        picked.append(node.name)
        return Tile(p.m, images * p.n_quantum, kt or p.k, "ws", 2, 0, interleave, False,
                    p.window[1], wide=True)
    monkeypatch.setattr(tiling, "choose_tile", forced)
    return picked


@pytest.mark.parametrize("sparsity,kt", [("dense", None), ("bdwp:2:8", 32)])
def test_wide_windows_train_like_the_interpreter(monkeypatch, sparsity, kt):
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 6, 6), torch.randint(0, 10, (4,))
    picked = _forced_wide(monkeypatch, kt, 3)           # 3 images a tile: 4 = 3 + 1
    hw = replace(load_hardware("sat-small"), act_buffer_bytes=1 << 20, acc_buffer_bytes=1 << 18,
                 wgt_buffer_bytes=1 << 18, vec_buffer_bytes=1 << 18)   # fp32; room for the tiles
    prog = satc.compile(_SameConvs(), example_inputs=(x,), sparsity=sparsity, hw=hw)
    assert {n.split(".")[0] for n in picked} >= {"stem", "c1", "c2", "c3"}
    assert {n.split(".")[0] for n in picked if n.endswith("conv2d_grad_input")} >= {"c1", "c2"}
    # stem and c1 read their inputs wide (kw shifted copies: DMAs of images x seg elements,
    # 3 images, then 1); a is padded 2 for c3, so c3 reads it wide and c2 per tap
    segs = {(ins.rows, ins.cols) for ins in prog.program.instructions
            if ins.op == "load" and ins.buf == "act"}
    assert {(3, (6 + 1) * 8 + 6), (1, (6 + 1) * 8 + 6)} <= segs        # 3x3 pad 1: wp = 8
    assert {(3, (6 + 3) * 10 + 6), (1, (6 + 3) * 10 + 6)} <= segs      # 5x5 pad 2: wp = 10
    wide_b = [ins for ins in prog.program.instructions if ins.op == "gemm" and ins.b_buf == "act"
              and ins.b_stride in (3 * 62, 3 * 96)]
    assert len(wide_b) > 0
    check_steps(prog, x.numpy(), y.numpy(), 1)


@pytest.mark.parametrize("sparsity,kt", [("dense", None), ("bdwp:2:8", 32)])
def test_wide_input_gradient_with_folded_relu_and_batchnorm_sums(monkeypatch, sparsity, kt):
    """A wide input gradient that folds a relu_grad and computes its batchnorm's sums
    (passes/fusion.py): the mask and x chunks follow the wide C layout (rows of wp, gap
    columns dropped), and the step trains like the interpreter."""
    from tests.passes.test_fusion import _Streamed
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    picked = _forced_wide(monkeypatch, kt, 3)
    hw = replace(load_hardware("sat-small"), act_buffer_bytes=1 << 21, acc_buffer_bytes=1 << 20,
                 wgt_buffer_bytes=1 << 19, vec_buffer_bytes=1 << 18)
    prog = satc.compile(_Streamed(), example_inputs=(x,), sparsity=sparsity, hw=hw,
                        exclude=["fc"])
    (c2,) = [n for n in prog.graph.nodes if n.op == "conv2d_grad_input" and n.layer == "c2"]
    assert c2.attrs.get("bn_stats") and c2.name in picked
    sums = [i for i, lab in zip(prog.program.instructions, prog.labels)
            if lab == "c2/BP/conv2d_grad_input" and i.op == "vec" and i.func == "reduce_sum_dot"]
    # 3x3 pad 1 on 16x16: rows of wp = 18, segments of (16 + 1) * 18 + 16 = 322 per image; the
    # sums read dx in the accumulators, channel planes one C tile (3 images, then 3, then 2) apart
    assert sums and all(i.s0_buf == "acc" for i in sums)
    assert {i.s0_stride for i in sums} == {3 * 322, 2 * 322}
    check_steps(prog, x.numpy(), y.numpy(), 1)
