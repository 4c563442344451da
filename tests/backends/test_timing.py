"""Cycle model: counts equal hand arithmetic from config fields; engines overlap unless ordered."""

from __future__ import annotations

import dataclasses
import math

import pytest

from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.config import load_hardware
from satc.backends.sat.isa import Instruction
from satc.errors import ISAError
from satc.backends.sat.cost_model import gemm_cycles, instruction_cycles
from satc.backends.sat.timing import simulate, time_program


def _dma_cycles(cfg, nbytes):
    """Engine cycles of a DMA of ``nbytes`` in one contiguous run that is a whole number of
    bursts: the latency is not engine time."""
    assert nbytes % cfg.dram_burst_bytes == 0
    return cfg.issue_cycles + math.ceil(nbytes / cfg.dram_bytes_per_cycle)


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
    lat = cfg.dram_latency_cycles
    # the second load streams right after the first (no latency between them); the gemm
    # waits for the loaded data: the latency after the second load's transfer
    g0 = load_a + load_b + lat
    assert [(t.start, t.end) for t in rep.timeline] == [
        (0, load_a), (load_a, load_a + load_b), (g0, g0 + gemm), (g0 + gemm, g0 + gemm + store)]
    assert rep.total_cycles == g0 + gemm + store
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


def test_load_and_store_share_the_dram_channel(small):
    """An independent load and store: with the shared channel (sat-small's default) the
    store's transfer waits for the load's; with a channel per engine both start at 0."""
    b = ProgramBuilder(small)
    b.load("act", 0, 0, 8, 16)                        # 512 bytes
    b.store("vec", 0, 4096, 4, 16)                    # 256 bytes
    load = small.issue_cycles + 512 // 16             # 16 B/cycle: 3.2 GB/s x 0.5 / 100 MHz
    store = small.issue_cycles + 256 // 16
    rep = simulate(b.instructions, small)
    assert [(t.start, t.end) for t in rep.timeline] == [(0, load), (load, load + store)]
    own = dataclasses.replace(small, dram_shared=False)
    rep = simulate(b.instructions, own)
    assert [(t.start, t.end) for t in rep.timeline] == [(0, load), (0, store)]


def test_a_dma_moves_whole_bursts_per_contiguous_run(small):
    """sat-small: 16-byte bursts at 16 B/cycle. 3 rows of 10 fp32 (40 bytes) out of a DRAM row
    of 16 elements: three runs of 40 -> 48 bytes = 144 bytes, 9 cycles (the payload, 120
    bytes, would take 8). Packed rows (row stride = cols) are one 120-byte run: 128 bytes."""
    from satc.backends.sat.cost_model import dma_burst_bytes, dma_runs, dram_moved_bytes
    b = ProgramBuilder(small)
    strided = b.instructions[b.load("act", 0, 0, 3, 10, dram_row_stride=16)]
    packed = b.instructions[b.load("act", 0, 0, 3, 10)]
    planes = b.instructions[b.load("act", 0, 0, 3, 10, planes=2, dram_plane_stride=30)]
    assert dma_runs(strided) == (40, 3) and dma_burst_bytes(strided, small) == 3 * 48
    assert instruction_cycles(strided, small) == small.issue_cycles + 144 // 16
    assert dma_runs(packed) == (120, 1) and instruction_cycles(packed, small) == small.issue_cycles + 8
    assert dma_runs(planes) == (240, 1) and dma_burst_bytes(planes, small) == 240
    # the planning form: 120 bytes in runs of 40
    assert dram_moved_bytes(120, 40, small) == 144 and dram_moved_bytes(100, 40, small) == 48 + 48 + 32
    # sat-vcu1525: 64-byte bursts; a 40-byte row costs a whole burst
    vcu = load_hardware("sat-vcu1525")
    assert dma_burst_bytes(strided, vcu) == 3 * 64


def test_latency_delays_dependants_not_the_engine(small):
    """load -> gemm waits dram_latency_cycles after the load's transfer; two back-to-back
    loads stream without paying it; the token from a store to a load carries it too."""
    lat = small.dram_latency_cycles
    b = ProgramBuilder(small)
    b.load("act", 0, 0, 4, 16)                                     # 256 B: 1 + 16 cycles
    b.load("wgt", 0, 1024, 16, 4, signal="stce")                   # 256 B: 1 + 16 cycles
    b.gemm(4, 4, 16, a_buf="act", a_addr=0, b_buf="wgt", b_addr=0, c_addr=0, wait="load",
           dataflow="os")
    rep = simulate(b.instructions, small)
    t = {e.index: (e.start, e.end) for e in rep.timeline}
    assert t[0] == (0, 17) and t[1] == (17, 34)
    assert t[2][0] == 34 + lat
    b = ProgramBuilder(small)
    b.store("acc", 0, 0, 4, 4, signal="load")                      # 64 B: 1 + 4 cycles
    b.load("act", 0, 0, 4, 4, wait="store")                         # reads what the store wrote
    rep = simulate(b.instructions, small)
    t = {e.index: (e.start, e.end) for e in rep.timeline}
    assert t[0] == (0, 5) and t[1] == (5 + lat, 5 + lat + 5)


def test_outstanding_requests_cap_the_stream_rate(small):
    """Little's law: 4 bursts of 16 B in flight over a 10-cycle latency stream 6.4 B/cycle, less
    than the 16 B/cycle of the bandwidth: 512 bytes take ceil(512 / 6.4) = 80 cycles."""
    few = dataclasses.replace(small, dram_outstanding_requests=4)
    assert few.dram_stream_bytes_per_cycle == 4 * 16 / 10
    b = ProgramBuilder(few)
    ins = b.instructions[b.load("act", 0, 0, 8, 16)]
    assert instruction_cycles(ins, few) == few.issue_cycles + 80
    assert instruction_cycles(ins, small) == small.issue_cycles + 512 // 16


def test_gemm_is_bound_by_its_operand_feed():
    """sat-vcu1525, OS, interleaved, 256 x 256 x 1024, dense A fp32 in act streamed once per
    column block of B (256 / 32 = 8 times): 256 * 1024 * 4 * 8 = 8 MiB over the 1024 B/cycle
    act port = 8192 cycles. 2:8 (B compressed): array 64 passes x (1024 / 8 + 32) + 64 =
    10304 > 8192: not port-bound. 2:16: 64 x (1024 / 16 + 32) + 64 = 6208 < 8192: port-bound."""
    from satc.backends.sat.cost_model import gemm_array_cycles, gemm_feed_bytes
    cfg = load_hardware("sat-vcu1525")
    kw = dict(dataflow="os", mt=256, nt=256, k=1024, interleave=1, sparse_b=1, a_buf="act",
              b_buf="wgt", b_dtype="fp16", idx_buf="wgt")
    s28 = Instruction("gemm", n=2, m=8, **kw)
    s216 = Instruction("gemm", n=2, m=16, **kw)
    feed = 256 * 1024 * 4 * 8 // cfg.act_read_bytes_per_cycle
    assert gemm_feed_bytes(s216, cfg)["act"] == 256 * 1024 * 4 * 8
    assert gemm_array_cycles(s28, cfg) == 64 * (128 + 32) + 64 == gemm_cycles(s28, cfg)
    assert gemm_array_cycles(s216, cfg) == 64 * (64 + 32) + 64 < feed
    assert gemm_cycles(s216, cfg) == feed
    # a wider port lifts the bound
    wide = dataclasses.replace(cfg, act_read_bytes_per_cycle=2048)
    assert gemm_cycles(s216, wide) == 64 * (64 + 32) + 64
