"""Task graph of a SAT program: tasks, true data hazards, buffer footprints, lower bounds.

One task per instruction (``nop`` instructions carry no work and are dropped;
their token edges are contracted when token edges are kept). Tasks are
numbered in the program's *reference order* -- the order the emulator
executes instructions in (:func:`satc.backends.sat.dispatch.issue_order`,
which is program order unless the tokens force otherwise) -- so every edge
goes from a lower to a higher task id and task-id order is a topological
order.

Dependencies are the true data hazards on exact byte ranges: each access of
:func:`satc.backends.sat.access.accesses` is turned into the sorted, merged
list of byte intervals it touches (:func:`byte_intervals`, one per contiguous
row run), and a task must follow

* the last earlier writer of every byte it reads (RAW),
* the last earlier writer of every byte it writes (WAW),
* every earlier reader, since that last write, of every byte it writes (WAR),

in each on-chip buffer and in DRAM. RAW and WAW come from a forward pass
keeping the last writer of every elementary segment (the pieces between
all interval end points); WAR from a backward pass keeping the next writer
(a reader must precede the first later writer of each byte it reads, which
is the same relation). Identical accesses share one cut. Optionally the program's own token edges
(the k-th signal ``A -> B`` pairs with the k-th wait of ``B`` on ``A``) are
added too, contracted through nops.

Each edge ``u -> v`` carries a *lag*: ``v`` starts at least ``lag`` cycles after
``u`` ends. The lag is ``u``'s ready delay
(:func:`satc.backends.sat.cost_model.ready_delay`: ``dram_latency_cycles`` for a
load / store) when ``u`` and ``v`` run on different engines, else 0 -- exactly
when the cycle model's token from ``u`` arrives. With ``dram_shared`` the load
and store tasks (``channel``) also share one DRAM channel: no two of them run at
once.

Footprint: the number of distinct bytes of each on-chip buffer a task
touches. Addresses are fixed by codegen, so two tasks that run at the same
time and share a written byte are already ordered by a hazard; what the
capacity constraint bounds is the *working set*: the footprints of the
tasks running at any instant must sum to at most the buffer's budget. Bytes
two concurrent tasks both only read are counted once per task, so the sum can
exceed the buffer size even though the program is correct; the default
budget of a buffer is therefore its size or, if larger, the peak working set
of the program in its own order, so the original order is always feasible.
Pass ``capacity`` to schedule under a tighter budget (e.g. to leave room for
prefetching).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import networkx as nx
import numpy as np

from satc.backends.sat.access import Access, accesses
from satc.backends.sat.cost_model import instruction_cycles, ready_delay, uses_channel
from satc.backends.sat.dispatch import issue_order
from satc.backends.sat.isa import BUFFERS, ENGINES
from satc.backends.sat.program import Program
from satc.backends.sat.timing import simulate
from satc.passes.schedule.bounds import cut_chain_bound
from satc.errors import ScheduleError

SPACES: tuple[str, ...] = BUFFERS + ("dram",)
#: Accesses with more row runs than this are tracked by their extent (conservative).
MAX_RUNS = 1 << 16


@dataclass(frozen=True)
class Task:
    """One schedulable instruction: task id, program index, engine, op, duration, name.

    ``label`` is the caller's name for the instruction ('' if none); ``name``
    is the label or ``op#index``. ``delay``: cycles after its end until its
    results reach other engines (the lag of its cross-engine out-edges).
    """

    id: int
    index: int
    engine: str
    op: str
    duration: int
    name: str
    label: str = ""
    delay: int = 0


@dataclass
class TaskGraph:
    """Tasks in reference order with hazard edges, footprints and buffer budgets.

    ``preds[t]`` / ``succs[t]`` are sorted task ids; every edge goes from a
    lower to a higher id. ``footprint[t, b]`` is the distinct bytes of buffer
    ``BUFFERS[b]`` task ``t`` touches; ``capacity[b]`` its budget.
    ``inorder_start[t]`` is the start of the task in the cycle model of the
    program as written. ``pred_lags[t]`` / ``succ_lags[t]`` are the lags of the
    edges in ``preds[t]`` / ``succs[t]`` (module docstring; computed from the
    tasks' delays when not given); ``channel[t]``: the task holds the shared
    DRAM channel.
    """

    program: Program
    tasks: list[Task]
    preds: list[tuple[int, ...]]
    succs: list[tuple[int, ...]]
    footprint: np.ndarray
    capacity: dict[str, int]
    inorder_start: np.ndarray
    inorder_makespan: int
    token_edges: bool = False
    pred_lags: list[tuple[int, ...]] | None = None
    succ_lags: list[tuple[int, ...]] | None = None
    _bottom: np.ndarray | None = field(default=None, repr=False)
    _cut_chain: int | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        def lag(u: int, v: int) -> int:
            tu = self.tasks[u]
            return tu.delay if tu.engine != self.tasks[v].engine else 0
        if self.pred_lags is None:
            self.pred_lags = [tuple(lag(u, v) for u in ps) for v, ps in enumerate(self.preds)]
        if self.succ_lags is None:
            self.succ_lags = [tuple(lag(u, v) for v in ss) for u, ss in enumerate(self.succs)]
        cfg = self.program.config if self.program is not None else None    # None: a bare graph
        self.channel = np.array([cfg is not None and uses_channel(t.op, cfg) for t in self.tasks],
                                dtype=bool)

    @property
    def n(self) -> int:
        """Number of tasks."""
        return len(self.tasks)

    @property
    def durations(self) -> np.ndarray:
        """Durations (cycles) of the tasks, by task id."""
        return np.array([t.duration for t in self.tasks], dtype=np.int64)

    @property
    def engine_ids(self) -> np.ndarray:
        """Engine of every task as an index into ``ENGINES``."""
        return np.array([ENGINES.index(t.engine) for t in self.tasks], dtype=np.int64)

    def edges(self) -> list[tuple[int, int]]:
        """Every dependency edge (u, v), u < v."""
        return [(u, v) for v in range(self.n) for u in self.preds[v]]

    def lagged_edges(self) -> list[tuple[int, int, int]]:
        """Every dependency edge with its lag: (u, v, lag)."""
        return [(u, v, g) for v in range(self.n) for u, g in zip(self.preds[v], self.pred_lags[v])]

    def channel_work(self) -> int:
        """Summed durations of the tasks on the shared DRAM channel (0 when not shared)."""
        return int(self.durations[self.channel].sum()) if self.n else 0

    def work_bound(self) -> int:
        """Per-resource work bound: the largest sum of durations on one engine or on the
        shared DRAM channel."""
        if not self.n:
            return 0
        return max(int(np.bincount(self.engine_ids, weights=self.durations, minlength=len(ENGINES)).max()),
                   self.channel_work())

    def bottom_levels(self) -> np.ndarray:
        """Longest path (durations and lags included) from each task to the end of the graph."""
        if self._bottom is None:
            d = self.durations
            bl = d.copy()
            for t in range(self.n - 1, -1, -1):
                s = self.succs[t]
                if s:
                    bl[t] = d[t] + max(bl[v] + g for v, g in zip(s, self.succ_lags[t]))
            self._bottom = bl
        return self._bottom

    def critical_path_bound(self) -> int:
        """Critical-path bound: the longest dependency chain, durations summed."""
        return int(self.bottom_levels().max()) if self.n else 0

    def cut_chain_bound(self) -> int:
        """Best cut-chain bound (:mod:`satc.passes.schedule.bounds`) over the engines with at
        least half the busiest engine's work."""
        if self._cut_chain is None:
            work = np.bincount(self.engine_ids, weights=self.durations, minlength=len(ENGINES))
            self._cut_chain = max((cut_chain_bound(self, e) for e in range(len(ENGINES))
                                   if self.n and work[e] >= work.max() / 2), default=0)
        return self._cut_chain

    def lower_bounds(self) -> dict[str, int]:
        """{'work': per-engine work bound, 'critical_path': longest-path bound,
        'cut_chain': a busy engine's work plus the idle its dependencies force}."""
        return {"work": self.work_bound(), "critical_path": self.critical_path_bound(),
                "cut_chain": self.cut_chain_bound()}

    def to_networkx(self) -> nx.DiGraph:
        """The graph as a networkx DiGraph: nodes are task ids with the Task as attribute
        ``task``; edge ``(u, v)`` has ``weight`` = duration of u plus the edge's lag."""
        g = nx.DiGraph()
        for t in self.tasks:
            g.add_node(t.id, task=t)
        g.add_edges_from((u, v, {"weight": self.tasks[u].duration + lag})
                         for u, v, lag in self.lagged_edges())
        return g


def byte_intervals(a: Access) -> np.ndarray:
    """The bytes ``a`` touches as sorted, disjoint, non-adjacent ``[lo, hi)`` rows of an (k, 2) array.

    Runs of the contiguous innermost dimension become one interval each;
    accesses with more than :data:`MAX_RUNS` runs are covered by their extent.
    """
    item = a.dtype.itemsize
    shape, strides = a.shape, a.strides
    if any(d == 0 for d in shape):
        return np.zeros((0, 2), np.int64)
    if strides[-1] == item:
        run, outer_shape, outer_strides = shape[-1] * item, shape[:-1], strides[:-1]
    else:
        run, outer_shape, outer_strides = item, shape, strides
    if int(np.prod(outer_shape, dtype=np.int64)) > MAX_RUNS:
        lo, hi = a.extent
        return np.array([[lo, hi]], np.int64)
    starts = np.array([a.offset], np.int64)
    for d, s in zip(outer_shape, outer_strides):
        starts = (starts[:, None] + np.arange(d, dtype=np.int64)[None, :] * s).ravel()
    return merge_intervals(np.stack([starts, starts + run], axis=1))


def merge_intervals(iv: np.ndarray) -> np.ndarray:
    """Union of (k, 2) half-open intervals as sorted, disjoint, non-adjacent intervals."""
    if len(iv) <= 1:
        return iv.astype(np.int64).reshape(-1, 2)
    iv = iv[np.argsort(iv[:, 0], kind="stable")]
    hi_max = np.maximum.accumulate(iv[:, 1])
    new = np.ones(len(iv), bool)
    new[1:] = iv[1:, 0] > hi_max[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(iv)) - 1
    return np.stack([iv[first, 0], hi_max[last]], axis=1)


def segment_indices(bounds: np.ndarray, iv: np.ndarray) -> np.ndarray:
    """Indices of the elementary segments (between consecutive ``bounds``) covering ``iv``."""
    s0 = np.searchsorted(bounds, iv[:, 0])
    s1 = np.searchsorted(bounds, iv[:, 1])
    n = s1 - s0
    if len(n) == 1:
        return np.arange(s0[0], s1[0], dtype=np.int64)
    shift = np.repeat(s0 - np.concatenate(([0], np.cumsum(n)[:-1])), n)
    return shift + np.arange(int(n.sum()), dtype=np.int64)


def sorted_distinct(v: np.ndarray) -> np.ndarray:
    """The distinct values of ``v``, ascending (a sort beats numpy's hash unique on large int arrays)."""
    v = np.sort(v, kind="stable")      # timsort: the input is a concatenation of sorted runs
    keep = np.empty(len(v), bool)
    keep[:1] = True
    np.not_equal(v[1:], v[:-1], out=keep[1:])
    return v[keep]


def _distinct(arrays: list[np.ndarray]) -> set[int]:
    """The distinct values of ``arrays``; runs of equal neighbours are collapsed first (cheap)."""
    if not arrays:
        return set()
    v = np.concatenate(arrays)
    if len(v) > 1:
        keep = np.empty(len(v), bool)
        keep[0] = True
        np.not_equal(v[1:], v[:-1], out=keep[1:])
        v = v[keep]
    return set(v.tolist())


def _as_slice(ix: np.ndarray) -> np.ndarray | slice:
    """``ix`` as a slice when it is one contiguous ascending run (views beat gathers), else as int32."""
    if len(ix) and int(ix[-1]) - int(ix[0]) == len(ix) - 1:
        return slice(int(ix[0]), int(ix[-1]) + 1)
    return ix.astype(np.int32)


def _hazard_preds(task_access: list[list[tuple[int, bool]]], regions: list[tuple[str, np.ndarray]]
                  ) -> list[set[int]]:
    """RAW / WAW / WAR predecessors of every task (see the module docstring).

    ``task_access[t]`` lists (region id, write) pairs; ``regions[r]`` is (space, byte intervals).
    Identical regions are shared, so each is cut into elementary segments once.
    """
    bounds = {}
    for s in SPACES:
        ends = [iv.ravel() for sp, iv in regions if sp == s]
        bounds[s] = sorted_distinct(np.concatenate(ends)) if ends else np.zeros(0, np.int64)
    segs = [(sp, _as_slice(segment_indices(bounds[sp], iv))) for sp, iv in regions]
    nseg = {s: max(len(b) - 1, 0) for s, b in bounds.items()}
    out: list[set[int]] = []
    last_write = {s: np.full(k, -1, np.int32) for s, k in nseg.items()}
    for t, acc in enumerate(task_access):            # RAW and WAW: the last earlier writer
        preds = _distinct([last_write[segs[r][0]][segs[r][1]] for r, _ in acc])
        preds.discard(-1)
        preds.discard(t)
        out.append(preds)
        for r, w in acc:
            if w:
                sp, ix = segs[r]
                last_write[sp][ix] = t
    next_write = {s: np.full(k, -1, np.int32) for s, k in nseg.items()}
    for t in range(len(task_access) - 1, -1, -1):    # WAR: a read precedes the first later writer
        acc = task_access[t]
        later = _distinct([next_write[segs[r][0]][segs[r][1]] for r, w in acc if not w])
        later.discard(-1)
        for v in later:
            out[v].add(t)
        for r, w in acc:
            if w:
                sp, ix = segs[r]
                next_write[sp][ix] = t
    return out


def _token_preds(program: Program, order: list[int], task_of: dict[int, int]) -> list[set[int]]:
    """Token edges of the program (FIFO pairing), contracted through nops, as task preds."""
    instrs = program.instructions
    producers: dict[tuple[str, str], list[int]] = {}
    consumers: dict[tuple[str, str], list[int]] = {}
    for i, ins in enumerate(instrs):
        for d in ins.signal:
            producers.setdefault((ins.engine, d), []).append(i)
        for s in ins.wait:
            consumers.setdefault((s, ins.engine), []).append(i)
    pred_ins: dict[int, set[int]] = {i: set() for i in range(len(instrs))}
    for pair, cons in consumers.items():
        for p, c in zip(producers.get(pair, []), cons):
            pred_ins[c].add(p)
    prev_on: dict[str, int] = {}
    for i, ins in enumerate(instrs):        # nops sit in a queue: they follow / precede neighbours
        p = prev_on.get(ins.engine)
        if p is not None and (ins.op == "nop" or instrs[p].op == "nop"):
            pred_ins[i].add(p)
        prev_on[ins.engine] = i
    real: dict[int, set[int]] = {}          # program index -> real (non-nop) predecessor indices
    for i in order:
        r: set[int] = set()
        for p in pred_ins[i]:
            r |= {p} if instrs[p].op != "nop" else real[p]
        real[i] = r
    out = [set() for _ in task_of]
    for i, t in task_of.items():
        out[t] = {task_of[p] for p in real[i]}
    return out


def build_task_graph(program: Program, labels: Sequence[str] | None = None, *,
                     include_tokens: bool = False,
                     capacity: Mapping[str, int] | None = None) -> TaskGraph:
    """The task graph of ``program``.

    ``labels[i]`` names instruction ``i`` (e.g. ``"conv2/bp/t3"``; '/'-separated
    paths group tasks by layer and stage in reports); unnamed tasks are called
    ``op#index``. ``include_tokens`` adds the program's own token edges to the
    hazards. ``capacity`` overrides the working-set budget (bytes) of some
    buffers (see the module docstring).
    """
    instrs = program.instructions
    cfg = program.config
    if labels is not None and len(labels) != len(instrs):
        raise ScheduleError(f"{len(labels)} labels for {len(instrs)} instructions")
    order = issue_order(instrs)
    tasks: list[Task] = []
    task_access = []
    footprint = []
    region_of: dict[tuple, int] = {}
    regions: list[tuple[str, np.ndarray]] = []
    for i in order:
        ins = instrs[i]
        if ins.op == "nop":
            continue
        d = instruction_cycles(ins, cfg)
        if d < 1:
            raise ScheduleError(f"instruction {i} ({ins.op}) lasts {d} cycles; tasks need >= 1")
        label = labels[i] if labels is not None else ""
        tasks.append(Task(len(tasks), i, ins.engine, ins.op, d, label or f"{ins.op}#{i}", label,
                          ready_delay(ins, cfg)))
        acc = [(_region_id(a, region_of, regions), a.write) for a in accesses(ins)]
        task_access.append(acc)
        footprint.append(_footprint([r for r, _ in acc], regions))
    preds = _hazard_preds(task_access, regions)
    task_of = {t.index: t.id for t in tasks}
    if include_tokens:
        for t, extra in enumerate(_token_preds(program, order, task_of)):
            preds[t] |= extra
    succs: list[list[int]] = [[] for _ in tasks]
    for v, ps in enumerate(preds):
        for u in ps:
            succs[u].append(v)
    timeline = simulate(instrs, cfg).timeline
    start = np.array([timeline[t.index].start for t in tasks], dtype=np.int64)
    fpa = np.array(footprint, dtype=np.int64).reshape(len(tasks), len(BUFFERS))
    budget = dict(cfg.buffer_bytes)
    if capacity is None:
        peak = peak_usage(start, start + np.array([t.duration for t in tasks], np.int64), fpa)
        budget = {b: max(budget[b], int(peak[k])) for k, b in enumerate(BUFFERS)}
    else:
        unknown = set(capacity) - set(BUFFERS)
        if unknown:
            raise ScheduleError(f"capacity for unknown buffers {sorted(unknown)}; buffers: {BUFFERS}")
        budget.update({b: int(v) for b, v in capacity.items()})
    for k, b in enumerate(BUFFERS):
        if len(tasks) and fpa[:, k].max() > budget[b]:
            t = int(fpa[:, k].argmax())
            raise ScheduleError(f"task {t} ({tasks[t].name}) alone touches {fpa[t, k]} bytes of the "
                                f"{b} buffer, more than its budget of {budget[b]}")
    end = max((e.end for e in timeline), default=0)
    return TaskGraph(program, tasks, [tuple(sorted(p)) for p in preds], [tuple(s) for s in succs],
                     fpa, budget, start, end, include_tokens)


def _region_id(a: Access, region_of: dict[tuple, int], regions: list[tuple[str, np.ndarray]]) -> int:
    """Id of the byte region ``a`` touches; accesses with equal ``bytes_key`` share one."""
    r = region_of.get(a.bytes_key)
    if r is None:
        r = region_of[a.bytes_key] = len(regions)
        regions.append((a.space, byte_intervals(a)))
    return r


def _footprint(region_ids: list[int], regions: list[tuple[str, np.ndarray]]) -> list[int]:
    """Distinct bytes of each on-chip buffer the regions touch together."""
    fp = []
    for b in BUFFERS:
        ivs = [regions[r][1] for r in region_ids if regions[r][0] == b]
        merged = merge_intervals(np.concatenate(ivs)) if len(ivs) > 1 else (ivs[0] if ivs else np.zeros((0, 2), np.int64))
        fp.append(int((merged[:, 1] - merged[:, 0]).sum()))
    return fp


def peak_usage(start: np.ndarray, end: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Peak over time of the summed footprints of running tasks, per buffer column."""
    if not len(start):
        return np.zeros(footprint.shape[1], np.int64)
    times = np.concatenate([start, end])
    kind = np.concatenate([np.ones(len(start), np.int64), np.zeros(len(end), np.int64)])
    delta = np.concatenate([footprint, -footprint])
    order = np.lexsort((kind, times))           # at equal times, ends (0) before starts (1)
    return np.maximum(np.cumsum(delta[order], axis=0).max(axis=0), 0)
