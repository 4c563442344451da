"""Cycle model of SAT programs (the tsim layer), separate from the emulator.

Each engine runs its own in-order queue; an instruction starts when its
engine is free and every token it waits for has been pushed, and lasts
:func:`satc.backends.sat.cost_model.instruction_cycles` (the per-instruction
cost formulas live there). A token is pushed when the pushing instruction's
results are ready: at its end plus
:func:`~satc.backends.sat.cost_model.ready_delay` (``dram_latency_cycles`` for a
load / store, else 0). With ``dram_shared`` a load or store also waits for the
one DRAM channel, which the DMAs hold in issue order (the order the two DMA
queues hand their transfers to the memory controller). The total is the end
of the last instruction (the landing of a final store's data is not counted).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Sequence

from satc.backends.sat.config import HardwareConfig
from satc.backends.sat.cost_model import gemm_macs, instruction_cycles, ready_delay, uses_channel
from satc.backends.sat.dispatch import issue_order
from satc.backends.sat.isa import ENGINES, Instruction
from satc.backends.sat.program import Program


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


def simulate(instrs: Sequence[Instruction], cfg: HardwareConfig) -> TimingReport:
    """Run the cycle model over a decoded instruction stream."""
    free = {e: 0 for e in ENGINES}
    busy = {e: 0 for e in ENGINES}
    fifo: dict[tuple[str, str], deque[int]] = {(s, d): deque() for s in ENGINES for d in ENGINES}
    timeline = []
    macs = dense_macs = 0
    channel_free = 0
    for i in issue_order(instrs):
        ins = instrs[i]
        eng = ins.engine
        start = free[eng]
        for s in ins.wait:
            start = max(start, fifo[(s, eng)].popleft())
        channel = uses_channel(ins, cfg)
        if channel:
            start = max(start, channel_free)
        cycles = instruction_cycles(ins, cfg)
        end = start + cycles
        if channel:
            channel_free = end
        ready = end + ready_delay(ins, cfg)
        for d in ins.signal:
            fifo[(eng, d)].append(end if d == eng else ready)
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
