"""Independent schedule checker.

Validates start times for the instructions of a program without using the
task graph or any scheduler: it replays the instructions in the program's
reference order (the emulator's issue order) over the exact bytes each one
touches (:func:`satc.passes.schedule.taskgraph.byte_intervals` of
:func:`satc.backends.sat.access.accesses`, cut into elementary segments by
``segment_indices``; both are tested against brute force and are the only
code it shares with the graph), keeping per byte the end time of its last
writer and the latest end of its readers since, and requires

* every non-nop instruction scheduled exactly once, at a start >= 0, for its
  cycle-model duration;
* data hazards: a read starts after the last earlier write of its bytes
  ended (RAW); a write starts after the last earlier write (WAW) and every
  read since it (WAR) ended; "ended" means results ready for the other
  engine: a load / store's end plus ``dram_latency_cycles`` when the two
  instructions run on different engines (its own engine's next instruction
  does not wait), every other instruction's end;
* engine exclusivity: an engine runs one instruction at a time; with
  ``dram_shared`` the load and store instructions together hold one DRAM
  channel, one at a time;
* buffer capacity: the footprints (distinct bytes touched) of the
  instructions running at any instant sum to at most each buffer's budget.

The first violation raises :class:`satc.errors.ScheduleError` naming the
instruction(s) and the constraint.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from satc.backends.sat.access import accesses
from satc.backends.sat.cost_model import instruction_cycles, ready_delay, uses_channel
from satc.backends.sat.dispatch import issue_order
from satc.backends.sat.isa import BUFFERS, ENGINES
from satc.backends.sat.program import Program
from satc.errors import ScheduleError
from satc.passes.schedule.taskgraph import byte_intervals, segment_indices, sorted_distinct


def _name(program: Program, i: int) -> str:
    return f"instruction {i} ({program.instructions[i].op} on {program.instructions[i].engine})"


def check_schedule(program: Program, starts: Mapping[int, int],
                   capacity: Mapping[str, int] | None = None) -> int:
    """Check ``starts`` ({instruction index: start cycle}) for ``program``; returns the makespan.

    ``capacity``: budget in bytes per buffer (default: the buffer sizes).
    """
    instrs = program.instructions
    cfg = program.config
    want = {i for i, ins in enumerate(instrs) if ins.op != "nop"}
    if set(starts) != want:
        missing, extra = sorted(want - set(starts)), sorted(set(starts) - want)
        raise ScheduleError(f"schedule does not cover the program: missing instructions {missing[:10]}, "
                            f"unknown or nop instructions {extra[:10]}")
    start = {i: int(s) for i, s in starts.items()}
    end = {i: start[i] + instruction_cycles(instrs[i], cfg) for i in start}
    for i, s in start.items():
        if s < 0:
            raise ScheduleError(f"{_name(program, i)} starts at negative cycle {s}")
    _check_engines(program, start, end)
    cut: dict[tuple, np.ndarray] = {}          # identical accesses share their intervals
    touched = {}
    for i in start:
        touched[i] = []
        for a in accesses(instrs[i]):
            if a.bytes_key not in cut:
                cut[a.bytes_key] = byte_intervals(a)
            touched[i].append((a.space, a.write, cut[a.bytes_key]))
    _check_hazards(program, start, end, touched)
    _check_capacity(program, start, end, touched, dict(cfg.buffer_bytes, **(capacity or {})))
    return max(end.values(), default=0)


def _check_engines(program: Program, start: dict[int, int], end: dict[int, int]) -> None:
    cfg = program.config
    resources = [(f"engine {e}", lambda ins, e=e: ins.engine == e) for e in ENGINES]
    if cfg.dram_shared:
        resources.append(("the shared DRAM channel", lambda ins: uses_channel(ins, cfg)))
    for what, member in resources:
        on = sorted((start[i], end[i], i) for i in start if member(program.instructions[i]))
        for (s0, e0, i0), (s1, _, i1) in zip(on, on[1:]):
            if s1 < e0:
                raise ScheduleError(f"{what} runs two instructions at once: {_name(program, i0)} "
                                    f"[{s0}, {e0}) and {_name(program, i1)} from {s1}")


def _check_hazards(program: Program, start: dict[int, int], end: dict[int, int],
                   touched: dict[int, list]) -> None:
    distinct = {id(iv): (sp, iv) for acc in touched.values() for sp, _, iv in acc}
    spaces = {sp for sp, _ in distinct.values()}
    bounds = {sp: sorted_distinct(np.concatenate([iv.ravel() for s, iv in distinct.values() if s == sp]))
              for sp in spaces}
    segs_of = {k: segment_indices(bounds[sp], iv) for k, (sp, iv) in distinct.items()}
    nseg = {sp: max(len(b) - 1, 0) for sp, b in bounds.items()}
    # per segment: the last writer's end, its ready time (end + delay) and engine; the latest
    # ready time of the readers since (a load / store never reads what an instruction on its
    # own engine later writes, so a reader's ready time is exact for WAR)
    cfg = program.config
    instrs = program.instructions
    eng_of = {e: k for k, e in enumerate(ENGINES)}
    w_end = {sp: np.zeros(k, np.int64) for sp, k in nseg.items()}
    w_ready = {sp: np.zeros(k, np.int64) for sp, k in nseg.items()}
    w_eng = {sp: np.full(k, -1, np.int64) for sp, k in nseg.items()}
    w_by = {sp: np.full(k, -1, np.int64) for sp, k in nseg.items()}
    r_end = {sp: np.zeros(k, np.int64) for sp, k in nseg.items()}
    r_by = {sp: np.full(k, -1, np.int64) for sp, k in nseg.items()}
    for i in issue_order(instrs):
        if i not in start:
            continue
        ei = eng_of[instrs[i].engine]
        ready_i = end[i] + ready_delay(instrs[i], cfg)
        segs = [(sp, w, segs_of[id(iv)]) for sp, w, iv in touched[i]]
        for sp, w, ix in segs:
            if not ix.size:
                continue
            need_w = np.where(w_eng[sp][ix] == ei, w_end[sp][ix], w_ready[sp][ix])
            checks = [("RAW" if not w else "WAW", need_w, w_by)] + ([("WAR", r_end[sp][ix], r_by)] if w else [])
            for kind, need, by in checks:
                if need.max() > start[i]:
                    k = ix[int(need.argmax())]
                    j = int(by[sp][k])
                    raise ScheduleError(
                        f"{kind} hazard on {sp} bytes from {bounds[sp][k]}: {_name(program, i)} starts "
                        f"at {start[i]} before {_name(program, j)} ends (results ready) at {int(need.max())}")
        for sp, w, ix in segs:
            if not w:
                later = r_end[sp][ix] < ready_i
                r_end[sp][ix[later]] = ready_i
                r_by[sp][ix[later]] = i
        for sp, w, ix in segs:
            if w:
                w_end[sp][ix] = end[i]
                w_ready[sp][ix] = ready_i
                w_eng[sp][ix] = ei
                w_by[sp][ix] = i
                r_end[sp][ix] = 0
                r_by[sp][ix] = -1


def _union_bytes(iv: np.ndarray) -> int:
    """Number of distinct bytes in the union of (k, 2) half-open intervals."""
    if not len(iv):
        return 0
    iv = iv[np.argsort(iv[:, 0], kind="stable")]
    reach = np.maximum.accumulate(iv[:, 1])
    prev = np.concatenate(([iv[0, 0]], reach[:-1]))        # furthest byte covered before each
    return int(np.maximum(iv[:, 1] - np.maximum(iv[:, 0], prev), 0).sum())


def _check_capacity(program: Program, start: dict[int, int], end: dict[int, int],
                    touched: dict[int, list], budget: dict[str, int]) -> None:
    for b in BUFFERS:
        events = []
        for i, acc in touched.items():
            ivs = [iv for sp, _, iv in acc if sp == b]
            size = _union_bytes(np.concatenate(ivs)) if ivs else 0
            if size:
                events += [(end[i], 0, -size, i), (start[i], 1, size, i)]
        used = 0
        for t, _, delta, i in sorted(events):
            used += delta
            if used > budget[b]:
                raise ScheduleError(f"{b} buffer over budget at cycle {t}: {_name(program, i)} starts "
                                    f"with {used} bytes in use by running instructions, budget {budget[b]}")
