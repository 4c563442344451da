"""Units of the SAT code generator: tiling cost model, token insertion, storages, arena."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import satc
from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.config import load_hardware
from satc.backends.sat.codegen.memory import Arena, Compressed, Dense, OneHot, TapMajor
from satc.backends.sat.codegen.partition import buffer_windows, main_buffer_bytes
from satc.backends.sat.codegen.tokens import WINDOW, happens_before, insert_tokens, unordered_hazards
from satc.backends.sat.dispatch import issue_order
from satc.backends.sat.emulator import run_program
from satc.backends.sat.program import Program
from satc.errors import CompileError, ISAError
from satc.backends.sat.isa import ENGINES, Instruction
from satc.ir.graph import Node
from satc.ir.nm import nm_mask
from satc.ir.types import Stage
from satc.models.small import MLP
from satc.backends.sat.codegen import tiling
from satc.backends.sat.codegen.tiling import GemmProblem, choose_tile, estimate_cycles, gemm_work, nm_k_quantum


def _node() -> Node:
    return Node("matmul", (), (), {}, Stage.FF, "fc", "fc.matmul")


def test_nm_k_quantum_keeps_index_rows_byte_aligned():
    assert nm_k_quantum(2, 8) == 32         # 4 groups x 2 x 3 bits = 24 bits
    assert nm_k_quantum(2, 4) == 8          # 2 groups x 2 x 2 bits = 8 bits
    assert nm_k_quantum(1, 2) == 16


def test_choose_tile_fits_buffers_and_respects_quanta(small):
    p = GemmProblem(256, 512, 300, sparse="b", nm=(2, 8), k_quantum=32)
    t = choose_tile(_node(), p, small)
    use = p.buffer_use(t.mt, t.nt, t.kt, t.slots)
    assert all(use[b] <= small.buffer_bytes[b] for b in use)
    assert t.kt == 300 or t.kt % 32 == 0
    assert t.dataflow in small.dataflows
    assert t.cycles == estimate_cycles(p, t.mt, t.nt, t.kt, t.dataflow, t.slots, small)


def test_choose_tile_prefers_whole_operands_when_they_fit(small):
    t = choose_tile(_node(), GemmProblem(8, 16, 32), small)
    assert (t.mt, t.nt, t.kt) == (8, 16, 32)


def test_choose_tile_compile_error_names_layer_and_fix(small):
    # one image of 20000 columns: even a 1-row C tile needs 80000 bytes of acc, which GEMM
    # tiles get 7/8 of (the rest is the weight-update slice): the smallest 64-byte multiple
    # whose 7/8 (rounded to 64 bytes) holds it is 91392
    with pytest.raises(CompileError) as e:
        choose_tile(_node(), GemmProblem(64, 20000, 64, n_quantum=20000), small)
    assert "layer 'fc'" in str(e.value) and "acc_buffer_bytes to at least 91392" in str(e.value)
    bigger = dataclasses.replace(small, acc_buffer_bytes=91392, vec_buffer_bytes=91392)
    assert main_buffer_bytes(bigger)["acc"] >= 80000
    choose_tile(_node(), GemmProblem(64, 1000, 64, n_quantum=1000), small)   # a smaller one fits


def _three_engine_program(cfg):
    b = ProgramBuilder(cfg)
    x = b.alloc("x", (4, 8), init=np.arange(32, dtype=np.float32).reshape(4, 8))
    w = b.alloc("w", (8, 4), init=np.ones((8, 4), np.float32))
    y = b.alloc("y", (4, 4))
    b.load_region(x, "act", 0)
    b.load_region(w, "wgt", 0)
    b.gemm(4, 4, 8, a_buf="act", a_addr=0, b_buf="wgt", b_addr=0, c_addr=0)
    b.vec("relu", 4, 4, s0_buf="acc", s0_addr=0, d_addr=0)
    b.store_region(y, "vec", 0)
    b.load_region(w, "act", 0)            # WAR: must wait for the gemm's read of act
    return b.build()


def test_insert_tokens_orders_raw_and_war(small):
    raw = _three_engine_program(small)
    sizes = {"dram": raw.dram_size, **small.buffer_bytes}
    instrs = insert_tokens(raw.instructions, sizes)
    assert [i.wait for i in instrs] == [(), (), ("load",), ("stce",), ("vector",), ("stce",)]
    assert instrs[1].signal == ("stce",) and instrs[2].signal == ("load", "vector")
    assert unordered_hazards(instrs, sizes) == []
    assert unordered_hazards(raw.instructions, sizes)             # without tokens: unordered
    prog = Program(small, tuple(instrs), raw.regions, raw.dram_size)
    out = run_program(prog).read("y")
    assert np.array_equal(out, np.maximum(np.arange(32, dtype=np.float32).reshape(4, 8).sum(1), 0)
                          [:, None].repeat(4, 1))
    assert len(issue_order(instrs)) == len(instrs)
    assert happens_before(instrs)[-1][2] == 2       # the last load follows the gemm


@pytest.mark.parametrize("tail", [WINDOW - 1, WINDOW + 5, 3 * WINDOW])
def test_insert_tokens_finds_a_hazard_behind_a_long_tail(small, tail):
    """A load that overwrites what the first of ``tail`` + 1 unordered vector instructions read
    waits on exactly that one, whether the scan reaches it (a short tail) or the granule
    tables answer (a tail longer than WINDOW); a load beside them all waits on none."""
    b = ProgramBuilder(small)
    y = b.alloc("y", (1, 8))
    b.vec("relu", 1, 8, s0_addr=0, d_addr=4096)                 # reads vec[0:32)
    for k in range(tail):                                        # disjoint granules
        b.vec("relu", 1, 8, s0_addr=8192 + 64 * k, d_addr=8192 + 64 * k + 32)
    b.load_region(y, "vec", 0)                                   # WAR on vec[0:32)
    b.load_region(y, "vec", 2048)                                # no conflict
    raw = b.build()
    sizes = {"dram": raw.dram_size, **small.buffer_bytes}
    instrs = insert_tokens(raw.instructions, sizes)
    assert instrs[0].signal == ("load",) and all(not i.signal for i in instrs[1:tail + 1])
    assert instrs[tail + 1].wait == ("vector",) and instrs[tail + 2].wait == ()
    assert unordered_hazards(instrs, sizes) == []


def test_hazard_tracker_coarse_tables_refine_to_the_granule():
    """A query over a coarse entry that holds a record elsewhere finds nothing (refined to the
    granule); one overlapping granule finds the writer; ``after`` drops what is ordered."""
    from satc.backends.sat.access import Access
    from satc.backends.sat.codegen.tokens import COARSE, GRANULE, HazardTracker
    from satc.backends.sat.isa import ENGINES
    load, vector, stce = (ENGINES.index(e) for e in ("load", "vector", "stce"))
    t = HazardTracker({"act": 4 * COARSE * GRANULE})
    f32 = np.dtype("<f4")

    def acc(lo: int, n: int, write: bool) -> list[Access]:
        return [Access("x", "act", lo, (n,), (4,), f32, write)]

    none = [-1] * 6
    t.record(0, load, t.spans(acc(0, GRANULE // 4, True)))            # granule 0
    t.record(1, vector, t.spans(acc(3 * GRANULE, GRANULE // 4, False)))  # granule 3, a read
    assert t.deps(t.spans(acc(GRANULE, GRANULE // 4, False)), none) == []   # same coarse entry
    assert t.deps(t.spans(acc(0, 2 * GRANULE // 4, False)), none) == [0]     # RAW
    assert t.deps(t.spans(acc(0, 4 * GRANULE // 4, True)), none) == [0, 1]   # WAW and WAR
    assert t.deps(t.spans(acc(0, 4 * GRANULE // 4, True)), [0] + [-1] * 5) == [1]
    span = t.spans(acc(COARSE * GRANULE - 4, 2, True))                    # across two entries
    assert span == [("act", COARSE - 1, COARSE + 1, True)]
    t.record(2, stce, span)
    assert t.deps(t.spans(acc(COARSE * GRANULE, 1, False)), none) == [2]


def test_with_tokens_checks_its_masks():
    ins = Instruction("load", buf="act", dram_addr=0, buf_addr=0, rows=1, cols=8, dram_row_stride=8,
                      buf_row_stride=8)
    tok = ins.with_tokens(0b100, 0b10)
    assert tok.wait == (ENGINES[2],) and tok.signal == (ENGINES[1],) and tok.cols == 8
    with pytest.raises(ISAError, match="cannot wait on its own queue"):
        ins.with_tokens(1 << ENGINES.index("load"), 0)
    with pytest.raises(ISAError, match="mask 64"):
        ins.with_tokens(0, 64)


def test_storages_round_trip(small):
    b = ProgramBuilder(small)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    d = Dense(b.alloc("x", (2, 3, 7, 7)), (2, 3, 4, 5), (1, 1, 2, 1))
    (region, img), = d.encode(x)
    assert img.shape == (2, 3, 7, 7) and img[:, :, 0].sum() == 0
    assert np.array_equal(d.decode(lambda n: img), x)
    assert d.addr_of(1, 2, 1, 1) == region.addr + ((1 * 3 + 2) * 7 * 7 + 7 + 1) * 4
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    t = TapMajor(b.alloc("w", (9, 16, 8)), (16, 8, 3, 3))
    (_, timg), = t.encode(w)
    assert np.array_equal(timg[4], w[:, :, 1, 1])
    assert np.array_equal(t.decode(lambda n: timg), w)
    for axis in (1, 0):
        probe = Compressed(None, None, w.shape, 2, 8, axis)
        c = Compressed(b.alloc(f"v{axis}", (9 * probe.outer, probe.val_cols)),
                       b.alloc(f"i{axis}", (9 * probe.outer, probe.idx_cols), "u8"), w.shape, 2, 8, axis)
        imgs = {r.name: a for r, a in c.encode(w)}
        assert np.array_equal(c.decode(imgs.__getitem__), np.where(nm_mask(w, 2, 8, axis), w, 0))
    oh = OneHot(b.alloc("y", (3, 4)), 4)
    (_, yimg), = oh.encode(np.array([3, 0, 2]))
    assert np.array_equal(oh.decode(lambda n: yimg), [3, 0, 2])
    with pytest.raises(CompileError, match="labels"):
        oh.encode(np.array([4, 0, 0]))


def test_arena_streams_within_half_of_its_window(small):
    a = Arena(small, "layer 'a'", False)
    half = small.vec_buffer_bytes * 7 // 16
    assert a.free_bytes("vec") == half
    a.alloc("vec", half - 64, "t")
    assert a.free_bytes("vec") == 64
    a.alloc("vec", 128, "u")                  # past its half: streams into whatever is left
    assert a.free_bytes("vec") == small.vec_buffer_bytes * 7 // 8 - half - 64


def test_arena_alternates_ends_and_reports_overflow(small):
    lo, hi = Arena(small, "layer 'a'", False), Arena(small, "layer 'b'", True)
    assert lo.alloc("act", 100, "t") == 0 and lo.alloc("act", 10, "u") == 128
    top = buffer_windows(small, update=False)["act"][1]          # below the weight-update slice
    assert top == small.act_buffer_bytes * 7 // 8
    assert hi.alloc("act", 64, "t") == top - 64
    upd = Arena(small, "layer 'c'", True, update=True)              # the slice is its own
    assert upd.alloc("act", 64, "t") == small.act_buffer_bytes - 64
    with pytest.raises(CompileError, match=r"layer 'c'.*fix: raise act_buffer_bytes"):
        upd.alloc("act", small.act_buffer_bytes // 8, "big tile")
    with pytest.raises(CompileError, match=r"layer 'a'.*fix: raise act_buffer_bytes"):
        lo.alloc("act", small.act_buffer_bytes, "big tile")


def test_choose_tile_charges_dma_that_compute_would_hide(monkeypatch):
    # a ResNet-18 WU GEMM (dW[128, 128] over 32 images of 16x16, 9 taps) on sat-vcu1525
    cfg = load_hardware("sat-vcu1525")
    p = GemmProblem(128, 128, 32 * 256, taps=9, taps_in_k=False, k_quantum=256,
                    a_buf="act", b_buf="wgt")
    chosen = choose_tile(_node(), p, cfg)
    monkeypatch.setattr(tiling, "DMA_WEIGHT", 0.0)
    fastest_alone = choose_tile(_node(), p, cfg)
    dma = lambda t: gemm_work(p, t.mt, t.nt, t.kt, t.dataflow, cfg)[1]   # noqa: E731
    assert fastest_alone.cycles == 612936 < chosen.cycles == 631368   # 3% more alone ...
    assert dma(chosen) < 0.7 * dma(fastest_alone)                      # ... for 32% less DMA
    assert chosen.cycles + 0.25 * dma(chosen) <= fastest_alone.cycles + 0.25 * dma(fastest_alone)


def test_layers_of_one_gemm_shape_share_one_tile_search(monkeypatch):
    """Two identical hidden Linear layers (and their BP / WU GEMMs) are searched once per
    distinct GemmProblem; every node still gets the tile a search of its own would choose."""
    prog = satc.compile(MLP(64, (32, 32, 32), 10), example_inputs=(torch.randn(8, 64),),
                        hw="sat-small")
    searched = []
    real = tiling.choose_tile
    monkeypatch.setattr(tiling, "choose_tile",
                        lambda node, p, cfg, il=True: searched.append(p) or real(node, p, cfg, il))
    plan = tiling.plan_tiles(prog.graph, prog.config)
    problems = [t.problem for t in plan.values()]
    assert len(searched) == len(set(problems)) < len(problems)
    for name, t in plan.items():
        node = next(n for n in prog.graph.nodes if n.name == name)
        assert t.tile == real(node, t.problem, prog.config)
