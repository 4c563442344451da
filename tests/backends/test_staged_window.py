"""Staged conv windows: the padded rows a tile's taps read, loaded at full width (long DRAM
runs) and cropped into the B tile by vector copies, for FF, BP and WU."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

import satc
from satc.backends.sat.codegen import tiling
from satc.backends.sat.codegen.tiling import GemmProblem, Tile, gemm_work, stage_window, staged_work
from satc.backends.sat.config import load_hardware
from tests.backends.test_wide_window import _conv_node
from tests.satc.test_compile import check_steps


class _SmallMaps(nn.Module):
    """Three stride-1 3x3 convs on 4x4 maps (Ci = 32, 64: byte-aligned 2:8 index rows)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.c1 = nn.Conv2d(32, 64, 3, padding=1)
        self.c2 = nn.Conv2d(64, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.c1(torch.relu(self.stem(x))))
        return self.fc(torch.relu(self.c2(a)).flatten(1))


def test_stage_window_geometry():
    cfg = load_hardware("sat-vcu1525")                  # 64 B bursts
    # rows of 4 and 8 fp32 (16 B, 32 B) are shorter than a burst: stageable, padded width 6 / 10
    assert stage_window(_conv_node(4, 4, 3, 1), cfg) == (3, 3, 4, 4, 6)
    assert stage_window(_conv_node(8, 8, 3, 1), cfg) == (3, 3, 8, 8, 10)
    assert stage_window(_conv_node(16, 16, 3, 1), cfg) == ()            # 64 B rows: whole bursts
    assert stage_window(_conv_node(4, 4, 3, 1, stride=2), cfg) == ()   # strided: stride phases
    assert stage_window(_conv_node(4, 4, 1, 0), cfg) == ()             # 1x1: one contiguous window
    # the input and weight gradients of the same conv stage their B windows too: dY padded for
    # the full correlation (1 left, 1 right: wp = 6), X as in FF
    tg = satc.build_training_graph(satc.import_torch(_SmallMaps(), (torch.zeros(2, 3, 4, 4),)))
    c1 = {n.op: n for n in tg.nodes if n.layer == "c1"}
    assert stage_window(c1["conv2d_grad_input"], cfg) == (3, 3, 4, 4, 6)
    assert stage_window(c1["conv2d_grad_weight"], cfg) == (3, 3, 4, 4, 6)


def test_staged_work_by_hand():
    cfg = load_hardware("sat-vcu1525")
    rate, lanes, lat = cfg.dram_stream_bytes_per_cycle, cfg.vector_lanes, cfg.vector_latency_cycles
    # FF of a 3x3 conv on 4x4 maps: Co = 64, Ci = 32, 4 images (N = 64)
    p = GemmProblem(64, 4 * 16, 32, taps=9, n_quantum=16, a_buf="wgt", b_buf="act", fold="k",
                    row=4, stage=(3, 3, 4, 4, 6))
    # the rows nine taps span: all six padded rows; three taps (one kernel row, or two when
    # not aligned) at most five; one tap its four output rows
    assert (p.stage_rows(9), p.stage_rows(3), p.stage_rows(1)) == (6, 5, 4)
    assert p.stage_bytes(32, 32, 9) == 32 * 2 * 6 * 6 * 4               # 32 channels x 2 images
    compute, dma, vector = staged_work(p, 64, 32, 32, "ws", cfg, taps=9)
    plain_compute, plain_dma = gemm_work(p, 64, 32, 32, "ws", cfg, taps=9)
    assert compute == plain_compute                      # the same GEMMs read the same tile
    # 2 N tiles x 1 K tile, nine taps per instruction: A = 64 x 288 weights in runs of the
    # tile (one contiguous 72 KiB run each); B staged = 32 channels x 2 images x 6 x 6 fp32 in
    # runs of 144 B (3 bursts, 192 B); C in rows of 4 fp32 (16 B -> one burst each)
    a_moved, b_moved, c_moved = 2 * 64 * 288 * 4, 2 * 32 * 2 * 192, 64 * 64 // 4 * 64
    transfers = 2 * (1 + 2) + 2                          # A, one B DMA per image; C per tile
    assert dma == -(-a_moved // rate) - (-b_moved // rate) - (-c_moved // rate) \
        + transfers * cfg.issue_cycles
    # per tap and output row one copy of 32 x 2 rows of 4 elements
    assert vector == 2 * 9 * 4 * (cfg.issue_cycles + lat + -(-32 * 2 * 4 // lanes))
    # unstaged: one DMA per image and tap of rows of 4 (16 B -> 64 B): 4.3x the B traffic
    b_plain = 2 * 9 * 2 * 32 * 4 * 64
    assert plain_dma == -(-a_moved // rate) - (-b_plain // rate) - (-c_moved // rate) \
        + (2 * (1 + 9 * 2) + 2) * cfg.issue_cycles
    assert p.buffer_use(64, 32, 32, 2, 9, staged=True)["act"] == \
        p.buffer_use(64, 32, 32, 2, 9)["act"] + 2 * 32 * 2 * 6 * 6 * 4


def test_staged_weight_gradient_work_by_hand():
    cfg = load_hardware("sat-vcu1525")
    rate, lanes, lat = cfg.dram_stream_bytes_per_cycle, cfg.vector_lanes, cfg.vector_latency_cycles
    # WU of the same conv: dW[64, 9 x 32] over L = 4 images of 4x4; tiles of all 64 output
    # channels, all 32 input channels, 2 images, nine taps side by side along N
    p = GemmProblem(64, 32, 4 * 16, taps=9, taps_in_k=False, k_quantum=16, a_buf="act",
                    b_buf="wgt", fold="n", row=4, stage=(3, 3, 4, 4, 6))
    assert p.a_stage_bytes(64, 32) == 64 * 2 * 4 * 6 * 4        # dY: its 4 rows at width 6
    compute, dma, vector = staged_work(p, 64, 32, 32, "ws", cfg, taps=9)
    assert compute == gemm_work(p, 64, 32, 32, "ws", cfg, taps=9)[0]
    # 2 K tiles (2 images each): A = 64 channels x 2 images x 4 rows x 6 fp32, runs of 96 B
    # (2 bursts); B = 32 channels x 2 images x all 6 x 6 rows, runs of 144 B (3 bursts);
    # C = 9 tap matrices of 64 x 32 (contiguous, whole bursts)
    a_moved, b_moved, c_moved = 2 * 64 * 2 * 128, 2 * 32 * 2 * 192, 9 * 64 * 32 * 4
    transfers = 2 * (2 + 2) + 9                  # per K tile an A and a B DMA per image; C
    assert dma == -(-a_moved // rate) - (-b_moved // rate) - (-c_moved // rate) \
        + transfers * cfg.issue_cycles
    # crops: per K tile 4 rows of dY (64 x 2 rows of 4), 9 taps x 4 rows of X (32 x 2 rows)
    step = cfg.issue_cycles + lat
    assert vector == 2 * (4 * (step + -(-64 * 2 * 4 // lanes)) + 9 * 4 * (step + -(-32 * 2 * 4 // lanes)))


def _forced_staged(monkeypatch, images: int) -> list[str]:
    """Make every GEMM with a stageable window take a staged tile of ``images`` images, all
    taps per instruction."""
    picked: list[str] = []
    choose = tiling.choose_tile

    def forced(node, p, cfg, interleave=True):
        if not p.stage:
            return choose(node, p, cfg, interleave)
        picked.append(node.name)
        if p.fold == "k":
            nt, kt = images * p.n_quantum, p.k
        else:
            nt, kt = p.n, images * p.k_quantum
        return Tile(p.m, nt, kt, "ws", 2, 0, interleave, False, max(p.tap_choices(nt, kt)),
                    staged=True)
    monkeypatch.setattr(tiling, "choose_tile", forced)
    return picked


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_staged_windows_train_like_the_interpreter(monkeypatch, sparsity):
    torch.manual_seed(0)
    x, y = torch.randn(3, 3, 4, 4), torch.randint(0, 10, (3,))
    picked = _forced_staged(monkeypatch, 2)             # 2 images a tile: 3 = 2 + 1
    hw = replace(load_hardware("sat-small"), act_buffer_bytes=1 << 20, acc_buffer_bytes=1 << 18,
                 wgt_buffer_bytes=1 << 18, dram_burst_bytes=64)   # rows of 4 fp32: short runs
    prog = satc.compile(_SmallMaps(), example_inputs=(x,), sparsity=sparsity, hw=hw)
    ops = {n.split("/")[-1] for n in picked}
    assert {"conv2d", "conv2d_grad_input", "conv2d_grad_weight"} <= {
        n.op for n in prog.graph.nodes if n.name in picked}, ops
    ins = prog.program.instructions
    # staged spans: per image the six padded rows of 6 columns of a K tile's channels (FF c1:
    # 32 channels, c2: 64); the per-tap window rows of 4 are gone from every staged operand
    spans = {(i.planes, i.rows, i.cols) for i in ins if i.op == "load" and i.rows == 6}
    assert {(32, 6, 6), (64, 6, 6)} <= spans
    # WU of c1 and c2 stage their dY (64 / 32 output channels): its 4 rows at width 6
    dy_spans = {(i.planes, i.rows, i.cols) for i in ins if i.op == "load" and i.buf == "act"
                and (i.rows, i.cols) == (4, 6)}
    assert {(64, 4, 6), (32, 4, 6)} <= dy_spans
    crops = [i for i in ins if i.op == "vec" and i.func == "copy" and i.cols == 4
             and i.s0_buf == i.d_buf and i.s0_buf in ("act", "wgt")]
    # FF c1: per N tile (2 images, then 1) nine taps x four output rows of 32 x images rows
    assert sum(1 for i in crops if i.rows == 32 * 2) >= 9 * 4
    assert sum(1 for i in crops if i.rows == 32 * 1) >= 9 * 4
    check_steps(prog, x.numpy(), y.numpy(), 2)
