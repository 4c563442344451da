"""Schedulers, checker, re-emission and inspection on ProgramBuilder programs."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.config import load_hardware
from satc.backends.sat.emulator import run_program
from satc.backends.sat.isa import ENGINES
from satc.backends.sat.timing import time_program
from satc.errors import ScheduleError
from satc.passes.schedule import (build_task_graph, check_schedule, emit_program, format_report,
                                  layer_table, schedule_graph, schedule_program, synthetic_program,
                                  write_gantt, write_trace)


@pytest.fixture(scope="module")
def small():
    return load_hardware("sat-small")


@pytest.fixture(scope="module")
def three(small):
    """Three layers on sat-small (90 tasks) and its three schedules."""
    prog, labels = synthetic_program(small, 3)
    g = build_task_graph(prog, labels)
    return prog, {m: schedule_graph(g, m, time_limit_s=10) for m in ("inorder", "list", "cpsat")}


def test_cpsat_beats_list_beats_inorder_and_is_optimal(three):
    _, r = three
    assert r["cpsat"].makespan <= r["list"].makespan <= r["inorder"].makespan
    assert r["cpsat"].makespan < r["inorder"].makespan
    cp = r["cpsat"]
    assert cp.solver_status == "OPTIMAL" and cp.status == "OPTIMAL"
    assert cp.solver_bound == cp.makespan == cp.lower_bound and cp.ratio == 1.0
    for res in r.values():
        bounds = res.graph.lower_bounds()
        assert res.lower_bound == max([*bounds.values(), res.solver_bound or 0])
        assert res.ratio == res.makespan / res.lower_bound
        assert res.ratio >= 1.0
        assert res.check() <= res.makespan      # the independent checker accepts every schedule


def test_rescheduled_program_same_dram_and_cycles(three):
    prog, r = three
    ref = run_program(prog).dram
    for m, res in r.items():
        new = emit_program(res)
        assert len(new.instructions) == res.graph.n
        assert np.array_equal(run_program(new).dram, ref), m
        cycles = time_program(new)
        if m == "inorder":                      # minimal tokens: never slower than as written
            assert cycles.total_cycles <= res.makespan
        else:                                   # exactly the scheduled timeline
            assert cycles.total_cycles == res.makespan
            order = res.stream_order()
            assert [e.start for e in cycles.timeline] == [int(res.starts[t]) for t in order]


@pytest.mark.parametrize("interleave", [True, False])
def test_deterministic_with_seed_and_one_worker(small, interleave):
    prog, labels = synthetic_program(small, 5, streams=3)
    runs = [schedule_program(prog, "cpsat", labels=labels, time_limit_s=0.5, seed=3, workers=1,
                             interleave=interleave) for _ in range(2)]
    assert np.array_equal(runs[0].starts, runs[1].starts)
    assert emit_program(runs[0]).to_bytes() == emit_program(runs[1]).to_bytes()


def test_tight_buffer_budget_is_kept_by_schedule_and_emitted_program(small):
    prog, labels = synthetic_program(small, 2)
    fp = build_task_graph(prog).footprint
    budget = {"act": int(fp[:, 0].max()), "wgt": int(fp[:, 1].max())}
    ref = run_program(prog).dram
    for m in ("list", "cpsat"):
        res = schedule_program(prog, m, labels=labels, capacity=budget, time_limit_s=2)
        res.check()
        new = emit_program(res)
        assert time_program(new).total_cycles == res.makespan
        assert np.array_equal(run_program(new).dram, ref)
        check_schedule(prog, res.starts_by_index(), budget)
    assert res.extra_edges                      # the left shift needed capacity chains
    free = schedule_program(prog, "list", labels=labels)
    assert free.makespan < res.makespan
    with pytest.raises(ScheduleError, match="over budget"):
        check_schedule(prog, free.starts_by_index(), budget)


def test_windowed_large_program_never_worse_than_list(small):
    prog, labels = synthetic_program(small, 70, streams=3)          # 2100 instructions
    g = build_task_graph(prog, labels)
    t0 = time.perf_counter()
    res = schedule_graph(g, "cpsat", time_limit_s=2, window=300)
    assert time.perf_counter() - t0 < 20
    assert res.windows == 7 and sum(res.window_status.values()) == 7
    assert res.makespan <= res.baselines["list"] and res.makespan <= res.baselines["inorder"]
    assert res.solver_bound is None and res.lower_bound == max(g.lower_bounds().values())
    res.check()
    assert time_program(emit_program(res)).total_cycles == res.makespan


def test_ctrl_c_returns_best_schedule_so_far(small):
    prog, labels = synthetic_program(small, 40, streams=3)
    g = build_task_graph(prog, labels)
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.perf_counter()
    try:
        res = schedule_graph(g, "cpsat", time_limit_s=600, window=200)
    finally:
        timer.cancel()
    assert res.interrupted and time.perf_counter() - t0 < 30
    assert res.makespan <= res.baselines["list"]
    res.check()


def _waw_program(small):
    b = ProgramBuilder(small)
    a = b.alloc("a", (4, 4), init=np.ones((4, 4), np.float32))
    out = b.alloc("out", (4, 4))
    b.load("vec", 64, a.addr, 4, 4)                                          # 0
    b.load("act", 0, a.addr, 4, 4, signal="vector")                          # 1 writes act
    b.vec("copy", 4, 4, s0_buf="vec", s0_addr=64, d_buf="act", d_addr=0,     # 2 WAW on 1
          wait="load", signal="store")
    b.store("act", 0, out.addr, 4, 4, wait="vector")                         # 3
    return b.build()


def test_checker_rejects_broken_schedules(small):
    b = ProgramBuilder(small)
    a = b.alloc("a", (4, 4), init=np.ones((4, 4), np.float32))
    out = b.alloc("out", (4, 4))
    b.load("act", 0, a.addr, 4, 4, signal="vector")                          # 0
    b.vec("copy", 4, 4, s0_buf="act", s0_addr=0, d_buf="vec", d_addr=0,      # 1 RAW on 0
          wait="load", signal="load|store")
    b.load("act", 0, a.addr, 4, 4, wait="vector")                            # 2 WAR on 1
    b.store("vec", 0, out.addr, 4, 4, wait="vector")                         # 3
    prog = b.build()
    good = schedule_program(prog, "list").starts_by_index()
    check_schedule(prog, good)
    end = {i: good[i] + build_task_graph(prog).tasks[i].duration for i in good}
    cases = [({1: good[0]}, "RAW hazard .*instruction 1 .*instruction 0"),
             ({2: end[0]}, "WAR hazard .*instruction 2 .*instruction 1"),
             ({1: good[1] - 1}, "RAW"),
             ({3: good[0], 2: good[0]}, "engine load runs two instructions"),
             ({0: -1}, "negative"),
             ({5: 0}, "does not cover")]
    for change, msg in cases:
        with pytest.raises(ScheduleError, match=msg):
            check_schedule(prog, {**good, **change})
    with pytest.raises(ScheduleError, match="does not cover"):
        check_schedule(prog, {i: s for i, s in good.items() if i != 3})
    with pytest.raises(ScheduleError, match="vec buffer over budget"):
        check_schedule(prog, good, {"vec": 32})
    waw = _waw_program(small)
    ok = schedule_program(waw, "list").starts_by_index()
    check_schedule(waw, ok)
    # instruction 2 may start once the data of load 0 is ready (its end + the latency), but
    # that is before the data of load 1, whose bytes it overwrites, lands
    dur = {t.index: t.duration for t in build_task_graph(waw).tasks}
    ready0 = ok[0] + dur[0] + small.dram_latency_cycles
    assert ready0 < ok[1] + dur[1] + small.dram_latency_cycles
    with pytest.raises(ScheduleError, match="WAW hazard .*instruction 2 .*instruction 1"):
        check_schedule(waw, {**ok, 2: ready0})


def test_report_trace_and_gantt(three, tmp_path):
    _, r = three
    res = r["cpsat"]
    text = format_report(res)
    for part in ("makespan", "status OPTIMAL", "lower bounds", "critical path", "stce", "L2"):
        assert part in text
    rows = layer_table(res)
    assert [row.group for row in rows] == ["L0", "L1", "L2"]
    assert sum(row.tasks for row in rows) == res.graph.n
    assert all(row.ratio >= 1.0 for row in rows)
    stages = {row.group for row in layer_table(res, depth=2)}
    assert {"L0/ff", "L0/wu"} <= stages
    write_trace(res, tmp_path / "t.json")
    trace = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    tracks = {e["args"]["name"] for e in trace if e["name"] == "thread_name"}
    assert tracks == set(ENGINES)
    spans = [e for e in trace if e["ph"] == "X"]
    assert len(spans) == res.graph.n and {e["tid"] for e in spans} <= set(range(len(ENGINES)))
    assert any(e["name"] == "L1/wu/sgd" for e in spans)
    write_gantt(res, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_and_nop_only_programs(small):
    b = ProgramBuilder(small)
    b.nop("stce")
    for prog in (ProgramBuilder(small).build(), b.build()):
        for m in ("inorder", "list", "cpsat"):
            res = schedule_program(prog, m)
            assert res.graph.n == 0 and res.check() == 0
            assert emit_program(res).instructions == ()
        assert "0 tasks" in format_report(res)


def test_bad_arguments(small):
    prog, _ = synthetic_program(small, 1)
    with pytest.raises(ScheduleError, match="unknown scheduling method"):
        schedule_program(prog, "greedy")
    with pytest.raises(ScheduleError, match="window"):
        schedule_program(prog, "cpsat", window=0)


def test_vcu1525_preset_with_progress(capsys):
    cfg = load_hardware("sat-vcu1525")
    prog, labels = synthetic_program(cfg, 2, tile=32)
    res = schedule_program(prog, "cpsat", labels=labels, time_limit_s=1, progress=True)
    res.check()
    assert res.makespan <= res.baselines["list"]
    assert np.array_equal(run_program(emit_program(res)).dram, run_program(prog).dram)
