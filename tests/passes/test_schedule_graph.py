"""Task graph: exact byte intervals, hazards, token edges through nops, footprints, bounds."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satc.backends.sat.access import Access
from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.config import load_hardware
from satc.errors import ScheduleError
from satc.passes.schedule import build_task_graph, byte_intervals, synthetic_program
from satc.passes.schedule.taskgraph import merge_intervals, segment_indices


@pytest.fixture(scope="module")
def small():
    return load_hardware("sat-small")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.data(), st.sampled_from([1, 2, 4]))
def test_byte_intervals_match_brute_force(shape, data, item):
    strides = [data.draw(st.integers(0, 12)) * item for _ in shape[:-1]]
    strides.append(data.draw(st.sampled_from([item, 2 * item, 0])))
    offset = data.draw(st.integers(0, 8)) * item
    a = Access("x", "act", offset, tuple(shape), tuple(strides), np.dtype(f"u{item}"), False)
    touched = set()
    for idx in np.ndindex(*shape):
        base = offset + sum(i * s for i, s in zip(idx, strides))
        touched.update(range(base, base + item))
    iv = byte_intervals(a)
    got = set()
    for lo, hi in iv:
        got.update(range(lo, hi))
    assert got == touched
    assert (iv[1:, 0] > iv[:-1, 1]).all()          # disjoint, not adjacent, sorted


def _hazard_program(small):
    b = ProgramBuilder(small)
    a = b.alloc("a", (4, 4), init=np.arange(16, dtype=np.float32).reshape(4, 4))
    out = b.alloc("out", (4, 4))
    b.load("act", 0, a.addr, 4, 4)                           # 0 writes act[0:64)
    b.vec("copy", 4, 4, s0_buf="act", s0_addr=0, d_buf="vec", d_addr=0)   # 1 RAW on 0
    b.load("act", 0, a.addr, 4, 4)                           # 2 WAR on 1, WAW on 0
    b.store("vec", 0, out.addr, 4, 4)                        # 3 RAW on 1
    return b.build()


def test_hazard_edges_are_exact(small):
    g = build_task_graph(_hazard_program(small))
    assert g.preds == [(), (0,), (0, 1), (1,)]
    assert g.succs == [(1, 2), (2, 3), (), ()]


def test_interleaved_strided_tiles_do_not_conflict(small):
    # two column tiles of one 4 x 8 matrix in acc: their extents overlap, their bytes do not
    b = ProgramBuilder(small)
    a = b.alloc("a", (4, 4), init=np.ones((4, 4), np.float32))
    b.load("vec", 0, a.addr, 4, 4)
    b.vec("copy", 4, 4, s0_buf="vec", s0_addr=0, d_buf="acc", d_addr=0, d_stride=8)
    b.vec("relu", 4, 4, s0_buf="vec", s0_addr=0, d_buf="acc", d_addr=16, d_stride=8)
    b.store("acc", 0, 1024, 4, 4, buf_row_stride=8, dram_row_stride=4)
    g = build_task_graph(b.build())
    assert g.preds[2] == (0,)                  # no WAW with task 1
    assert g.preds[3] == (1,)                  # the store reads only tile 0


def test_token_edges_through_nops(small):
    b = ProgramBuilder(small)
    a = b.alloc("a", (4, 4), init=np.ones((4, 4), np.float32))
    c = b.alloc("c", (4, 4), init=np.ones((4, 4), np.float32))
    b.load("act", 0, a.addr, 4, 4, signal="vector")          # 0
    b.load("vec", 0, c.addr, 4, 4)                           # 1 (independent)
    b.nop("vector", wait="load", signal="store")             # 2: load 0 -> nop -> store 4
    b.vec("copy", 4, 4, s0_buf="vec", s0_addr=0, d_buf="vec", d_addr=64)   # 3 (after the nop)
    b.store("act", 0, 2048, 4, 4, wait="vector")             # 4
    prog = b.build()
    plain = build_task_graph(prog)
    kept = build_task_graph(prog, include_tokens=True)
    assert [t.index for t in plain.tasks] == [0, 1, 3, 4]     # the nop is no task
    assert plain.preds[3] == (0,)                             # store reads act: RAW on load 0
    assert plain.preds[2] == (1,)
    assert kept.preds[2] == (0, 1)                            # vec follows the nop, which waits on load 0
    assert kept.preds[3] == (0,)
    assert kept.token_edges


def test_footprints_bounds_and_networkx(small):
    prog, labels = synthetic_program(small, 3)
    g = build_task_graph(prog, labels)
    assert g.n == 90 and [t.name for t in g.tasks][:2] == labels[:2]
    load_x = g.tasks[0]
    assert load_x.name == "L0/ff/load_x0" and g.footprint[0].tolist() == [8 * 16 * 4, 0, 0, 0]
    nxg = g.to_networkx()
    path = nx.dag_longest_path(nxg, weight="weight")
    # durations plus a load / store's latency on every edge to another engine
    lag = [small.dram_latency_cycles if g.tasks[u].op in ("load", "store") and
           g.tasks[u].engine != g.tasks[v].engine else 0 for u, v in zip(path, path[1:])]
    longest = sum(g.tasks[t].duration for t in path) + sum(lag)
    assert longest == g.critical_path_bound()
    per_engine = {}
    for t in g.tasks:
        per_engine[t.engine] = per_engine.get(t.engine, 0) + t.duration
    # load and store share the DRAM channel (sat-small: dram_shared = true)
    channel = per_engine.get("load", 0) + per_engine.get("store", 0)
    assert g.work_bound() == max(*per_engine.values(), channel)
    assert g.capacity == small.buffer_bytes                  # the program fits its buffers


def test_graph_errors(small):
    prog, labels = synthetic_program(small, 1)
    with pytest.raises(ScheduleError, match="labels"):
        build_task_graph(prog, labels[:-1])
    with pytest.raises(ScheduleError, match="unknown buffers"):
        build_task_graph(prog, capacity={"sram": 1})
    with pytest.raises(ScheduleError, match="alone touches"):
        build_task_graph(prog, capacity={"act": 16})


@given(st.lists(st.tuples(st.integers(0, 60), st.integers(1, 12)), min_size=1, max_size=8))
def test_segment_indices_match_brute_force(spans):
    iv = merge_intervals(np.array([(lo, lo + n) for lo, n in spans], np.int64))
    bounds = np.unique(np.concatenate([iv.ravel(), [0, 80, 3, 41]]))
    got = segment_indices(bounds, iv)
    want = [k for k in range(len(bounds) - 1)
            if any(lo <= bounds[k] and bounds[k + 1] <= hi for lo, hi in iv)]
    assert got.tolist() == want
