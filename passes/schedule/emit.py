"""Schedule -> program: queue order from start times, and the dependency tokens it needs.

Queues: each engine's instructions in the order of their scheduled starts;
the instruction stream lists all tasks by (start, engine, task id), so the
emulator's issue order follows the schedule. Nops of the original program
are dropped (no nops are needed, see below).

Tokens: every dependency edge ``u -> v`` (hazards, kept token edges and the
schedule's capacity chains) on different engines ``A -> B`` must become a
token, and FIFO semantics pair the k-th signal ``A -> B`` with the k-th wait
of ``B`` on ``A``; one instruction pushes or pops at most one token per
engine pair. Per engine pair the edges are thinned without losing any
ordering (positions are queue positions):

1. per consumer, keep only its latest producer on each engine (an earlier
   producer ends before the latest one starts: in-order queue);
2. per producer, keep only its earliest consumer on each engine (later
   consumers start after it: in-order queue);
3. sweep the consumers in queue order and keep an edge only if its producer
   is later than every producer kept so far (otherwise ``u <= u_kept ->
   v_kept <= v`` already orders it).

What is left is strictly increasing in both producer and consumer position,
so the k-th signal and the k-th wait are the two ends of the k-th edge: one
signal bit and one wait bit per edge, no nops. Thinning keeps every lag: all
instructions of one engine have the same ready delay (``dram_latency_cycles``
for the load and store engines, 0 for the others), so an earlier producer's
token is never later than the kept one's. The cycle model of the result
starts every instruction when its queue predecessor is done and its tokens
have arrived (a load / store's token ``dram_latency_cycles`` after its end:
the edge's lag), and a load / store also when the DMA before it in the stream
-- the one before it in start order -- has released the shared DRAM channel:
the left-shifted schedule (:func:`satc.passes.schedule.listsched.compact`)
exactly.
"""

from __future__ import annotations

import numpy as np

from satc.backends.sat.isa import ENGINES, Instruction
from satc.backends.sat.program import Program
from satc.passes.schedule.listsched import asap
from satc.passes.schedule.scheduler import ScheduleResult
from satc.passes.schedule.taskgraph import TaskGraph, build_task_graph


def token_edges(graph: TaskGraph, starts: np.ndarray,
                extra_edges: tuple[tuple[int, int], ...] = ()) -> list[tuple[int, int]]:
    """The cross-engine edges (u, v) that become tokens, after the three thinning steps."""
    eng = graph.engine_ids
    order = np.lexsort((np.arange(graph.n), starts))
    pos = np.zeros(graph.n, np.int64)
    for e in range(len(ENGINES)):
        on = order[eng[order] == e]
        pos[on] = np.arange(len(on))
    latest: dict[tuple[int, int], int] = {}          # (consumer, producer engine) -> producer
    for u, v in graph.edges() + list(extra_edges):
        if eng[u] != eng[v]:
            k = (v, int(eng[u]))
            if k not in latest or pos[u] > pos[latest[k]]:
                latest[k] = u
    earliest: dict[tuple[int, int], int] = {}        # (producer, consumer engine) -> consumer
    for (v, _), u in latest.items():
        k = (u, int(eng[v]))
        if k not in earliest or pos[v] < pos[earliest[k]]:
            earliest[k] = v
    pairs: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for (u, _), v in earliest.items():
        pairs.setdefault((int(eng[u]), int(eng[v])), []).append((u, v))
    kept = []
    for edges in pairs.values():
        top = -1
        for u, v in sorted(edges, key=lambda x: pos[x[1]]):
            if pos[u] > top:
                kept.append((u, v))
                top = pos[u]
    return sorted(kept)


def _write(graph: TaskGraph, starts: np.ndarray, extra_edges: tuple[tuple[int, int], ...],
           stream: np.ndarray) -> Program:
    prog = graph.program
    eng = graph.engine_ids
    wait = np.zeros(graph.n, np.int64)
    signal = np.zeros(graph.n, np.int64)
    for u, v in token_edges(graph, starts, extra_edges):
        signal[u] |= 1 << int(eng[v])
        wait[v] |= 1 << int(eng[u])
    out = []
    for t in stream:
        ins = prog.instructions[graph.tasks[t].index]
        out.append(Instruction.from_raw(ins.op, {**ins.raw, "wait": int(wait[t]),
                                                 "signal": int(signal[t])}))
    return Program(prog.config, tuple(out), prog.regions, prog.dram_size)


def emit_program(result: ScheduleResult) -> Program:
    """The program that runs ``result``: same regions, instructions in schedule order with tokens.

    Instruction k of the new program is task ``result.stream_order()[k]``
    (program index ``result.graph.tasks[t].index``).
    """
    return _write(result.graph, result.starts, result.extra_edges, np.array(result.stream_order()))


def retoken(program: Program) -> Program:
    """``program`` with each queue in its own order and the minimal hazard tokens.

    Useful for instruction streams written without tokens: the result runs
    each engine's queue as written, as early as the true hazards allow. The
    instructions stay in reference order (program order for a stream without
    tokens), nops dropped.
    """
    graph = build_task_graph(program)
    starts = asap(graph, np.arange(graph.n))
    return _write(graph, starts, (), np.arange(graph.n))
