"""List scheduling, left-shift compaction and capacity chaining.

:func:`list_schedule` is a time-driven list scheduler (parallel schedule
generation): at each event time every idle engine starts, among its ready
tasks (all predecessors finished, release time passed) whose footprint fits
the buffer budgets, the one with the largest bottom level (longest path to
the end of the graph, its own duration included); ties go to the lower task
id. A task is ready ``lag`` cycles after a predecessor ends (the edge's lag: a
load / store's ``dram_latency_cycles`` towards another engine), and a task on
the shared DRAM channel (a load or store when ``dram_shared``) also needs the
channel free; when both DMA engines could take the channel the one whose
ready task has the larger priority goes first. It schedules either the whole graph or one *window* of consecutive task
ids after a fixed prefix, described by a :class:`Prefix`.

:func:`compact` left-shifts a feasible schedule: keeping every engine's task
order, each task starts as early as its dependencies and its engine allow.
The channel keeps its order by start too, as the cycle model grants it in
issue order, which the re-emitted program sorts by start. That is exactly
what the cycle model does with a program whose queues and tokens encode the
same order and edges, so the compacted schedule is the one
the re-emitted program runs. If the shift would break a buffer budget,
:func:`chain_edges` adds *capacity chains* (a resource-flow decomposition of
the budget over the original schedule: each task takes its bytes from tasks
that ended before it started, and must follow them); every left shift that
keeps those edges keeps the budget.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from satc.backends.sat.isa import BUFFERS, ENGINES
from satc.errors import ScheduleError
from satc.passes.schedule.taskgraph import TaskGraph, peak_usage

NE = len(ENGINES)


@dataclass(frozen=True)
class Prefix:
    """What a window sees of the fixed schedule before it.

    ``release[i]``: earliest start of the window's i-th task (ends of its fixed
    predecessors plus the edge lags); ``engine_free[e]``: end of the last fixed
    task on engine e; ``bg_start``/``bg_end``/``bg_fp``: fixed tasks still
    running, with their footprints (they share the buffer budgets);
    ``channel_free``: end of the last fixed task on the shared DRAM channel.
    """

    release: np.ndarray
    engine_free: np.ndarray
    bg_start: np.ndarray
    bg_end: np.ndarray
    bg_fp: np.ndarray
    channel_free: int = 0

    @classmethod
    def empty(cls, n: int) -> "Prefix":
        """No fixed prefix: a window of ``n`` tasks that is the whole graph."""
        return cls(np.zeros(n, np.int64), np.zeros(NE, np.int64), np.zeros(0, np.int64),
                   np.zeros(0, np.int64), np.zeros((0, len(BUFFERS)), np.int64))


def prefix_for(graph: TaskGraph, starts: np.ndarray, lo: int, hi: int) -> Prefix:
    """The :class:`Prefix` of window ``[lo, hi)`` given the fixed starts of tasks ``< lo``."""
    d = graph.durations
    ends = starts[:lo] + d[:lo]
    release = np.array([max((ends[p] + g for p, g in zip(graph.preds[t], graph.pred_lags[t]) if p < lo),
                            default=0) for t in range(lo, hi)], dtype=np.int64)
    eng = graph.engine_ids[:lo]
    free = np.zeros(NE, np.int64)
    if lo:
        np.maximum.at(free, eng, ends)
    t0 = min(int(release.min()) if hi > lo else 0, int(free.min()))
    fp = graph.footprint[:lo]
    live = (ends > t0) & (fp.sum(axis=1) > 0)
    chan = graph.channel[:lo]
    channel_free = int(ends[chan].max()) if chan.any() else 0
    return Prefix(release, free, starts[:lo][live], ends[live], fp[live], channel_free)


def list_schedule(graph: TaskGraph, lo: int = 0, hi: int | None = None,
                  prefix: Prefix | None = None, priority: np.ndarray | None = None) -> np.ndarray:
    """Start times of tasks ``[lo, hi)`` (default: all) by list scheduling; ``priority`` (one
    value per window task, larger first) defaults to the bottom level."""
    hi = graph.n if hi is None else hi
    n = hi - lo
    prefix = prefix or Prefix.empty(n)
    dur = graph.durations[lo:hi]
    eng = graph.engine_ids[lo:hi]
    fp = graph.footprint[lo:hi]
    chan = graph.channel[lo:hi]
    cap = np.array([graph.capacity[b] for b in BUFFERS], np.int64)
    prio = graph.bottom_levels()[lo:hi] if priority is None else np.asarray(priority, np.int64)
    bg_total = prefix.bg_fp.sum(axis=0)
    bg_times = np.unique(np.concatenate([prefix.bg_start, prefix.bg_end]))
    indeg = np.zeros(n, np.int64)
    est = prefix.release.copy()
    for i in range(n):
        indeg[i] = sum(1 for p in graph.preds[lo + i] if p >= lo)
    future = [(int(est[i]), i) for i in range(n) if indeg[i] == 0]
    heapq.heapify(future)
    ready: list[list[tuple[int, int]]] = [[] for _ in range(NE)]
    running: list[tuple[int, int]] = []
    usage = np.zeros(len(BUFFERS), np.int64)
    free = prefix.engine_free.copy()
    channel_free = prefix.channel_free
    dma = [e for e in range(NE) if ENGINES[e] in ("load", "store")]
    rest = [e for e in range(NE) if e not in dma]
    start = np.full(n, -1, np.int64)

    def fits(i: int, t: int) -> bool:
        need = fp[i]
        if not need.any() or (usage + need + bg_total <= cap).all():
            return True
        live = (prefix.bg_start < t + dur[i]) & (prefix.bg_end > t)
        return bool((usage + need + prefix.bg_fp[live].sum(axis=0) <= cap).all())

    t = int(min(est.min(), free.min())) if n else 0
    done = 0
    while done < n:
        while running and running[0][0] <= t:
            end, i = heapq.heappop(running)
            usage -= fp[i]
            for v, g in zip(graph.succs[lo + i], graph.succ_lags[lo + i]):
                j = v - lo
                if j < n:
                    est[j] = max(est[j], end + g)
                    indeg[j] -= 1
                    if indeg[j] == 0:
                        heapq.heappush(future, (int(est[j]), j))
        while future and future[0][0] <= t:
            _, i = heapq.heappop(future)
            heapq.heappush(ready[eng[i]], (-int(prio[i]), i))
        blocked = False
        # the DMA engine with the most urgent ready task takes the shared channel first
        for e in sorted(dma, key=lambda e: ready[e][0] if ready[e] else (1, 0)) + rest:
            if free[e] > t or not ready[e]:
                continue
            skipped = []
            while ready[e]:
                item = heapq.heappop(ready[e])
                if chan[item[1]] and channel_free > t:
                    skipped.append(item)
                    break
                if fits(item[1], t):
                    i = item[1]
                    start[i] = t
                    free[e] = t + dur[i]
                    if chan[i]:
                        channel_free = t + int(dur[i])
                    usage += fp[i]
                    heapq.heappush(running, (t + int(dur[i]), i))
                    done += 1
                    break
                skipped.append(item)
            blocked |= bool(skipped)
            for item in skipped:
                heapq.heappush(ready[e], item)
        nxt = [running[0][0]] if running else []
        if future:
            nxt.append(future[0][0])
        nxt += [int(free[e]) for e in range(NE) if ready[e] and free[e] > t]
        if channel_free > t and any(ready[e] for e in dma):
            nxt.append(channel_free)
        if blocked:
            k = np.searchsorted(bg_times, t, side="right")
            if k < len(bg_times):
                nxt.append(int(bg_times[k]))
        if done < n:
            t = min(x for x in nxt if x > t)
    return start


def asap(graph: TaskGraph, key: np.ndarray, lo: int = 0, hi: int | None = None,
         prefix: Prefix | None = None,
         extra_preds: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Earliest starts of tasks ``[lo, hi)`` keeping each engine's order, and the shared DRAM
    channel's, by ``(key, id)``.

    ``key`` (one value per window task) must order every dependency edge and
    every ``extra_preds`` edge (window-local indices) forward: a schedule's own
    start times do. Every edge waits its lag; an ``extra_preds`` edge (it becomes a
    token like any other) the lag a dependency between the two tasks would have.
    """
    hi = graph.n if hi is None else hi
    n = hi - lo
    prefix = prefix or Prefix.empty(n)
    dur = graph.durations[lo:hi]
    eng = graph.engine_ids[lo:hi]
    chan = graph.channel[lo:hi]
    delay = np.array([t.delay for t in graph.tasks[lo:hi]], np.int64)
    free = prefix.engine_free.copy()
    channel_free = prefix.channel_free
    out = np.zeros(n, np.int64)
    for i in np.lexsort((np.arange(n), key)):
        s = max(int(prefix.release[i]), int(free[eng[i]]))
        if chan[i]:
            s = max(s, channel_free)
        for p, g in zip(graph.preds[lo + i], graph.pred_lags[lo + i]):
            if p >= lo:
                s = max(s, int(out[p - lo] + dur[p - lo]) + g)
        if extra_preds is not None:
            for p in extra_preds[i]:
                g = int(delay[p]) if eng[p] != eng[i] else 0
                s = max(s, int(out[p] + dur[p]) + g)
        out[i] = s
        free[eng[i]] = s + dur[i]
        if chan[i]:
            channel_free = s + int(dur[i])
    return out


def capacity_ok(graph: TaskGraph, starts: np.ndarray, lo: int = 0, hi: int | None = None,
                prefix: Prefix | None = None) -> np.ndarray:
    """Per buffer: whether tasks ``[lo, hi)`` at ``starts`` (plus the prefix's running tasks)
    stay within the budgets."""
    hi = graph.n if hi is None else hi
    prefix = prefix or Prefix.empty(hi - lo)
    st = np.concatenate([starts, prefix.bg_start])
    en = np.concatenate([starts + graph.durations[lo:hi], prefix.bg_end])
    fp = np.concatenate([graph.footprint[lo:hi], prefix.bg_fp])
    cap = np.array([graph.capacity[b] for b in BUFFERS], np.int64)
    return peak_usage(st, en, fp) <= cap


def chain_edges(graph: TaskGraph, starts: np.ndarray, buffer: int) -> list[tuple[int, int]]:
    """Capacity-chain edges ``(u, v)`` of one buffer for a budget-feasible schedule ``starts``.

    Tasks are visited by start time; each takes its footprint from chains
    whose last task has ended (first the unused budget, then chains it
    already follows by a dependency or its engine order, then the most
    recently ended), and gets an edge from every other chain it takes from.
    """
    dur = graph.durations
    fp = graph.footprint[:, buffer]
    eng = graph.engine_ids
    delay = [t.delay for t in graph.tasks]
    cap = graph.capacity[BUFFERS[buffer]]
    chains: list[list[int]] = [[-1, cap, -1]]      # [last task, bytes, end time]
    edges = []
    users = np.flatnonzero(fp > 0)
    for v in users[np.lexsort((users, starts[users]))]:
        need = int(fp[v])
        sv = int(starts[v])
        preds = set(graph.preds[v])
        avail = [c for c in chains if c[2] <= sv]

        def late(c: list[int]) -> bool:
            """A new edge from the chain's task would make ``v`` wait past ``sv`` (its lag)."""
            return c[0] >= 0 and c[0] not in preds and eng[c[0]] != eng[v] and c[2] + delay[c[0]] > sv
        avail.sort(key=lambda c: (c[0] != -1, not (c[0] in preds or (c[0] >= 0 and eng[c[0]] == eng[v])),
                                  late(c), -c[2]))
        for c in avail:
            take = min(need, c[1])
            if c[0] >= 0 and c[0] not in preds and eng[c[0]] != eng[v]:
                edges.append((c[0], int(v)))
            c[1] -= take
            need -= take
            if not need:
                break
        if need:
            raise ScheduleError(f"task {v} ({graph.tasks[v].name}) starts at {sv} with the "
                                f"{BUFFERS[buffer]} budget already in use: schedule over budget")
        chains = [c for c in chains if c[1] > 0]
        chains.append([int(v), int(fp[v]), sv + int(dur[v])])
    return edges


def compact(graph: TaskGraph, starts: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Left-shift a feasible whole-graph schedule; returns (starts, capacity-chain edges).

    The result never starts a task later than ``starts`` does, keeps every
    dependency, engine order and buffer budget, and is exactly the timing of
    the program :func:`satc.passes.schedule.emit.emit_program` writes for it.
    """
    extra: list[tuple[int, int]] = []
    chained: set[int] = set()
    while True:
        preds: list[list[int]] = [[] for _ in range(graph.n)]
        for u, v in extra:
            preds[v].append(u)
        out = asap(graph, starts, extra_preds=preds)
        bad = [b for b, ok in enumerate(capacity_ok(graph, out)) if not ok and b not in chained]
        if not bad:
            return out, sorted(set(extra))
        for b in bad:
            chained.add(b)
            extra += chain_edges(graph, starts, b)
