"""The DRAM model in the schedulers: one shared channel, latency as an edge lag, hand-computed.

sat-small: 3.2 GB/s x 0.5 / 100 MHz = 16 B/cycle, 16-byte bursts, ``dram_latency_cycles`` 10,
``issue_cycles`` 1. The program: load A (4 x 16 fp32, 256 B: 1 + 16 = 17 cycles), load B
(16 x 4, 17 cycles), an OS gemm 4 x 4 x 16 (8 k-steps + 4 drain rows + 8 fill + 1 issue =
21 cycles), store C (4 x 4, 64 B: 1 + 4 = 5 cycles) and an independent store D (16 x 16,
1024 B: 1 + 64 = 65 cycles) that competes with the loads for the channel.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.config import load_hardware
from satc.backends.sat.timing import simulate, time_program
from satc.errors import ScheduleError
from satc.passes.schedule import (build_task_graph, check_schedule, emit_program, schedule_program,
                                  synthetic_program)

_S = load_hardware("sat-small")
assert _S.dram_bytes_per_cycle == 16 and 256 % _S.dram_burst_bytes == 0 and 64 % _S.dram_burst_bytes == 0
LOAD = _S.issue_cycles + 256 // 16                                               # 17
GEMM = _S.issue_cycles + 1 * (16 // _S.multipliers_per_pe + _S.rows * _S.os_drain_cycles_per_row
                              + _S.rows + _S.cols)                               # 21: one OS pass
STORE_C = _S.issue_cycles + 64 // 16                                             # 5
STORE_D = _S.issue_cycles + 1024 // 16                                           # 65
assert (LOAD, GEMM, STORE_C, STORE_D) == (17, 21, 5, 65)


def _program(cfg):
    b = ProgramBuilder(cfg)
    ra = b.alloc("a", (4, 16), init=np.ones((4, 16), np.float32))
    rb = b.alloc("b", (16, 4), init=np.ones((16, 4), np.float32))
    rc, rd = b.alloc("c", (4, 4)), b.alloc("d", (16, 16))
    b.load_region(ra, "act", 0)                                                  # 0
    b.load_region(rb, "wgt", 0, signal="stce")                                   # 1
    b.gemm(4, 4, 16, a_buf="act", a_addr=0, b_buf="wgt", b_addr=0, c_addr=0,     # 2
           dataflow="os", wait="load", signal="store")
    b.store_region(rc, "acc", 0, wait="stce")                                    # 3
    b.store_region(rd, "vec", 0)                                                 # 4
    return b.build()


@pytest.fixture(scope="module")
def small():
    return load_hardware("sat-small")


def test_hand_durations(small):
    g = build_task_graph(_program(small))
    assert [t.duration for t in g.tasks] == [LOAD, LOAD, GEMM, STORE_C, STORE_D]
    lat = small.dram_latency_cycles
    # a load's path: its transfer, the latency, the gemm, the store of C (53); store D alone: 65
    assert list(g.bottom_levels()) == [LOAD + lat + GEMM + STORE_C] * 2 + [GEMM + STORE_C, STORE_C,
                                                                            STORE_D]
    assert g.critical_path_bound() == STORE_D
    assert g.work_bound() == 2 * LOAD + STORE_C + STORE_D                # the shared channel: 104


def test_shared_channel_serialises_load_and_store_and_cpsat_fills_it(small):
    """Optimal: the loads [0, 34), store D [34, 99) while the gemm waits for the data
    (34 + 10) and runs [44, 65), store C [99, 104): the channel never idles, 104 cycles.
    The list scheduler starts store D first (bottom level 65 > the loads' 17 + 10 + 21 + 5 =
    53): loads [65, 99), gemm [109, 130), store C [130, 135)."""
    prog = _program(small)
    lat = small.dram_latency_cycles
    for method, want in (("list", 135), ("cpsat", 104)):
        res = schedule_program(prog, method, time_limit_s=5)
        assert res.check() == res.makespan == want
        s = res.starts_by_index()
        if method == "cpsat":
            assert s == {0: 0, 1: LOAD, 4: 2 * LOAD, 2: 2 * LOAD + lat, 3: 2 * LOAD + STORE_D}
            assert res.status == "OPTIMAL"
        else:
            assert s == {4: 0, 0: STORE_D, 1: STORE_D + LOAD, 2: STORE_D + 2 * LOAD + lat,
                         3: STORE_D + 2 * LOAD + lat + GEMM}
        emitted = emit_program(res)
        assert time_program(emitted).total_cycles == res.makespan      # simulate reproduces it
    # the program as written: store D queues behind store C on the store engine
    assert time_program(prog).total_cycles == 2 * LOAD + lat + GEMM + STORE_C + STORE_D


def test_a_channel_per_engine_overlaps_them(small):
    """dram_shared = false: store D runs [0, 65) beside the loads; store C waits for the store
    engine and the gemm, both free at 65: 70 cycles."""
    own = dataclasses.replace(small, dram_shared=False)
    prog = _program(own)
    res = schedule_program(prog, "list")
    assert res.check() == res.makespan == 70
    assert res.graph.work_bound() == STORE_C + STORE_D   # no channel: the store engine's work
    assert time_program(emit_program(res)).total_cycles == 70


def test_checker_refuses_channel_overlap_and_early_dependants(small):
    prog = _program(small)
    good = schedule_program(prog, "cpsat", time_limit_s=5).starts_by_index()
    check_schedule(prog, good)
    with pytest.raises(ScheduleError, match="shared DRAM channel runs two instructions at once"):
        check_schedule(prog, {**good, 4: 0})
    # the gemm right at the end of load 1's transfer: its data is not ready yet
    with pytest.raises(ScheduleError, match=r"RAW hazard .*instruction 2 .*instruction 1 .*ready\) at 44"):
        check_schedule(prog, {**good, 2: 2 * LOAD})
    check_schedule(prog, {**good, 2: 2 * LOAD + small.dram_latency_cycles})


def test_loads_back_to_back_stream_without_the_latency(small):
    """Two loads on one engine: the second starts when the first's transfer ends."""
    res = schedule_program(_program(small), "cpsat", time_limit_s=5)
    s = res.starts_by_index()
    assert s[1] == s[0] + LOAD


@pytest.mark.parametrize("hw", ["sat-small", "sat-vcu1525"])
@pytest.mark.parametrize("method", ["list", "cpsat"])
def test_schedules_of_a_synthetic_step_check_and_replay(hw, method):
    cfg = load_hardware(hw)
    prog, labels = synthetic_program(cfg, 4, streams=2)
    res = schedule_program(prog, method, labels=labels, time_limit_s=3)
    assert res.check() == res.makespan
    assert res.makespan >= max(res.lower_bounds.values())
    rep = simulate(emit_program(res).instructions, cfg)
    assert rep.total_cycles == res.makespan


@pytest.mark.parametrize("method", ["list", "cpsat"])
def test_compiled_step_on_the_default_hardware_checks_and_replays(method):
    """A compiled BDWP step on sat-vcu1525 (64-cycle latency, 64-byte bursts, shared channel):
    the schedule passes the checker and the re-emitted program runs in its makespan."""
    import torch

    import satc
    from satc.models import get_model
    prog = satc.compile(get_model("cnn"), example_inputs=(torch.randn(8, 1, 8, 8),),
                        sparsity="bdwp:2:8", hw="sat-vcu1525")
    res = schedule_program(prog.program, method, labels=prog.labels, time_limit_s=2, window=300)
    assert res.check() == res.makespan <= res.baselines["inorder"]
    assert res.makespan >= max(res.lower_bounds.values())
    assert time_program(emit_program(res)).total_cycles == res.makespan


def test_report_shows_the_channel_and_the_critical_path_through_it(small):
    """The optimal schedule keeps the channel busy 104 of 104 cycles; its critical path: load A,
    load B after it on the load engine, store D after load B on the channel, store C after
    store D on the store engine."""
    from satc.passes.schedule import critical_path, format_report
    res = schedule_program(_program(small), "cpsat", time_limit_s=5)
    assert "dram              104  100.0%" in format_report(res)
    path = critical_path(res)
    assert [(res.graph.tasks[p.task].index, p.via) for p in path] == [
        (0, "start"), (1, "engine"), (4, "channel"), (3, "engine")]
