"""The cut-chain lower bound: engine work plus the gaps the dependencies force on it.

The per-engine work bound assumes the busiest engine never idles. In a
training step it must: e.g. no FF GEMM of layer l+1 can start before the
batch-norm statistics of layer l are complete, and those need every FF GEMM
of layer l. A task ``c`` is a *cut* of engine ``e`` when every task of
``e`` is an ancestor or a descendant of ``c``. For a chain of cuts
``c_1 .. c_k`` whose ancestor sets are nested, the tasks of ``e`` fall into
segments ``S_0 .. S_k`` (``S_i`` after ``c_i``, before ``c_{i+1}``) and in any
schedule

    end(c_{i+1}) >= max(head(c_{i+1}), end(c_i) + din_i + work(S_i) + dout_i) + p(c_{i+1})

where ``din_i`` is the shortest of the longest-path distances from the end
of ``c_i`` to the start of a task of ``S_i`` (whichever of them runs first
waits at least that long), ``dout_i`` the same from the end of a task of
``S_i`` to the start of ``c_{i+1}`` (whichever runs last), and ``work(S_i)``
the segment's durations summed (one engine runs them one at a time). The
first segment starts no earlier than its smallest head, the last one ends no
later than its smallest tail before the makespan. With no cut the bound is
``min head + work + min tail``, never below the work bound.

Edge lags (a load / store's ``dram_latency_cycles`` towards another engine) are
part of every longest-path distance, head and tail above. The shared DRAM
channel is bounded by the work bound (the load and store durations summed);
it gets no cut chain of its own.

The chain also bounds the other engines: a task ``t`` of any engine with a
path from ``c_j`` to ``t`` and from ``t`` to ``c_k`` runs between the end of
``c_j`` and the start of ``c_k``, so for every engine ``f``

    end(c_k) >= end(c_j) + work_f(c_j, c_k) + p(c_k)

(``c_0`` is time zero, ``c_{k+1}`` the makespan). A task's window is the
last cut it descends from and the first it leads to (one pass each way),
so every ``work_f(c_j, c_k)`` comes from one 2-D prefix sum.

Two more rules couple ``e`` with another engine ``f`` inside a segment
(Johnson's two-machine argument). *Feeder*: take the tasks ``x`` of ``f``
that descend from ``c_i`` and have tasks of ``S_i`` among their
descendants, with ``q(x)`` the work of those descendants, in decreasing
``q``. Of the first ``j`` of them, the one ``f`` finishes last ends no
earlier than ``end(c_i)`` + their smallest head + their work, and ``e``
still owes at least ``q_j`` after it, so

    end(c_{i+1}) >= end(c_i) + max_j (min head + work of the first j + q_j) + dout_i + p(c_{i+1}).

(``q`` counts ``S_i``'s tasks at their durations, or at the least of a run of
durations when a segment has more than 16 distinct ones.) *Drain* is the
mirror: tasks ``y`` of ``f`` that lead to ``c_{i+1}`` and have tasks of
``S_i`` among their ancestors, ``q(y)`` their work; the first of ``j`` of them
to start waits for ``q_j`` of ``e``'s work after the segment's earliest
start, then ``f`` runs all ``j``, then the smallest distance to ``c_{i+1}``.
The bound takes, cut by cut, the largest of these and the rules above.

Ancestor sets of ``e``'s tasks are Python-int bitsets (one bit per task of
``e``), so finding the cuts costs one pass over the edges each way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from satc.backends.sat.isa import ENGINES

if TYPE_CHECKING:
    from satc.passes.schedule.taskgraph import TaskGraph


def heads(graph: "TaskGraph") -> np.ndarray:
    """Longest path (durations and edge lags summed) from the start of the graph to the start
    of each task."""
    d = graph.durations
    h = np.zeros(graph.n, np.int64)
    for v in range(graph.n):
        ps = graph.preds[v]
        if ps:
            h[v] = max(int(h[p] + d[p]) + g for p, g in zip(ps, graph.pred_lags[v]))
    return h


def _bitsets(graph: "TaskGraph", rank: dict[int, int], forward: bool) -> list[int]:
    """Per task, the bitset of engine tasks among its ancestors (forward) or descendants."""
    out = [0] * graph.n
    order = range(graph.n) if forward else range(graph.n - 1, -1, -1)
    nbrs = graph.preds if forward else graph.succs
    for v in order:
        acc = 0
        for u in nbrs[v]:
            acc |= out[u]
            r = rank.get(u)
            if r is not None:
                acc |= 1 << r
        out[v] = acc
    return out


def _distances(graph: "TaskGraph", c: int, stop: int, forward: bool) -> dict[int, int]:
    """Longest-path distances between ``c`` and the tasks up to id ``stop``: from the end of
    ``c`` to the start of each descendant (``forward``), or from the end of each ancestor to
    the start of ``c``. Tasks off every path to or from ``c`` are left out."""
    d = graph.durations
    if forward:
        nbrs, lags, ids = graph.preds, graph.pred_lags, range(c + 1, stop + 1)
    else:
        nbrs, lags, ids = graph.succs, graph.succ_lags, range(c - 1, stop - 1, -1)
    dist = {c: 0}
    for v in ids:
        best = -1
        for u, g in zip(nbrs[v], lags[v]):
            du = dist.get(u)
            if du is not None:
                best = max(best, (du if u == c else du + int(d[u])) + g)
        if best >= 0:
            dist[v] = best
    return dist


def cut_chain_bound(graph: "TaskGraph", engine: int) -> int:
    """The cut-chain lower bound on the makespan for engine index ``engine`` (module docstring)."""
    eng = graph.engine_ids
    members = [int(t) for t in np.flatnonzero(eng == engine)]
    if not members:
        return 0
    rank = {t: r for r, t in enumerate(members)}
    anc = _bitsets(graph, rank, True)
    desc = _bitsets(graph, rank, False)
    full = (1 << len(members)) - 1
    chain: list[int] = []
    for c in range(graph.n):
        if c in rank or (anc[c] | desc[c]) != full or not anc[c] or not desc[c]:
            continue
        if chain and (anc[chain[-1]] & ~anc[c] or anc[c] == anc[chain[-1]]):
            continue                     # not nested strictly inside the previous cut
        chain.append(c)
    d = graph.durations
    h = heads(graph)
    tails = graph.bottom_levels() - d

    def segment(bits: int) -> list[int]:
        return [members[r] for r in range(len(members)) if bits >> r & 1]

    def other_work(tasks, covers) -> int:
        """Largest per-engine work of the non-``engine`` tasks among ``tasks`` that ``covers``."""
        ids = [v for v in tasks if eng[v] != engine and covers(v)]
        return int(np.bincount(eng[ids], weights=d[ids]).max()) if ids else 0

    def heads_after(seg: list[int], prev: int, end: int | None) -> dict[int, int]:
        """Longest-path distance from the end of cut ``prev`` (from time 0 when ``end`` is None)
        to the start of each task, up to the last of ``seg``, that may run after the cut."""
        if end is None:
            return {v: int(h[v]) for v in range(max(seg) + 1)}
        frm = _distances(graph, prev, max(seg), forward=True)
        del frm[prev]
        return frm

    def enter(seg: list[int], bits: int, head: dict[int, int]) -> int:
        """Least time from the cut (``head``: :func:`heads_after`) to the first task of ``seg``."""
        every = lambda v: desc[v] & bits == bits          # noqa: E731  (before all of seg)
        return max(min(head[s] for s in seg), other_work(head, every))

    def flow(seg: list[int], bits: int, dist: dict[int, int], related: list[int]) -> int:
        """The feeder/drain rule (module docstring): over each other engine's tasks ``v`` in
        ``dist`` whose ``related`` set meets ``seg``, taken by decreasing ``q`` (the work of
        ``seg`` in that set), the largest ``min dist + work + q`` of a first few."""
        masks = _duration_masks([(int(d[s]), rank[s]) for s in seg])
        rows: dict[int, list[tuple[int, int, int]]] = {}
        for v, gap in dist.items():
            m = related[v] & bits
            if m and eng[v] != engine:
                q = sum(du * (m & mask).bit_count() for du, mask in masks)
                rows.setdefault(int(eng[v]), []).append((-q, gap, int(d[v])))
        best = 0
        for tasks in rows.values():
            tasks.sort()                            # most of seg's work related first
            low, work = None, 0
            for neg_q, gap, p in tasks:
                low = gap if low is None else min(low, gap)
                work += p
                best = max(best, low + work - neg_q)
        return best

    between = _work_between(graph, chain)
    ends = [0]                                   # ends[j]: bound on the end of c_j (c_0: time 0)

    def window_start(k: int) -> int:
        """Earliest start of c_k (k = len(chain): the makespan) by the engines' work between cuts."""
        return max(ends[j] + int(between[:, j, k].max()) for j in range(k + 1))

    prev_bits, end, prev = 0, None, -1
    for k, c in enumerate(chain):
        bits = anc[c] & ~prev_bits
        seg = segment(bits)
        to_c = _distances(graph, c, min(seg), forward=False)
        leave = max(min(to_c[s] for s in seg),
                    other_work([v for v in to_c if v != c], lambda v: anc[v] & bits == bits))
        head, base = heads_after(seg, prev, end), 0 if end is None else end
        first = base + enter(seg, bits, head)
        start = max(first + int(d[seg].sum()), base + flow(seg, bits, head, desc)) + leave
        drain = flow(seg, bits, {v: gap for v, gap in to_c.items() if v != c}, anc)
        start = max(start, first + drain, window_start(k))
        end = max(int(h[c]), start) + int(d[c])
        ends.append(end)
        prev, prev_bits = c, anc[c]
    bits = full & ~prev_bits
    last = segment(bits)
    after = max(int(tails[last].min()),
                other_work(range(min(last), graph.n), lambda v: anc[v] & bits == bits))
    head, base = heads_after(last, prev, end), 0 if end is None else end
    first = base + enter(last, bits, head)
    done = max(first + int(d[last].sum()), base + flow(last, bits, head, desc))
    drain = flow(last, bits, {v: int(tails[v]) for v in range(min(last), graph.n)}, anc)
    return max(done + after, first + drain, window_start(len(chain)))


def _duration_masks(tasks: list[tuple[int, int]], groups: int = 16) -> list[tuple[int, int]]:
    """(duration, bitset) pairs for (duration, bit) ``tasks``: a set's work is at least the sum
    of duration x popcount of its intersections. Exact for up to ``groups`` distinct durations;
    beyond, the durations fall into ``groups`` runs of equal size, each counted at its least."""
    by: dict[int, int] = {}
    for du, bit in tasks:
        by[du] = by.get(du, 0) | 1 << bit
    durs = sorted(by)
    runs = np.array_split(np.arange(len(durs)), min(groups, len(durs)))
    out = []
    for run in runs:
        mask = 0
        for i in run:
            mask |= by[durs[i]]
        out.append((durs[run[0]], mask))
    return out


def _work_between(graph: "TaskGraph", chain: list[int]) -> np.ndarray:
    """``w[f, j, k]``: durations of engine ``f``'s tasks on a path from cut ``j`` to cut ``k``
    (``j`` = 0: the start, cut ``i`` is ``chain[i - 1]``; ``k`` = len(chain): the end)."""
    k_end = len(chain)
    pos = {c: i for i, c in enumerate(chain)}
    after = np.full(graph.n, -1, np.int64)       # last cut each task descends from (-1: none)
    for v in range(graph.n):
        for u in graph.preds[v]:
            after[v] = max(after[v], after[u], pos.get(u, -1))
    before = np.full(graph.n, k_end, np.int64)   # first cut each task leads to (k_end: none)
    for v in range(graph.n - 1, -1, -1):
        for s in graph.succs[v]:
            before[v] = min(before[v], before[s], pos.get(s, k_end))
    w = np.zeros((len(ENGINES), k_end + 1, k_end + 1))
    np.add.at(w, (graph.engine_ids, after + 1, before), graph.durations)
    return np.flip(np.cumsum(np.flip(w, 1), 1), 1).cumsum(2)
