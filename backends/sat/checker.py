"""Program checker: what must hold before a SAT program runs or is scheduled.

:func:`check_program` checks a program on its own -- independently of how
codegen or the scheduler placed its tokens -- and raises
:class:`~satc.errors.ProgramCheckError` naming the first instruction at fault:

* fields: every instruction is valid on the program's config
  (:func:`satc.backends.sat.access.check`);
* tokens: the wait / signal FIFOs never deadlock and are balanced (no token
  is left in a FIFO after the step, where it would be popped by the next);
* memory: every access (:func:`satc.backends.sat.access.accesses`) is
  aligned to its element, lies inside its memory, touches at most as many
  elements as the memory holds, and a write never hits one byte twice;
* work: the MACs and elements the program implies are bounded
  (:data:`MAX_MACS`, :data:`MAX_ELEMENTS`) -- a few bytes of fields cannot
  stand for hours of emulation;
* races: every pair of accesses on *different* engines that touch a common
  byte of the same memory, at least one of them a write (RAW, WAR, WAW), is
  ordered by the happens-before relation of the engine queues and the token
  FIFOs -- never by program order alone. Happens-before comes from replaying
  the FIFOs: the k-th pop of ``src -> dst`` pairs with its k-th push, and a
  vector clock per instruction holds, per engine, the last instruction of
  that queue ordered before it.

The race check never looks at ordered pairs: engine ``o``'s instructions
issued before ``i`` but not ordered before it are exactly those at queue
positions ``clock[i][o] < p <= issued[i][o]`` (a handful in compiled
programs), so only their access pairs are examined -- vectorised, by extent
first, then on the exact row runs of the few whose extents meet. Cost:
linear in the instructions plus those unordered pairs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from satc.backends.sat.access import Access, accesses, check
from satc.backends.sat.dispatch import issue_order
from satc.backends.sat.isa import ENGINE_NUMBER, ENGINES, MASK_ENGINES, Instruction
from satc.backends.sat.program import Program

from satc.errors import EmulatorError, ProgramCheckError

#: Largest total GEMM multiply-accumulates of one program (one training step): about an hour of
#: emulation; a ResNet-50 ImageNet step at batch 256 is ~3e12.
MAX_MACS = 10 ** 13
#: Largest total elements read, written or computed by the non-GEMM instructions of one program.
MAX_ELEMENTS = 10 ** 12
#: Accesses with more row runs than this are compared by their extent (a conservative cover).
MAX_RUNS = 1 << 16
_BLOCK = 1 << 17          # instruction pairs examined per vectorised block of the race check
#: Most instruction pairs on different engines that no token orders (compiled ResNet-18: ~3e5),
#: a bound on the race check's time (about a minute).
MAX_UNORDERED = 2 * 10 ** 8


@dataclass(frozen=True)
class ProgramCheck:
    """What a passed check found: issue order, accesses and the program's implied work.

    ``order`` is the emulator's issue order (:func:`satc.backends.sat.dispatch.issue_order`),
    ``accesses[i]`` the tiles instruction ``i`` touches, ``macs`` / ``elements`` its work,
    ``pairs`` the access pairs of instructions on different engines that no token orders
    (each proven not to share a byte), ``seconds`` the time the check took.
    """

    order: tuple[int, ...]
    accesses: tuple[tuple[Access, ...], ...]
    macs: int
    elements: int
    pairs: int
    seconds: float


def check_program(program: Program) -> ProgramCheck:
    """Check ``program`` (see the module docstring); ProgramCheckError names the instruction.

    The result is cached on the program (programs are immutable), so the
    emulator, a session and the scheduler share one check.
    """
    cached = program.checked
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    instrs = program.instructions
    cfg = program.config
    for i, ins in enumerate(instrs):
        reason = check(ins, cfg)
        if reason:
            raise ProgramCheckError(f"instruction {i} ({ins.op}): {reason}")
    try:
        order = issue_order(instrs)
    except EmulatorError as e:
        raise ProgramCheckError(str(e)) from None
    _check_balanced(instrs)
    sizes = dict(cfg.buffer_bytes, dram=program.dram_size)
    acc = tuple(tuple(accesses(ins)) for ins in instrs)
    macs = elements = 0
    seen: set[tuple] = set()
    for i, ins in enumerate(instrs):
        for a in acc[i]:
            if (a.bytes_key, a.write) not in seen:       # the first instruction with a bad tile
                _check_access(i, ins, a, sizes[a.space])
                seen.add((a.bytes_key, a.write))
        m, el = _work(ins, acc[i])
        macs += m
        elements += el
    if macs > MAX_MACS or elements > MAX_ELEMENTS:
        raise ProgramCheckError(
            f"program implies {macs:.3g} GEMM MACs and {elements:.3g} other elements per run; "
            f"satc runs at most {MAX_MACS:.0e} MACs and {MAX_ELEMENTS:.0e} elements (a crafted or "
            "corrupt program?); fix: split the model's step or recompile it")
    pairs = _check_races(instrs, acc, order)
    result = ProgramCheck(tuple(order), acc, macs, elements, pairs, time.perf_counter() - t0)
    object.__setattr__(program, "checked", result)
    return result


# ---------------------------------------------------------------- tokens

def _check_balanced(instrs: Sequence[Instruction]) -> None:
    """Every token pushed is popped in the same run (issue_order proved every pop has a push)."""
    pushes: dict[tuple[str, str], list[int]] = {}
    pops: dict[tuple[str, str], int] = {}
    for i, ins in enumerate(instrs):
        for d in ins.signal:
            pushes.setdefault((ins.engine, d), []).append(i)
        for s in ins.wait:
            pops[(s, ins.engine)] = pops.get((s, ins.engine), 0) + 1
    for (s, d), who in sorted(pushes.items()):
        extra = len(who) - pops.get((s, d), 0)
        if extra > 0:
            i = who[-extra]
            raise ProgramCheckError(
                f"instruction {i} ({instrs[i].op}): signals {d}, but no later {d} instruction waits "
                f"on {s}: {extra} token(s) would stay in FIFO {s} -> {d} after the step and release "
                f"the next step too early; fix: remove the signal or add the matching wait")


def _clocks(instrs: Sequence[Instruction], order: Sequence[int]) -> tuple[list[int], list[list[int]]]:
    """(queue position of each instruction (from 1), its vector clock): per engine, the
    position of the last instruction of that queue ordered before it (0: none)."""
    n, ne = len(instrs), len(ENGINES)
    eng = [ENGINE_NUMBER[ins.engine] for ins in instrs]
    pos = [0] * n
    count = [0] * ne
    for i in range(n):
        count[eng[i]] += 1
        pos[i] = count[eng[i]]
    clocks: list[list[int]] = [[]] * n
    last = [-1] * ne
    fifo = [[[] for _ in range(ne)] for _ in range(ne)]        # fifo[src][dst]: pushers in order
    head = [[0] * ne for _ in range(ne)]
    for i in order:
        e = eng[i]
        vc = list(clocks[last[e]]) if last[e] >= 0 else [0] * ne
        raw = instrs[i].raw
        for src in MASK_ENGINES[raw["wait"]]:
            h = head[src][e]
            head[src][e] = h + 1
            vc = list(map(max, vc, clocks[fifo[src][e][h]]))
        vc[e] = pos[i]
        clocks[i] = vc
        last[e] = i
        for dst in MASK_ENGINES[raw["signal"]]:
            fifo[e][dst].append(i)
    return pos, clocks


# ---------------------------------------------------------------- memory and work

def _check_access(i: int, ins: Instruction, a: Access, size: int) -> None:
    where = f"instruction {i} ({ins.op}): {a.role} ({'write' if a.write else 'read'})"
    item = a.dtype.itemsize
    if a.offset % item:
        raise ProgramCheckError(f"{where}: misaligned access: {a.space} address {a.offset} is not a "
                                f"multiple of the {item}-byte element")
    lo, hi = a.extent
    if hi > size:
        kind = "out-of-bounds DRAM access" if a.space == "dram" else f"buffer overflow of the {a.space} buffer"
        raise ProgramCheckError(f"{where}: {kind}: bytes [{lo}, {hi}) but it holds {size} bytes")
    count = math.prod(a.shape)
    # a DMA may read bytes repeatedly (a stride-0 broadcast): its write side is bounded; an
    # operand of a compute engine may not stand for more elements than its memory holds
    if count * item > size and (a.write or ins.op not in ("load", "store")):
        raise ProgramCheckError(f"{where}: a {'x'.join(map(str, a.shape))} tile of {count * item} bytes "
                                f"in the {size}-byte {a.space} (strides {a.strides}): more elements than "
                                "the memory holds; fix: give each row its own bytes (row stride >= cols)")
    if a.write and _self_overlaps(a):
        raise ProgramCheckError(f"{where}: writes some {a.space} bytes twice (shape {a.shape}, byte "
                                f"strides {a.strides}); fix: a row stride of at least the row length")


def _self_overlaps(a: Access) -> bool:
    """Whether two elements of ``a`` share a byte (dims of size 1 aside)."""
    dims = sorted((s, d) for s, d in zip(a.strides, a.shape) if d > 1)
    span = a.dtype.itemsize
    for s, d in dims:
        if s < span:
            return True
        span = (d - 1) * s + span
    return False


def _work(ins: Instruction, acc: Sequence[Access]) -> tuple[int, int]:
    """(GEMM MACs, other elements) ``ins`` implies."""
    if ins.op == "gemm":
        return ins.mt * ins.nt * ins.k, 0
    elements = sum(math.prod(a.shape) for a in acc)
    if ins.op == "vec" and ins.kh:
        elements += math.prod(acc[-1].shape) * ins.kh * ins.kw     # pooling windows
    return 0, elements


# ---------------------------------------------------------------- races

def _runs(a: Access) -> np.ndarray:
    """The bytes ``a`` touches as sorted, merged ``[lo, hi)`` rows of an (k, 2) int64 array."""
    item = a.dtype.itemsize
    dims = [(d, s) for d, s in zip(a.shape, a.strides) if d > 1]
    run = item
    while dims and dims[-1][1] == run:            # contiguous innermost dims: one run per row
        d, _ = dims.pop()
        run *= d
    if not dims:
        return np.array([[a.offset, a.offset + run]], np.int64)
    if math.prod(d for d, _ in dims) > MAX_RUNS:
        return np.array([a.extent], np.int64)
    starts = np.array([a.offset], np.int64)
    for d, s in dims:
        starts = (starts[:, None] + np.arange(d, dtype=np.int64) * s).ravel()
    span, ordered = run, True
    for d, s in reversed(dims):                   # each stride clears the span of the dims inside
        ordered &= s >= span
        span = (d - 1) * s + span
    if ordered:                                   # rows ascending and disjoint already
        return np.stack([starts, starts + run], axis=1)
    starts.sort()
    reach = np.maximum.accumulate(starts + run)
    new = np.ones(len(starts), bool)
    new[1:] = starts[1:] > reach[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(starts)) - 1
    return np.stack([starts[first], reach[last]], axis=1)


def _overlap(a: Access, b: Access, runs: dict[tuple, np.ndarray]) -> bool:
    """Whether ``a`` and ``b`` (same memory, overlapping extents) share a byte."""
    ra = runs.get(a.bytes_key)
    if ra is None:
        ra = runs[a.bytes_key] = _runs(a)
    rb = runs.get(b.bytes_key)
    if rb is None:
        rb = runs[b.bytes_key] = _runs(b)
    if len(ra) < len(rb):
        ra, rb = rb, ra
    k = np.searchsorted(ra[:, 1], rb[:, 0], side="right")     # first run of a ending after each b start
    inside = k < len(ra)
    return bool(np.any(ra[k[inside], 0] < rb[inside, 1]))


def _check_races(instrs: Sequence[Instruction], acc: Sequence[Sequence[Access]],
                 order: Sequence[int]) -> int:
    """Refuse the first access (in issue order) that shares a byte, one of the two writing, with
    an access of another engine that no token orders it after; returns the number of unordered
    cross-engine access pairs proven disjoint.

    Engine ``o``'s instructions issued before ``i`` but not ordered before it are exactly those
    at queue positions ``clock[i][o] < p <= issued[i][o]``; only those pairs are examined.
    """
    n, ne = len(instrs), len(ENGINES)
    pos, clocks = _clocks(instrs, order)
    eng = np.array([ENGINE_NUMBER[ins.engine] for ins in instrs], np.int64)
    issued = np.zeros((n, ne), np.int64)         # per engine, its instructions issued before i
    rank = np.zeros(n, np.int64)
    count = [0] * ne
    engine_of = eng.tolist()
    for r, i in enumerate(order):
        issued[i] = count
        rank[i] = r
        count[engine_of[i]] += 1
    lows = np.array(clocks, np.int64).reshape(n, ne)
    width = np.maximum(issued - lows, 0)
    width[np.arange(n), eng] = 0
    by_pos = np.argsort(eng * (n + 1) + np.array(pos, np.int64), kind="stable")   # engine, position
    first = np.concatenate(([0], np.cumsum(np.bincount(eng, minlength=ne))))
    # every access as flat arrays, instruction by instruction
    k_acc = np.array([len(r) for r in acc], np.int64)
    acc_first = np.concatenate(([0], np.cumsum(k_acc)))
    flat = [a for r in acc for a in r]
    spaces = {s: k for k, s in enumerate(sorted({a.space for a in flat}))}
    sp = np.array([spaces[a.space] for a in flat], np.int64)
    ext = np.array([a.extent for a in flat], np.int64).reshape(-1, 2)
    wr = np.array([a.write for a in flat], bool)
    # candidate instruction pairs (i, j): j on another engine, issued before i, unordered;
    # in issue order of i, so the first race found is the first in issue order
    ii, oo = np.nonzero(width)
    by_rank = np.argsort(rank[ii], kind="stable")
    ii, oo = ii[by_rank], oo[by_rank]
    w = width[ii, oo]
    if w.sum() > MAX_UNORDERED:
        i = int(ii[np.searchsorted(np.cumsum(w), MAX_UNORDERED)])
        raise ProgramCheckError(
            f"instruction {i} ({instrs[i].op} on {instrs[i].engine}): by here, {MAX_UNORDERED} pairs "
            "of instructions on different engines are unordered by any token (satc checks at most "
            "that many for races); fix: order the engines with wait / signal tokens")
    runs: dict[tuple, np.ndarray] = {}
    examined, lo, cum = 0, 0, np.cumsum(w)
    while lo < len(ii):                          # blocks of about _BLOCK instruction pairs
        hi = max(int(np.searchsorted(cum, (cum[lo - 1] if lo else 0) + _BLOCK)), lo + 1)
        bw = w[lo:hi]
        rep = np.repeat(np.arange(lo, hi), bw)
        step = np.arange(int(bw.sum())) - np.repeat(np.cumsum(bw) - bw, bw)
        pi = ii[rep]
        pj = by_pos[first[oo[rep]] + lows[pi, oo[rep]] + step]
        m = k_acc[pi] * k_acc[pj]
        rep = np.repeat(np.arange(len(pi)), m)              # their access pairs
        local = np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m)
        nb = k_acc[pj][rep]
        ai = acc_first[pi[rep]] + local // nb
        bi = acc_first[pj[rep]] + local % nb
        hit = (sp[ai] == sp[bi]) & (wr[ai] | wr[bi]) & (ext[ai, 0] < ext[bi, 1]) & (ext[bi, 0] < ext[ai, 1])
        for c in np.flatnonzero(hit):
            a, b = flat[ai[c]], flat[bi[c]]
            if _overlap(a, b, runs):
                raise ProgramCheckError(_race_message(instrs, int(pi[rep[c]]), a, int(pj[rep[c]])))
        examined += len(ai)
        lo = hi
    return examined


def _race_message(instrs: Sequence[Instruction], i: int, a: Access, j: int) -> str:
    ei, ej = instrs[i].engine, instrs[j].engine
    kind = "writes" if a.write else "reads"
    return (f"instruction {i} ({instrs[i].op} on {ei}): {kind} {a.role} at {a.space} bytes "
            f"[{a.extent[0]}, {a.extent[1]}), which instruction {j} ({instrs[j].op} on {ej}) also "
            f"touches (one of them writing), but no token orders the two: a race between engines; "
            f"fix: signal {ei} on instruction {j} (or a later {ej} instruction) and wait on {ej} in "
            f"instruction {i} (or an earlier {ei} one)")
