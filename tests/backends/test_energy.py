"""Energy model: a program's joules equal the hand sum of its actions, priced by config fields."""

from __future__ import annotations

import dataclasses
import math

import pytest

from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.config import ENERGY_FIELDS, config_from_dict, load_hardware
from satc.backends.sat.cost_model import instruction_cycles
from satc.backends.sat.energy import format_energy, step_energy
from satc.backends.sat.timing import time_program
from satc.errors import ConfigError, ScheduleError

PJ = 1e-12


def _program(cfg):
    """load A (8x16) and B (16x8), a dense and a 2:8 gemm, store C, relu, sgd, sore."""
    b = ProgramBuilder(cfg)
    ra, rb, rc = b.alloc("a", (8, 16)), b.alloc("b", (16, 8)), b.alloc("c", (8, 8))
    b.load_region(ra, "act", 0)
    b.load_region(rb, "wgt", 0, signal="stce")
    b.gemm(8, 8, 16, a_buf="act", a_addr=0, b_buf="wgt", b_addr=0, c_addr=0, wait="load")
    b.gemm(8, 8, 16, a_buf="wgt", a_addr=1024, b_buf="act", b_addr=0, c_addr=256, n=2, m=8,
           idx_buf="wgt", idx_addr=2048, accumulate=True, signal="store")
    b.store_region(rc, "acc", 0, wait="stce")
    b.vec("relu", 5, 7)
    b.wuve("sgd", 100, w_buf="vec", w_addr=0, g_buf="vec", g_addr=1024, m_buf="vec", m_addr=2048,
           hp_buf="vec", hp_addr=4096)
    b.sore(2, 8, 6, 16, src_buf="vec", src_addr=0, val_buf="wgt", val_addr=0, idx_buf="wgt", idx_addr=4096)
    return b.build()


def _hand_energy(cfg, makespan):
    """The step's joules, summed by hand from the instruction fields above and the config."""
    assert not cfg.mixed_precision                       # sat-small multiplies in fp32
    f4 = 4                                               # fp32 bytes
    # load A, load B: DRAM read + buffer write of the tile; store C: buffer read + DRAM write
    dma = (8 * 16 + 16 * 8) * f4 * (cfg.dram_read_pj_per_byte + cfg.buffer_write_pj_per_byte) \
        + 8 * 8 * f4 * (cfg.buffer_read_pj_per_byte + cfg.dram_write_pj_per_byte)
    # dense gemm: 8*8*16 multiplies; reads A, B; writes C (fp32)
    dense = 8 * 8 * 16 * cfg.mac_dense_fp32_pj \
        + (8 * 16 + 16 * 8) * f4 * cfg.buffer_read_pj_per_byte + 8 * 8 * f4 * cfg.buffer_write_pj_per_byte
    # 2:8 gemm, A compressed: 2 groups of 8 per row of A -> 4 values (fp32) + 2 index bytes
    # (2 indices of 3 bits per group: 6 bits -> 1 byte per group) per row; 8*8*2*2 multiplies;
    # reads A values, indices, B and C (accumulate); writes C
    nm = 8 * 8 * 2 * 2 * cfg.mac_nm_fp32_pj \
        + (8 * 4 * f4 + 8 * 2 + 16 * 8 * f4 + 8 * 8 * f4) * cfg.buffer_read_pj_per_byte \
        + 8 * 8 * f4 * cfg.buffer_write_pj_per_byte
    prog = _program(cfg)
    gemm_cycles = sum(instruction_cycles(i, cfg) for i in prog.instructions if i.op == "gemm")
    pe = gemm_cycles * cfg.rows * cfg.cols * cfg.pe_active_pj_per_cycle
    relu = 5 * 7 * cfg.vector_pj_per_element + 5 * 7 * f4 * (cfg.buffer_read_pj_per_byte
                                                             + cfg.buffer_write_pj_per_byte)
    # sgd: reads w, m, g (100 fp32 each) and the 8-word hp record; writes w and m
    sgd = 100 * cfg.wuve_pj_per_element + (3 * 100 + 8) * f4 * cfg.buffer_read_pj_per_byte \
        + 2 * 100 * f4 * cfg.buffer_write_pj_per_byte
    # sore 2:8 over a 6x16 source: 2 groups per row -> 4 values + 2 index bytes per row
    sore = 6 * 16 * cfg.sore_pj_per_element + 6 * 16 * f4 * cfg.buffer_read_pj_per_byte \
        + 6 * (4 * f4 + 2) * cfg.buffer_write_pj_per_byte
    dynamic = (dma + dense + nm + pe + relu + sgd + sore) * PJ
    busy = {e: 0 for e in ("load", "store", "stce", "vector", "wuve", "sore")}
    for ins in prog.instructions:
        busy[ins.engine] += instruction_cycles(ins, cfg)
    idle = sum((makespan - b) * (cfg.pe_idle_pj_per_cycle * cfg.rows * cfg.cols if e == "stce"
                                 else cfg.engine_idle_pj_per_cycle) for e, b in busy.items()) * PJ
    static = (cfg.static_power_w + cfg.dram_static_power_w) * makespan / (cfg.clock_mhz * 1e6)
    return static + idle + dynamic, dynamic


@pytest.mark.parametrize("slack", [0, 1000])
def test_energy_is_the_hand_sum_of_the_actions(small, slack):
    prog = _program(small)
    makespan = time_program(prog).total_cycles + slack
    rep = step_energy(prog.instructions, small, makespan)
    total, dynamic = _hand_energy(small, makespan)
    assert rep.total_j == pytest.approx(total, rel=1e-12)
    assert sum(rep.action_j.values()) == pytest.approx(dynamic, rel=1e-12)
    assert rep.action_j["mac_dense"] == pytest.approx(8 * 8 * 16 * small.mac_dense_fp32_pj * PJ)
    assert rep.action_j["mac_nm"] == pytest.approx(8 * 8 * 4 * small.mac_nm_fp32_pj * PJ)
    assert rep.action_j["dram_write"] == pytest.approx(8 * 8 * 4 * small.dram_write_pj_per_byte * PJ)
    assert sum(rep.by_engine().values()) + rep.static_j == pytest.approx(rep.total_j)
    assert rep.dense_macs == 2 * 8 * 8 * 16
    assert rep.gops_per_watt == pytest.approx(2 * rep.dense_macs / rep.total_j / 1e9)
    assert rep.watts == pytest.approx(rep.total_j / (makespan / (small.clock_mhz * 1e6)))
    assert rep.images_per_joule(4) == pytest.approx(4 / rep.total_j)


def test_mixed_precision_prices_fp16_macs(small):
    cfg = dataclasses.replace(small, precision="mixed")
    prog = _program(small)
    rep = step_energy(prog.instructions, cfg, time_program(prog).total_cycles)
    assert rep.action_j["mac_dense"] == pytest.approx(8 * 8 * 16 * cfg.mac_dense_fp16_pj * PJ)
    assert rep.action_j["mac_nm"] == pytest.approx(8 * 8 * 4 * cfg.mac_nm_fp16_pj * PJ)


def test_every_price_is_a_field(small):
    """Zero every energy field: zero joules; one field at a time moves only its action."""
    zero = dataclasses.replace(small, **dict.fromkeys(ENERGY_FIELDS, 0.0))
    prog = _program(small)
    makespan = time_program(prog).total_cycles
    assert step_energy(prog.instructions, zero, makespan).total_j == 0.0
    only_dram = dataclasses.replace(zero, dram_read_pj_per_byte=3.0)
    assert step_energy(prog.instructions, only_dram, makespan).total_j == \
        pytest.approx((8 * 16 + 16 * 8) * 4 * 3.0 * PJ)


def test_stage_breakdown_from_labels(small):
    prog = _program(small)
    labels = ["fc1/FF/matmul"] * 5 + ["fc1/OPT/sgd"] * 3
    rep = step_energy(prog.instructions, small, time_program(prog).total_cycles, labels)
    stages = rep.by_stage()
    assert set(stages) == {"FF", "OPT"}
    assert sum(stages.values()) == pytest.approx(sum(rep.action_j.values()))
    assert stages["OPT"] > 0 and "by stage" in format_energy(rep, batch=4)


def test_makespan_shorter_than_busy_refused(small):
    prog = _program(small)
    with pytest.raises(ScheduleError, match="shorter than"):
        step_energy(prog.instructions, small, 10)


@pytest.mark.parametrize("value", [-1.0, float("nan"), "3"])
def test_bad_energy_field_names_it(value):
    data = load_hardware("sat-small").to_dict()
    data["mac_nm_fp16_pj"] = value
    with pytest.raises(ConfigError, match="'mac_nm_fp16_pj'"):
        config_from_dict(data)


def test_missing_energy_field_names_it():
    data = load_hardware("sat-small").to_dict()
    del data["static_power_w"]
    with pytest.raises(ConfigError, match="static_power_w"):
        config_from_dict(data)


def test_compiled_step_sparse_spends_less_on_macs():
    import satc

    progs = {mode: satc.compile("mlp", sparsity=mode, hw="sat-vcu1525", input_shapes={"x": (8, 1, 8, 8)})
             for mode in ("dense", "bdwp:2:8")}
    reps = {mode: p.energy() for mode, p in progs.items()}
    for mode, rep in reps.items():
        assert rep.cycles == progs[mode].timing.total_cycles
        assert math.isclose(sum(rep.by_stage().values()), sum(rep.action_j.values()))
        assert {"FF", "BP", "WU", "OPT"} <= set(rep.by_stage())
    assert reps["bdwp:2:8"].action_j["mac_dense"] < reps["dense"].action_j["mac_dense"]
    assert reps["bdwp:2:8"].action_j["mac_nm"] > 0 == reps["dense"].action_j["mac_nm"]


def test_dram_energy_counts_whole_bursts(small):
    """sat-small bursts are 16 bytes: 3 rows of 10 fp32 (40 bytes) out of DRAM rows of 16
    elements move 3 x 48 bytes; the same rows packed are one 120-byte run, 128 bytes."""
    from satc.backends.sat.energy import instruction_activity
    b = ProgramBuilder(small)
    strided = b.instructions[b.load("act", 0, 0, 3, 10, dram_row_stride=16)]
    packed = b.instructions[b.store("act", 0, 0, 3, 10)]
    assert instruction_activity(strided, small)["dram_read"] == 3 * 48
    assert instruction_activity(packed, small)["dram_write"] == 128
    assert instruction_activity(strided, small)["buffer_write"] == 120     # the payload on chip
