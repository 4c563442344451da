"""Dependency tokens from memory hazards.

Lowerings emit instructions without ``wait`` / ``signal`` masks.
:func:`insert_tokens` then derives them from what each instruction reads
and writes (:func:`satc.backends.sat.access.accesses`): an instruction
must follow every earlier instruction on another engine that wrote bytes
it reads (RAW), or read or wrote bytes it writes (WAR, WAW). Memory is
tracked in granules of :data:`GRANULE` bytes, coarser in memories of more
than :data:`MAX_GRANULES` of them (:func:`granule`: 512 B for a 335 MB
DRAM image), per engine (a conservative over-approximation: sharing a
granule counts as overlap), so only the latest conflicting instruction of
each engine matters (queues are in order).

Each needed edge ``i -> j`` becomes one token: ``signal`` bit of j's
engine on i, ``wait`` bit of i's engine on j -- unless j already follows i
transitively (vector clocks over the engines), which removes most edges.
Pairing stays FIFO-consistent because a new edge always joins the newest
waiter with a producer after every producer already paired on that engine
pair (an older edge to a later producer would already cover it). Every
wait refers to an earlier instruction, so the program cannot deadlock.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from satc.backends.sat.access import Access, accesses, carry_accesses
from satc.backends.sat.isa import ENGINES, Instruction

GRANULE = 32             # bytes per tracked granule (the smallest)
MAX_GRANULES = 1 << 20   # per memory space: larger spaces (DRAM) get coarser granules
COARSE = 256             # granules per entry of the coarse tables (HazardTracker)
_MAX = np.maximum.reduce
_E = {e: i for i, e in enumerate(ENGINES)}


def granule(nbytes: int) -> int:
    """Tracking granule of a memory space of ``nbytes``: GRANULE, doubled until the space
    has at most MAX_GRANULES of them (keeps the tables small for GiB-sized DRAM images)."""
    g = GRANULE
    while -(-nbytes // g) > MAX_GRANULES:
        g *= 2
    return g


class HazardTracker:
    """Latest reader / writer per engine of every memory granule.

    Beside the granule tables, coarse tables keep the same per run of
    :data:`COARSE` granules (the latest of its granules: indices only grow, so
    a record sets both); a query reads the coarse entries first and refines
    only the engines they do not rule out (most are already ordered).
    """

    def __init__(self, sizes: dict[str, int]) -> None:
        self.gran = {s: granule(b) for s, b in sizes.items()}
        n = {s: -(-b // self.gran[s]) for s, b in sizes.items()}
        e = len(ENGINES)
        self.fine = {s: (np.full((e, k), -1, np.int32), np.full((e, k), -1, np.int32))
                     for s, k in n.items()}                 # (last write, last read)
        self.coarse = {s: (np.full((e, -(-k // COARSE)), -1, np.int32),
                           np.full((e, -(-k // COARSE)), -1, np.int32)) for s, k in n.items()}

    def spans(self, acc: Sequence[Access]) -> list[tuple[str, int, int, bool]]:
        """(space, first granule, end granule, write) of each access."""
        out = []
        for a in acc:
            lo, hi = a.extent
            g = self.gran[a.space]
            out.append((a.space, lo // g, -(-hi // g), a.write))
        return out

    def deps(self, spans: Sequence[tuple[str, int, int, bool]], after: Sequence[int]) -> list[int]:
        """Per engine, the latest earlier instruction that conflicts with ``spans`` (RAW, and
        WAR / WAW for written spans), where it is later than that engine's ``after`` entry."""
        coarse = None
        for s, g0, g1, w in spans:
            writes, reads = self.coarse[s]
            c0, c1 = g0 // COARSE, -(-g1 // COARSE)
            m = _MAX(writes[:, c0:c1], axis=1)
            if w:
                np.maximum(m, _MAX(reads[:, c0:c1], axis=1), out=m)
            coarse = m if coarse is None else np.maximum(coarse, m, out=coarse)
        out = []
        for o, c in enumerate(coarse.tolist() if coarse is not None else ()):
            if c > after[o]:
                best = -1
                for s, g0, g1, w in spans:
                    writes, reads = self.fine[s]
                    best = max(best, int(_MAX(writes[o, g0:g1])))
                    if w:
                        best = max(best, int(_MAX(reads[o, g0:g1])))
                if best > after[o]:
                    out.append(best)
        return out

    def record(self, index: int, engine: int, spans: Sequence[tuple[str, int, int, bool]]) -> None:
        """Note what instruction ``index`` (on engine number ``engine``, its place in
        ``ENGINES``) reads and writes."""
        for s, g0, g1, w in spans:
            self.fine[s][0 if w else 1][engine, g0:g1] = index
            self.coarse[s][0 if w else 1][engine, g0 // COARSE:-(-g1 // COARSE)] = index


def insert_tokens(instrs: Sequence[Instruction], sizes: dict[str, int]) -> list[Instruction]:
    """``instrs`` with wait / signal masks that order every memory hazard.

    ``sizes``: bytes of every memory space (``'dram'`` and the buffers).
    """
    tracker = HazardTracker(sizes)
    engines = [_E[ins.engine] for ins in instrs]
    clocks: list[list[int]] = []               # per instruction: latest index per engine it follows
    last_on = [-1] * len(ENGINES)
    waits = [0] * len(instrs)
    signals = [0] * len(instrs)
    for j, ins in enumerate(instrs):
        e = engines[j]
        spans = tracker.spans(accesses(ins))
        prev = last_on[e]
        vc = list(clocks[prev]) if prev >= 0 else [-1] * len(ENGINES)
        for i in sorted(tracker.deps(spans, vc), reverse=True):   # own engine: i <= vc[e]
            src = engines[i]
            if vc[src] >= i:
                continue
            signals[i] |= 1 << e
            waits[j] |= 1 << src
            vc = list(map(max, vc, clocks[i]))
        vc[e] = j
        clocks.append(vc)
        last_on[e] = j
        tracker.record(j, e, spans)
    return [ins if not (waits[j] or signals[j]) else
            carry_accesses(ins, ins.with_tokens(waits[j], signals[j]))
            for j, ins in enumerate(instrs)]


def happens_before(instrs: Sequence[Instruction]) -> list[np.ndarray]:
    """Per instruction, the latest index on each engine it is ordered after by queues and tokens.

    Replays the token FIFOs in program order (for checking a program's
    ordering independently of how its tokens were made).
    """
    fifo: dict[tuple[str, str], list[int]] = {}
    heads: dict[tuple[str, str], int] = {}
    last_on = {e: -1 for e in ENGINES}
    clocks: list[np.ndarray] = []
    for j, ins in enumerate(instrs):
        e = ins.engine
        prev = last_on[e]
        vc = clocks[prev].copy() if prev >= 0 else np.full(len(ENGINES), -1, np.int64)
        for src in ins.wait:
            q = fifo.setdefault((src, e), [])
            h = heads.get((src, e), 0)
            if h >= len(q):
                raise ValueError(f"instruction {j} waits for a token from {src} that no earlier "
                                 "instruction pushes")
            np.maximum(vc, clocks[q[h]], out=vc)
            heads[(src, e)] = h + 1
        vc[_E[e]] = j
        clocks.append(vc)
        for dst in ins.signal:
            fifo.setdefault((e, dst), []).append(j)
        last_on[e] = j
    return clocks


def unordered_hazards(instrs: Sequence[Instruction], sizes: dict[str, int]) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, that conflict in memory but are not ordered: empty for a correct program."""
    clocks = happens_before(instrs)
    tracker = HazardTracker(sizes)
    bad = []
    for j, ins in enumerate(instrs):
        spans = tracker.spans(accesses(ins))
        for i in tracker.deps(spans, [-1] * len(ENGINES)):
            if clocks[j][_E[instrs[i].engine]] < i:
                bad.append((i, j))
        tracker.record(j, _E[ins.engine], spans)
    return bad
