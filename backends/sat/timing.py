"""Cycle model of SAT programs (the tsim layer), separate from the emulator.

Each engine runs its own in-order queue; an instruction starts when its
engine is free and every token it waits for has been pushed (at the end of
the pushing instruction), and lasts :func:`instruction_cycles`. Every number
comes from the :class:`HardwareConfig`:

* every instruction: ``issue_cycles`` plus its body below;
* load / store: ``dram_latency_cycles + ceil(bytes / dram_bytes_per_cycle)``
  (each DMA engine sees the configured bandwidth);
* gemm: ``ksteps = ceil(k / multipliers_per_pe)`` dense, or
  ``ceil(ceil(k / M) / nm_groups_per_cycle)`` N:M (one group of M per USPE per
  cycle); ``fill = rows + cols`` (systolic fill and drain).

  - OS: each PE owns one output; ``ceil(mt/rows) * ceil(nt/cols)`` passes,
    each streaming ``body = ksteps + rows * os_drain_cycles_per_row``
    (results shift out).
  - WS: the stationary operand (the compressed one for N:M, else B) sits in
    the array, one k-step per PE row: ``K = ceil(ksteps/rows)`` k-slices
    times ``C = ceil(S/cols)`` column blocks of passes, each streaming
    ``body = rows * ws_preload_cycles_per_row + T``, where S is the
    stationary operand's outer size and T the streamed one's. Consecutive
    k-slices of one column block accumulate into the same outputs.

  Fill and drain (``fill``) depend on the pass order, set by the
  instruction's ``interleave`` bit (the compiler's interleave mapping):

  - ``interleave=0``: passes run back to back on dependent data, every pass
    waits for the previous one to drain: ``passes * (body + fill)``;
  - ``interleave=1``: consecutive passes go to independent output blocks
    (OS: every block; WS: column blocks innermost), so the pipeline fills
    once per instruction and a pass stalls only for the unfinished drain of
    the pass it accumulates onto: OS ``passes * body + fill``; WS
    ``passes * body + fill + (K - 1) * max(0, fill - (C - 1) * body)``.

  So OS pays per output tile and favours long k; WS pays per k-slice and
  favours a long streamed dimension (large batch).
* vec: ``vector_latency_cycles + ceil(work / vector_lanes)`` (work from the
  vector function table);
* wuve: ``wuve_latency_cycles + ceil(length / wuve_lanes)``;
* sore: ``sore_latency_cycles + ceil(groups / sore_lanes) * M * sore_cycles_per_element``;
* nop: ``issue_cycles`` only.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Sequence

from satc.backends.sat.config import HardwareConfig
from satc.backends.sat.dispatch import issue_order
from satc.backends.sat.isa import DTYPE_BYTES, ENGINES, Instruction
from satc.backends.sat.nmformat import groups
from satc.backends.sat.program import Program
from satc.backends.sat.vecfuncs import VEC_FUNC_BY_NAME, vec_work


@dataclass(frozen=True)
class TimelineEntry:
    """When one instruction ran: program index, engine, op, [start, end) in cycles."""

    index: int
    engine: str
    op: str
    start: int
    end: int


@dataclass(frozen=True)
class TimingReport:
    """Result of the cycle model for one program."""

    total_cycles: int
    busy_cycles: dict[str, int]
    utilisation: dict[str, float]
    stce_macs: int
    stce_dense_equiv_macs: int
    stce_mac_utilisation: float
    seconds: float
    timeline: tuple[TimelineEntry, ...]

    def summary(self) -> str:
        """A short table of total cycles and per-engine busy cycles / utilisation."""
        lines = [f"total cycles {self.total_cycles} ({self.seconds * 1e6:.2f} us)",
                 f"STCE MAC utilisation {self.stce_mac_utilisation:.1%} "
                 f"({self.stce_macs} multiplies, {self.stce_dense_equiv_macs} dense-equivalent MACs)",
                 f"{'engine':<8} {'busy':>12} {'util':>7}"]
        lines += [f"{e:<8} {self.busy_cycles[e]:>12} {self.utilisation[e]:>7.1%}" for e in ENGINES]
        return "\n".join(lines)


def gemm_macs(ins: Instruction) -> tuple[int, int]:
    """(multiplies executed, dense-equivalent MACs) of a gemm instruction."""
    dense = ins.mt * ins.nt * ins.k
    if ins.n == 0:
        return dense, dense
    return ins.mt * ins.nt * groups(ins.k, ins.m) * ins.n, dense


def gemm_cycles(ins: Instruction, cfg: HardwareConfig) -> int:
    """STCE cycles of one gemm (without issue_cycles); see the module docstring."""
    if ins.n == 0:
        ksteps = math.ceil(ins.k / cfg.multipliers_per_pe)
    else:
        ksteps = math.ceil(groups(ins.k, ins.m) / cfg.nm_groups_per_cycle)
    fill = cfg.rows + cfg.cols
    if ins.dataflow == "os":
        passes = math.ceil(ins.mt / cfg.rows) * math.ceil(ins.nt / cfg.cols)
        body = ksteps + cfg.rows * cfg.os_drain_cycles_per_row
        return passes * body + fill if ins.interleave else passes * (body + fill)
    a_stationary = ins.n > 0 and not ins.sparse_b
    stationary, streamed = (ins.mt, ins.nt) if a_stationary else (ins.nt, ins.mt)
    kslices, blocks = math.ceil(ksteps / cfg.rows), math.ceil(stationary / cfg.cols)
    body = cfg.rows * cfg.ws_preload_cycles_per_row + streamed
    if not ins.interleave:
        return kslices * blocks * (body + fill)
    return kslices * blocks * body + fill + (kslices - 1) * max(0, fill - (blocks - 1) * body)


def instruction_cycles(ins: Instruction, cfg: HardwareConfig) -> int:
    """Cycles ``ins`` occupies its engine (issue_cycles included)."""
    op = ins.op
    if op in ("load", "store"):
        nbytes = ins.planes * ins.rows * ins.cols * DTYPE_BYTES[ins.dtype]
        body = cfg.dram_latency_cycles + math.ceil(nbytes / cfg.dram_bytes_per_cycle)
    elif op == "gemm":
        body = gemm_cycles(ins, cfg)
    elif op == "vec":
        work = vec_work(VEC_FUNC_BY_NAME[ins.func], ins.rows, ins.cols, ins)
        body = cfg.vector_latency_cycles + math.ceil(work / cfg.vector_lanes)
    elif op == "wuve":
        body = cfg.wuve_latency_cycles + math.ceil(ins.length / cfg.wuve_lanes)
    elif op == "sore":
        outer, length = (ins.rows, ins.cols) if ins.axis == 1 else (ins.cols, ins.rows)
        ngroups = outer * groups(length, ins.m)
        body = cfg.sore_latency_cycles + math.ceil(ngroups / cfg.sore_lanes) * ins.m \
            * cfg.sore_cycles_per_element
    else:
        body = 0
    return cfg.issue_cycles + body


def simulate(instrs: Sequence[Instruction], cfg: HardwareConfig) -> TimingReport:
    """Run the cycle model over a decoded instruction stream."""
    free = {e: 0 for e in ENGINES}
    busy = {e: 0 for e in ENGINES}
    fifo: dict[tuple[str, str], deque[int]] = {(s, d): deque() for s in ENGINES for d in ENGINES}
    timeline = []
    macs = dense_macs = 0
    for i in issue_order(instrs):
        ins = instrs[i]
        eng = ins.engine
        start = free[eng]
        for s in ins.wait:
            start = max(start, fifo[(s, eng)].popleft())
        cycles = instruction_cycles(ins, cfg)
        end = start + cycles
        for d in ins.signal:
            fifo[(eng, d)].append(end)
        free[eng] = end
        busy[eng] += cycles
        timeline.append(TimelineEntry(i, eng, ins.op, start, end))
        if ins.op == "gemm":
            mul, dense = gemm_macs(ins)
            macs += mul
            dense_macs += dense
    total = max(free.values())
    util = {e: busy[e] / total if total else 0.0 for e in ENGINES}
    mac_util = macs / (total * cfg.peak_dense_macs_per_cycle) if total else 0.0
    timeline.sort(key=lambda t: t.index)
    return TimingReport(total, busy, util, macs, dense_macs, mac_util,
                        total / (cfg.clock_mhz * 1e6), tuple(timeline))


def time_program(program: Program) -> TimingReport:
    """The cycle model of a whole program on its own config."""
    return simulate(program.instructions, program.config)
