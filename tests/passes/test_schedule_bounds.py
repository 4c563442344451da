"""The cut-chain lower bound and forward-backward improvement."""

from __future__ import annotations

import numpy as np
import pytest

from satc.backends.sat.config import load_hardware
from satc.backends.sat.isa import BUFFERS, ENGINES
from satc.passes.schedule import Task, TaskGraph, build_task_graph, schedule_graph, synthetic_program
from satc.passes.schedule.bounds import cut_chain_bound, heads
from satc.passes.schedule.improve import forward_backward, reversed_graph
from satc.passes.schedule.listsched import capacity_ok, compact, list_schedule


def _graph(spec: list[tuple[str, int]], edges: list[tuple[int, int]]) -> TaskGraph:
    """A task graph from (engine, duration) per task and (u, v) edges, u < v, no buffers."""
    n = len(spec)
    tasks = [Task(i, i, e, "x", d, f"t{i}") for i, (e, d) in enumerate(spec)]
    preds = [tuple(sorted(u for u, v in edges if v == t)) for t in range(n)]
    succs = [tuple(sorted(v for u, v in edges if u == t)) for t in range(n)]
    return TaskGraph(None, tasks, preds, succs, np.zeros((n, len(BUFFERS)), np.int64),
                     {b: 1 for b in BUFFERS}, np.zeros(n, np.int64), 0)


def test_cut_chain_counts_the_idle_a_reduction_forces():
    # two independent GEMMs -> a vector reduction over both -> two GEMMs -> a 3-cycle store
    g = _graph([("stce", 10), ("stce", 10), ("vector", 5), ("stce", 10), ("stce", 10), ("store", 3)],
               [(0, 2), (1, 2), (2, 3), (2, 4), (3, 5)])
    assert g.work_bound() == 40 and g.critical_path_bound() == 28
    assert cut_chain_bound(g, ENGINES.index("stce")) == 10 + 10 + 5 + 10 + 10   # t4 can run last
    assert g.lower_bounds()["cut_chain"] == 45
    starts = list_schedule(g)
    assert int((starts + g.durations).max()) == 45                              # and it is tight
    assert list(heads(g)) == [0, 0, 10, 15, 15, 25]


def test_cut_chain_without_cuts_is_heads_work_tails():
    g = _graph([("load", 7), ("stce", 10), ("stce", 10), ("store", 4)], [(0, 1), (0, 2), (2, 3)])
    assert cut_chain_bound(g, ENGINES.index("stce")) == 7 + 20 + 0


@pytest.mark.parametrize("layers,streams", [(2, 1), (3, 2), (4, 3)])
def test_bounds_never_exceed_a_proven_optimum(layers, streams):
    cfg = load_hardware("sat-small")
    prog, labels = synthetic_program(cfg, layers, streams=streams)
    g = build_task_graph(prog, labels)
    res = schedule_graph(g, "cpsat", time_limit_s=20)
    assert res.solver_status == "OPTIMAL"
    assert max(g.lower_bounds().values()) <= res.makespan
    assert g.lower_bounds()["cut_chain"] >= g.work_bound()


def test_reversed_graph_flips_every_edge_and_twice_is_the_original():
    cfg = load_hardware("sat-small")
    g = build_task_graph(*synthetic_program(cfg, 3, streams=2))
    r = reversed_graph(g)
    n = g.n
    assert sorted(r.edges()) == sorted((n - 1 - v, n - 1 - u) for u, v in g.edges())
    rr = reversed_graph(r)
    assert rr.preds == g.preds and rr.succs == g.succs
    assert np.array_equal(rr.footprint, g.footprint) and np.array_equal(rr.durations, g.durations)


def test_forward_backward_is_feasible_and_never_worse():
    cfg = load_hardware("sat-small")
    prog, labels = synthetic_program(cfg, 12, streams=3)
    g = build_task_graph(prog, labels)
    start, extra = compact(g, list_schedule(g))
    better, better_extra = forward_backward(g, start, extra, rounds=2)
    d = g.durations
    assert (better + d).max() <= (start + d).max()
    assert capacity_ok(g, better).all()
    for u, v in better_extra:                               # capacity chains it relies on hold
        assert better[u] + d[u] <= better[v]
    for v in range(g.n):                                    # every dependency kept
        for u in g.preds[v]:
            assert better[u] + d[u] <= better[v]
    eng = g.engine_ids
    for e in range(len(ENGINES)):                           # one task at a time per engine
        idx = np.flatnonzero(eng == e)
        idx = idx[np.argsort(better[idx])]
        assert (better[idx][1:] >= better[idx][:-1] + d[idx][:-1]).all()


def test_cut_chain_counts_other_engines_work_that_must_wait_for_or_precede_every_gemm():
    # two loads feed both GEMMs; two stores need both GEMMs: each pair runs one at a time
    g = _graph([("load", 5), ("load", 5), ("stce", 10), ("stce", 10), ("store", 5), ("store", 5)],
               [(0, 2), (0, 3), (1, 2), (1, 3), (2, 4), (3, 4), (2, 5), (3, 5)])
    assert g.work_bound() == 20 and g.critical_path_bound() == 20
    assert cut_chain_bound(g, ENGINES.index("stce")) == 10 + 20 + 10
    assert int((list_schedule(g) + g.durations).max()) == 40


def test_cut_chain_counts_every_engines_work_between_two_cuts():
    # GEMM -> reduction -> four 10-cycle loads, each feeding a 2-cycle GEMM -> reduction -> GEMM:
    # the GEMM segment alone needs 10 + 8 cycles, but the load engine needs 40 between the cuts,
    # and the GEMM of whichever load ends last follows it (the feeder rule)
    spec = [("stce", 10), ("vector", 5)] + [("load", 10)] * 4 + [("stce", 2)] * 4 \
        + [("vector", 5), ("stce", 10)]
    edges = [(0, 1)] + [(1, 2 + i) for i in range(4)] + [(2 + i, 6 + i) for i in range(4)] \
        + [(6 + i, 10) for i in range(4)] + [(10, 11)]
    g = _graph(spec, edges)
    assert cut_chain_bound(g, ENGINES.index("stce")) == 10 + 5 + 40 + 2 + 5 + 10
    assert int((list_schedule(g) + g.durations).max()) == 10 + 5 + 40 + 2 + 5 + 10   # tight


def test_feeder_rule_counts_the_gemm_work_left_after_each_vector_tile():
    # four 10-cycle vector tiles, each feeding one 2-cycle GEMM of an accumulation chain:
    # the last tile ends at 40 at the earliest and its GEMM still follows
    spec = [("vector", 10)] * 4 + [("stce", 2)] * 4
    edges = [(i, 4 + i) for i in range(4)] + [(4 + i, 5 + i) for i in range(3)]
    g = _graph(spec, edges)
    assert g.work_bound() == 40 and g.critical_path_bound() == 18
    assert cut_chain_bound(g, ENGINES.index("stce")) == 42
    assert int((list_schedule(g) + g.durations).max()) == 42                    # tight


def test_drain_rule_counts_the_gemm_work_before_each_store():
    # the mirror: a chain of four 2-cycle GEMMs, each result stored in 10 cycles
    spec = [("stce", 2)] * 4 + [("store", 10)] * 4
    edges = [(i, i + 1) for i in range(3)] + [(i, 4 + i) for i in range(4)]
    g = _graph(spec, edges)
    assert g.work_bound() == 40 and g.critical_path_bound() == 18
    assert cut_chain_bound(g, ENGINES.index("stce")) == 42
    assert int((list_schedule(g) + g.durations).max()) == 42


@pytest.mark.parametrize("seed", range(24))
def test_bounds_never_exceed_the_optimum_of_random_graphs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 18))
    spec = [(str(rng.choice(["load", "stce", "vector", "store"], p=[0.3, 0.4, 0.2, 0.1])),
             int(rng.integers(1, 12))) for _ in range(n)]
    p = float(rng.uniform(0.08, 0.3))
    g = _graph(spec, [(u, v) for v in range(n) for u in range(v) if rng.random() < p])
    res = schedule_graph(g, "cpsat", time_limit_s=20)
    assert res.solver_status == "OPTIMAL"
    assert max(cut_chain_bound(g, e) for e in range(len(ENGINES))) <= res.makespan


def _lagged_graph(rng) -> TaskGraph:
    """A random graph whose load / store tasks have a ready delay (the lag of their edges to
    other engines) and share one DRAM channel."""
    n = int(rng.integers(10, 18))
    spec = [(str(rng.choice(["load", "stce", "vector", "store"], p=[0.3, 0.4, 0.2, 0.1])),
             int(rng.integers(1, 12))) for _ in range(n)]
    delay = [int(rng.integers(0, 9)) if e in ("load", "store") else 0 for e, _ in spec]
    p = float(rng.uniform(0.08, 0.3))
    edges = [(u, v) for v in range(n) for u in range(v) if rng.random() < p]
    tasks = [Task(i, i, e, e, d, f"t{i}", delay=delay[i]) for i, (e, d) in enumerate(spec)]
    preds = [tuple(sorted(u for u, v in edges if v == t)) for t in range(n)]
    succs = [tuple(sorted(v for u, v in edges if u == t)) for t in range(n)]
    g = TaskGraph(None, tasks, preds, succs, np.zeros((n, len(BUFFERS)), np.int64),
                  {b: 1 for b in BUFFERS}, np.zeros(n, np.int64), 0)
    g.channel = np.array([e in ("load", "store") for e, _ in spec])     # as with dram_shared
    return g


@pytest.mark.parametrize("seed", range(12))
def test_lags_and_the_channel_in_bounds_and_schedules_of_random_graphs(seed):
    """Every schedule keeps start_v >= end_u + lag (lag: u's delay when the engines differ)
    and runs one channel task at a time; no bound exceeds CP-SAT's proven optimum."""
    g = _lagged_graph(np.random.default_rng(seed))
    d = g.durations
    for method in ("list", "cpsat"):
        res = schedule_graph(g, method, time_limit_s=20)
        s = res.starts
        for u, v in g.edges():
            lag = g.tasks[u].delay if g.tasks[u].engine != g.tasks[v].engine else 0
            assert s[v] >= s[u] + d[u] + lag
        on = sorted((int(s[t]), int(s[t] + d[t])) for t in np.flatnonzero(g.channel))
        assert all(b0 >= a1 for (_, a1), (b0, _) in zip(on, on[1:]))
        assert g.work_bound() >= int(d[g.channel].sum())
    assert res.solver_status == "OPTIMAL"
    assert max(g.lower_bounds().values()) <= res.makespan
    assert max(cut_chain_bound(g, e) for e in range(len(ENGINES))) <= res.makespan
