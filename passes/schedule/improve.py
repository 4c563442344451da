"""Forward-backward improvement of a list schedule (justification).

The classic RCPSP improvement of Li & Willis (1992), also called double
justification (Valls et al., 2005): list-schedule the *reversed* graph (every
edge turned round, time running backwards from the makespan) with the
forward schedule's end times as priorities -- the tasks that end last go
first -- which pushes every task as late as the budgets allow; then
list-schedule forwards again with the backward schedule's start times as
priorities (earliest first), which pulls them back as early as possible in
a better order. Each pass is one list-scheduling run; the best schedule seen
(after left-shift compaction) is kept, so the result is never worse than the
input. Buffer budgets are symmetric in time, so the reversed graph has the
same footprints and capacities; an edge keeps its lag (the reversed edge
waits as long), and the shared DRAM channel is a unary resource either way.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from satc.passes.schedule.listsched import compact, list_schedule
from satc.passes.schedule.taskgraph import TaskGraph


def reversed_graph(graph: TaskGraph) -> TaskGraph:
    """``graph`` with every edge reversed; task ``t`` becomes task ``n - 1 - t``."""
    n = graph.n
    flip = list(range(n - 1, -1, -1))
    tasks = [dataclasses.replace(graph.tasks[t], id=n - 1 - t) for t in flip]
    # ids ascending in the graph become descending: reverse each list (and its lags)
    preds = [tuple(n - 1 - s for s in reversed(graph.succs[t])) for t in flip]
    succs = [tuple(n - 1 - p for p in reversed(graph.preds[t])) for t in flip]
    pred_lags = [tuple(reversed(graph.succ_lags[t])) for t in flip]
    succ_lags = [tuple(reversed(graph.pred_lags[t])) for t in flip]
    return TaskGraph(graph.program, tasks, preds, succs, graph.footprint[::-1].copy(),
                     dict(graph.capacity), np.zeros(n, np.int64), 0, graph.token_edges,
                     pred_lags, succ_lags)


def forward_backward(graph: TaskGraph, starts: np.ndarray, extra: list[tuple[int, int]],
                     rounds: int = 2) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The best of the left-shifted schedule ``starts`` (with its capacity-chain edges
    ``extra``) and ``rounds`` backward-then-forward list-scheduling passes, each left-shifted
    (:func:`~satc.passes.schedule.listsched.compact`): (starts, capacity-chain edges)."""
    if not graph.n:
        return starts, extra
    d = graph.durations
    rev = reversed_graph(graph)
    best, best_span = (starts, extra), int((starts + d).max())
    cur = starts
    for _ in range(rounds):
        ends = cur + d
        back = list_schedule(rev, priority=ends[::-1])               # latest end goes first
        span = int((back + rev.durations).max())
        late = span - (back[::-1] + d)                               # forward start times
        cur, cur_extra = compact(graph, list_schedule(graph, priority=-late))
        cur_span = int((cur + d).max())
        if cur_span < best_span:
            best, best_span = (cur, cur_extra), cur_span
    return best
