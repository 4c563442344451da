"""Dependency tokens from memory hazards.

Lowerings emit instructions without ``wait`` / ``signal`` masks.
:func:`insert_tokens` then derives them from what each instruction reads
and writes (:func:`satc.backends.sat.access.accesses`): an instruction
must follow every earlier instruction on another engine that wrote bytes
it reads (RAW), or read or wrote bytes it writes (WAR, WAW). Memory is
tracked in granules of :data:`GRANULE` bytes, coarser in memories of more
than :data:`MAX_GRANULES` of them (:func:`granule`: 512 B for a 335 MB
DRAM image), a conservative over-approximation: sharing a granule counts
as overlap. Queues are in order, so per engine only the latest conflicting
instruction matters, and only if the new one does not already follow it
transitively (vector clocks over the engines).

Finding it: the instructions of engine ``o`` that the new one does not yet
follow are the tail of ``o``'s queue after its clock entry -- a handful in
compiled programs. :func:`insert_tokens` scans up to :data:`WINDOW` of them,
newest first (page masks of every access reject most pairs before their
granule spans are compared); a longer tail is answered by granule tables
(:class:`HazardTracker`), filled with that engine's instructions only when
such a query first needs them, so the cost per instruction stays bounded.

Each needed edge ``i -> j`` becomes one token: ``signal`` bit of j's
engine on i, ``wait`` bit of i's engine on j. Pairing stays FIFO-consistent
because a new edge always joins the newest waiter with a producer after
every producer already paired on that engine pair (an older edge to a later
producer would already cover it). Every wait refers to an earlier
instruction, so the program cannot deadlock.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from satc.backends.sat.access import Access, accesses
from satc.backends.sat.isa import ENGINE_NUMBER, ENGINES, Instruction

GRANULE = 32             # bytes per tracked granule (the smallest)
MAX_GRANULES = 1 << 20   # per memory space: larger spaces (DRAM) get coarser granules
COARSE = 256             # granules per entry of the coarse tables (HazardTracker)
PAGES = 256              # bits per memory space in an access's page mask
WINDOW = 32              # another engine's unordered instructions scanned one by one
_MAX = np.maximum.reduce


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
    :data:`COARSE` granules (the latest of its granules: an engine's records
    arrive in its queue order, so its indices only grow and a record sets
    both); a query reads the coarse entries first and refines only where they
    are later than what the instruction already follows. :meth:`masks` gives
    page masks that rule out a pair of instructions without any table.
    """

    def __init__(self, sizes: dict[str, int]) -> None:
        self.gran = {s: granule(b) for s, b in sizes.items()}
        n = {s: -(-b // self.gran[s]) for s, b in sizes.items()}
        e = len(ENGINES)
        self.fine = {s: (np.full((e, k), -1, np.int32), np.full((e, k), -1, np.int32))
                     for s, k in n.items()}                 # (last write, last read)
        self.coarse = {s: (np.full((e, -(-k // COARSE)), -1, np.int32),
                           np.full((e, -(-k // COARSE)), -1, np.int32)) for s, k in n.items()}
        self.page = {s: -(-k // PAGES) for s, k in n.items()}        # granules per page bit
        self.bit = {s: PAGES * i for i, s in enumerate(sorted(n))}   # the space's first bit

    def spans(self, acc: Sequence[Access]) -> list[tuple[str, int, int, bool]]:
        """(space, first granule, end granule, write) of each access."""
        out = []
        for a in acc:
            lo, hi = a.extent
            g = self.gran[a.space]
            out.append((a.space, lo // g, -(-hi // g), a.write))
        return out

    def masks(self, spans: Sequence[tuple[str, int, int, bool]]) -> tuple[int, int]:
        """(written, touched) page bit masks of ``spans``: two accesses can conflict only where
        one's written mask meets the other's touched mask."""
        written = touched = 0
        for s, g0, g1, w in spans:
            p, b = self.page[s], self.bit[s]
            lo, hi = b + g0 // p, b + (g1 - 1) // p
            m = ((1 << (hi - lo + 1)) - 1) << lo
            touched |= m
            if w:
                written |= m
        return written, touched

    def latest(self, engine: int, spans: Sequence[tuple[str, int, int, bool]], after: int) -> int:
        """The latest instruction recorded on engine number ``engine`` that conflicts with
        ``spans`` (RAW, and WAR / WAW for written spans), or -1 when none is later than
        ``after``: the coarse entries first, the granules only where those are later."""
        c = -1
        for s, g0, g1, w in spans:
            writes, reads = self.coarse[s]
            c0, c1 = g0 // COARSE, -(-g1 // COARSE)
            c = max(c, int(_MAX(writes[engine, c0:c1])))
            if w:
                c = max(c, int(_MAX(reads[engine, c0:c1])))
        if c <= after:
            return -1
        best = -1
        for s, g0, g1, w in spans:
            writes, reads = self.fine[s]
            best = max(best, int(_MAX(writes[engine, g0:g1])))
            if w:
                best = max(best, int(_MAX(reads[engine, g0:g1])))
        return best if best > after else -1

    def deps(self, spans: Sequence[tuple[str, int, int, bool]], after: Sequence[int]) -> list[int]:
        """Per engine, the latest earlier instruction that conflicts with ``spans``, where it is
        later than that engine's ``after`` entry (:meth:`latest` of every engine)."""
        found = (self.latest(o, spans, a) for o, a in enumerate(after))
        return [i for i in found if i >= 0]

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
    n, ne = len(instrs), len(ENGINES)
    engines = [ENGINE_NUMBER[ins.engine] for ins in instrs]
    spans: list[list[tuple[str, int, int, bool]]] = [[]] * n
    written, touched = [0] * n, [0] * n
    queues: list[list[int]] = [[] for _ in ENGINES]
    recorded = [0] * ne                        # per engine: its queue prefix in the tracker's tables
    clocks: list[list[int]] = []               # per instruction: latest index per engine it follows
    waits, signals = [0] * n, [0] * n
    for j, ins in enumerate(instrs):
        e = engines[j]
        sp = spans[j] = tracker.spans(accesses(ins))
        wm, am = written[j], touched[j] = tracker.masks(sp)
        own = queues[e]
        vc = list(clocks[own[-1]]) if own else [-1] * ne
        found = []
        for o, q in enumerate(queues):
            after, k = vc[o], len(q) - 1
            if o == e or k < 0 or q[k] <= after:
                continue
            stop = max(k - WINDOW, -1)
            while k > stop and q[k] > after:
                i = q[k]
                if (wm & touched[i] or am & written[i]) and _conflict(sp, spans[i]):
                    found.append(i)
                    break
                k -= 1
            else:
                if k >= 0 and q[k] > after:      # a long tail: the tables, filled up to now
                    for i in q[recorded[o]:]:
                        tracker.record(i, o, spans[i])
                    recorded[o] = len(q)
                    i = tracker.latest(o, sp, after)
                    if i >= 0:
                        found.append(i)
        for i in sorted(found, reverse=True):
            src = engines[i]
            if vc[src] >= i:
                continue
            signals[i] |= 1 << e
            waits[j] |= 1 << src
            vc = list(map(max, vc, clocks[i]))
        vc[e] = j
        clocks.append(vc)
        own.append(j)
    return [ins if not (waits[j] or signals[j]) else ins.with_tokens(waits[j], signals[j])
            for j, ins in enumerate(instrs)]


def _conflict(a: Sequence[tuple[str, int, int, bool]], b: Sequence[tuple[str, int, int, bool]]) -> bool:
    """Whether two instructions' granule spans overlap in one memory, one of the two writing."""
    for s, g0, g1, w in a:
        for t, h0, h1, v in b:
            if (w or v) and g0 < h1 and h0 < g1 and s == t:
                return True
    return False


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
        vc[ENGINE_NUMBER[e]] = j
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
            if clocks[j][ENGINE_NUMBER[instrs[i].engine]] < i:
                bad.append((i, j))
        tracker.record(j, ENGINE_NUMBER[ins.engine], spans)
    return bad
