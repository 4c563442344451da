"""Cycle model: counts equal hand arithmetic from config fields; engines overlap unless ordered."""

from __future__ import annotations

import math

import pytest

from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.config import load_hardware
from satc.backends.sat.isa import Instruction
from satc.errors import ISAError
from satc.backends.sat.cost_model import gemm_cycles, instruction_cycles
from satc.backends.sat.timing import simulate, time_program


def _dma_cycles(cfg, nbytes):
    return cfg.issue_cycles + cfg.dram_latency_cycles + math.ceil(nbytes / cfg.dram_bytes_per_cycle)


def _gemm_program(cfg, mt, nt, k, **kw):
    b = ProgramBuilder(cfg)
    ra, rb, rc = b.alloc("a", (mt, k)), b.alloc("b", (k, nt)), b.alloc("c", (mt, nt))
    b.load_region(ra, "act", 0)
    b.load_region(rb, "wgt", 0, signal="stce")
    b.gemm(mt, nt, k, a_buf="act", a_addr=0, b_buf="wgt", b_addr=0, c_addr=0, wait="load",
           signal="store", **kw)
    b.store_region(rc, "acc", 0, wait="stce")
    return b.build()


def test_dense_ws_program_cycles(small):
    cfg = small
    mt, nt, k = 8, 8, 16
    rep = time_program(_gemm_program(cfg, mt, nt, k, dataflow="ws"))
    load_a = _dma_cycles(cfg, mt * k * 4)
    load_b = _dma_cycles(cfg, k * nt * 4)
    ksteps = math.ceil(k / cfg.multipliers_per_pe)                          # 8
    passes = math.ceil(ksteps / cfg.rows) * math.ceil(nt / cfg.cols)        # 2 * 2
    gemm = cfg.issue_cycles + passes * (cfg.rows * cfg.ws_preload_cycles_per_row + mt + cfg.rows + cfg.cols)
    store = _dma_cycles(cfg, mt * nt * 4)
    assert [(t.start, t.end) for t in rep.timeline] == [
        (0, load_a), (load_a, load_a + load_b), (load_a + load_b, load_a + load_b + gemm),
        (load_a + load_b + gemm, load_a + load_b + gemm + store)]
    assert rep.total_cycles == load_a + load_b + gemm + store
    assert rep.busy_cycles["load"] == load_a + load_b and rep.busy_cycles["stce"] == gemm
    assert rep.utilisation["stce"] == gemm / rep.total_cycles
    assert rep.stce_macs == mt * nt * k
    assert rep.stce_mac_utilisation == mt * nt * k / (rep.total_cycles * cfg.peak_dense_macs_per_cycle)
    assert rep.seconds == rep.total_cycles / (cfg.clock_mhz * 1e6)


def test_os_and_nm_gemm_cycles(small):
    cfg = small
    mt, nt, k = 8, 12, 32
    prog = _gemm_program(cfg, mt, nt, k, dataflow="os")
    ksteps = math.ceil(k / cfg.multipliers_per_pe)
    passes = math.ceil(mt / cfg.rows) * math.ceil(nt / cfg.cols)
    os_cycles = passes * (ksteps + cfg.rows + cfg.cols + cfg.rows * cfg.os_drain_cycles_per_row)
    assert gemm_cycles(prog.instructions[2], cfg) == os_cycles
    # 2:8 with A compressed: one group of M per cycle, A is the stationary operand in WS
    b = ProgramBuilder(cfg)
    g = b.gemm(mt, nt, k, a_buf="wgt", a_addr=0, b_buf="act", b_addr=0, c_addr=0, n=2, m=8, dataflow="ws")
    ins = b.instructions[g]
    nsteps = math.ceil(math.ceil(k / 8) / cfg.nm_groups_per_cycle)            # 4
    ws = math.ceil(nsteps / cfg.rows) * math.ceil(mt / cfg.cols) * (
        cfg.rows * cfg.ws_preload_cycles_per_row + nt + cfg.rows + cfg.cols)
    assert instruction_cycles(ins, cfg) == cfg.issue_cycles + ws
    assert ins.n == 2


def test_vector_wuve_sore_cycles(small):
    cfg = small
    b = ProgramBuilder(cfg)
    v = b.vec("relu", 5, 7)
    s = b.vec("softmax", 5, 7)
    p = b.vec("maxpool", 6, 6, window=(2, 2, 2, 2))
    w = b.wuve("sgd", 100, w_buf="vec", w_addr=0, g_buf="vec", g_addr=0, m_buf="vec", m_addr=0,
               hp_buf="vec", hp_addr=0)
    so = b.sore(2, 8, 6, 20, src_buf="vec", src_addr=0, val_buf="wgt", val_addr=0, idx_buf="wgt",
                idx_addr=0)
    nop = b.nop("stce")
    ins = b.instructions
    iss = cfg.issue_cycles
    assert instruction_cycles(ins[v], cfg) == iss + cfg.vector_latency_cycles + math.ceil(35 / cfg.vector_lanes)
    assert instruction_cycles(ins[s], cfg) == iss + cfg.vector_latency_cycles + math.ceil(3 * 35 / cfg.vector_lanes)
    assert instruction_cycles(ins[p], cfg) == iss + cfg.vector_latency_cycles + math.ceil(9 * 4 / cfg.vector_lanes)
    assert instruction_cycles(ins[w], cfg) == iss + cfg.wuve_latency_cycles + math.ceil(100 / cfg.wuve_lanes)
    groups = 6 * math.ceil(20 / 8)
    assert instruction_cycles(ins[so], cfg) == iss + cfg.sore_latency_cycles + \
        math.ceil(groups / cfg.sore_lanes) * 8 * cfg.sore_cycles_per_element
    assert instruction_cycles(ins[nop], cfg) == iss


def test_engines_overlap_without_dependencies(small):
    cfg = small
    b = ProgramBuilder(cfg)
    b.vec("relu", 8, 8)                             # vector
    b.wuve("sgd", 64, w_buf="vec", w_addr=0, g_buf="vec", g_addr=0, m_buf="vec", m_addr=0,
           hp_buf="vec", hp_addr=0)                 # wuve, independent: starts at 0 too
    b.vec("relu", 8, 8, signal="wuve")              # vector again: after the first vec
    b.wuve("sgd", 64, w_buf="vec", w_addr=0, g_buf="vec", g_addr=0, m_buf="vec", m_addr=0,
           hp_buf="vec", hp_addr=0, wait="vector")
    rep = simulate(b.instructions, cfg)
    v = instruction_cycles(b.instructions[0], cfg)
    w = instruction_cycles(b.instructions[1], cfg)
    t = {e.index: (e.start, e.end) for e in rep.timeline}
    assert t[0] == (0, v) and t[1] == (0, w)
    assert t[2] == (v, 2 * v)
    assert t[3] == (max(w, 2 * v), max(w, 2 * v) + w)
    assert rep.total_cycles == max(w, 2 * v) + w
    assert rep.busy_cycles["vector"] == 2 * v and rep.busy_cycles["wuve"] == 2 * w


def test_sparse_faster_than_dense_at_2_8():
    from satc.backends.sat.config import load_hardware
    cfg = load_hardware("sat-vcu1525")
    b = ProgramBuilder(cfg)
    d = b.gemm(256, 256, 1024, a_buf="act", a_addr=0, b_buf="wgt", b_addr=0, c_addr=0, dataflow="os")
    s = b.gemm(256, 256, 1024, a_buf="act", a_addr=0, b_buf="wgt", b_addr=0, c_addr=0, dataflow="os",
               n=2, m=8, sparse_b=True)
    dense, sparse = (instruction_cycles(b.instructions[i], cfg) for i in (d, s))
    passes = (256 // cfg.rows) * (256 // cfg.cols)
    drain = cfg.rows + cfg.cols + cfg.rows * cfg.os_drain_cycles_per_row
    assert dense == cfg.issue_cycles + passes * (1024 // 2 + drain)
    assert sparse == cfg.issue_cycles + passes * (1024 // 8 + drain)
    assert 2.5 < dense / sparse < 4.0               # 4x the K rate, minus fill and drain


def test_interleave_mapping_fills_once_for_independent_passes():
    from satc.backends.sat.config import load_hardware
    cfg = load_hardware("sat-vcu1525")                              # 32 x 32, 2 multipliers
    fill = cfg.rows + cfg.cols                                      # 64
    b = ProgramBuilder(cfg)
    kw = dict(a_buf="act", a_addr=0, b_buf="wgt", b_addr=0, c_addr=0)
    os0 = b.gemm(128, 64, 256, dataflow="os", **kw)
    os1 = b.gemm(128, 64, 256, dataflow="os", interleave=True, **kw)
    ws0 = b.gemm(100, 96, 256, dataflow="ws", **kw)                 # S = nt = 96: 3 column blocks
    ws1 = b.gemm(100, 96, 256, dataflow="ws", interleave=True, **kw)
    one = b.gemm(20, 32, 256, dataflow="ws", interleave=True, **kw)  # one column block, T = 20
    cyc = [gemm_cycles(b.instructions[i], cfg) for i in (os0, os1, ws0, ws1, one)]
    os_body = 256 // 2 + 32                                         # ksteps + rows * drain
    assert cyc[0] == 8 * (os_body + fill)
    assert cyc[1] == 8 * os_body + fill
    ws_body = 32 + 100                                              # preload + T; K = 4 slices, C = 3
    assert cyc[2] == 12 * (ws_body + fill)
    assert cyc[3] == 12 * ws_body + fill                            # 2 passes between dependent ones
    assert cyc[4] == 4 * (32 + 20) + fill + 3 * fill                # each k-slice waits for the drain
    assert b.instructions[ws1].interleave == 1 and b.instructions[ws0].interleave == 0


def test_dense_ws_keeps_either_operand_stationary():
    """Dense WS, interleaved, 64 x 1024 x 64 on sat-vcu1525 (32 x 32, 2 multipliers):
    ksteps = 64 / 2 = 32, one k-slice of 32 rows, fill = 32 + 32.
    B stationary: 1024 / 32 = 32 column blocks, each preloads 32 rows and streams mt = 64.
    A stationary: 64 / 32 = 2 column blocks, each preloads 32 rows and streams nt = 1024."""
    cfg = load_hardware("sat-vcu1525")
    pre = 32 * cfg.ws_preload_cycles_per_row
    bufs = dict(a_buf="wgt", b_buf="act", idx_buf="wgt")
    b_stationary = Instruction("gemm", dataflow="ws", mt=64, nt=1024, k=64, interleave=1, **bufs)
    a_stationary = Instruction("gemm", dataflow="ws", mt=64, nt=1024, k=64, interleave=1,
                               stationary_a=1, **bufs)
    assert gemm_cycles(b_stationary, cfg) == 32 * (pre + 64) + 64
    assert gemm_cycles(a_stationary, cfg) == 2 * (pre + 1024) + 64
    # N:M keeps the compressed operand stationary whatever the bit says
    nm = dict(dataflow="ws", n=2, m=8, mt=64, nt=1024, k=64, interleave=1, **bufs)
    assert gemm_cycles(Instruction("gemm", **nm), cfg) == 2 * (pre + 1024) + 64


def test_builder_refuses_stationary_a_on_an_nm_gemm():
    b = ProgramBuilder(load_hardware("sat-small"))
    with pytest.raises(ISAError, match="stationary_a is for dense GEMMs"):
        b.gemm(32, 32, 32, a_buf="wgt", a_addr=0, b_buf="act", b_addr=0, c_addr=0, n=2, m=8,
               stationary_a=True)
