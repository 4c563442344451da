"""The per-phase roofline: each resource's ideal cycles, computed by hand from config fields."""

from __future__ import annotations

import math

from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.config import load_hardware
from satc.backends.sat.roofline import format_roofline, ideal_gemm_cycles, roofline


def test_roofline_of_a_hand_built_program():
    cfg = load_hardware("sat-small")
    b = ProgramBuilder(cfg)
    ra, rb, rc = b.alloc("a", (64, 128)), b.alloc("b", (128, 32)), b.alloc("c", (64, 32))
    b.load_region(ra, "act", 0)
    b.load_region(ra, "act", 0)                  # read twice: counted once
    b.load_region(rb, "wgt", 0)
    b.gemm(64, 32, 128, a_buf="act", a_addr=0, b_buf="wgt", b_addr=0, c_addr=0)
    b.store_region(rc, "acc", 0)
    b.vec("relu", 64, 32, s0_buf="acc", d_buf="vec")
    prog = b.build()
    labels = ["fc/FF/matmul"] * 5 + ["fc/BP/relu_grad"]
    ff, bp = roofline(prog.instructions, labels, cfg)
    gemm = math.ceil(64 * 32 * 128 / (cfg.rows * cfg.cols * cfg.multipliers_per_pe))
    dram = (64 * 128 + 128 * 32) * 4 + 64 * 32 * 4
    assert ff.phase == "FF" and ff.cycles["gemm"] == gemm
    assert ff.dram_bytes == dram and ff.cycles["dram"] == math.ceil(dram / cfg.dram_bytes_per_cycle)
    assert ff.bound == max(ff.cycles.values())
    assert bp.phase == "BP+WU" and bp.cycles["vector"] == math.ceil(64 * 32 / cfg.vector_lanes)
    assert bp.dram_bytes == 0 and bp.limiter == "vector"
    text = format_roofline([ff, bp], makespan=2 * (ff.bound + bp.bound))
    assert f"roofline {ff.bound + bp.bound} cycles; makespan / roofline = 2.000" in text


def test_nm_gemm_ideal_cycles_count_groups():
    cfg = load_hardware("sat-vcu1525")
    b = ProgramBuilder(cfg)
    b.gemm(64, 64, 256, a_buf="wgt", a_addr=0, b_buf="act", b_addr=0, c_addr=0, n=2, m=8)
    (ins,) = b.build().instructions
    # 2:8 at one group of 8 per PE per cycle: 4x the dense rate of 2 multipliers
    assert ideal_gemm_cycles(ins, cfg) == 64 * 64 * 256 / 8 / (32 * 32)
    assert ideal_gemm_cycles(ins, cfg) * 4 == 64 * 64 * 256 / (32 * 32 * 2)


def test_dram_roofline_counts_whole_bursts_over_the_shared_channel():
    """sat-small: 16-byte bursts, 16 B/cycle. A load of 10 fp32 at byte 8 of a region touches
    bytes [8, 48): the bursts [0, 48), 48 bytes; a store of 4 x 4 fp32, 64 bytes. Shared channel:
    (48 + 64) / 16 = 7 cycles; a channel per engine: max(48, 64) / 16 = 4."""
    import dataclasses
    cfg = load_hardware("sat-small")
    for shared, cycles in ((True, 7), (False, 4)):
        c = dataclasses.replace(cfg, dram_shared=shared)
        b = ProgramBuilder(c)
        ra, rc = b.alloc("a", (64,)), b.alloc("c", (4, 4))
        b.load("act", 0, ra.addr + 8, 1, 10)
        b.store_region(rc, "act", 0)
        prog = b.build()
        (ff,) = roofline(prog.instructions, ["fc/FF/matmul"] * 2, c)
        assert ff.dram_bytes == 48 + 64 and ff.cycles["dram"] == cycles
