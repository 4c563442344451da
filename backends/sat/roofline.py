"""A roofline per program: what each phase of a training step needs at the least.

For each phase of the step (FF; BP+WU; the tail of OPT and SORE work), from the
instructions whose label names that stage:

* **GEMM**: the ideal STCE cycles, every multiply at the array's peak rate:
  dense ``mt*nt*k / (rows*cols*multipliers_per_pe)``, N:M
  ``mt*nt*groups(k, M) / (rows*cols*nm_groups_per_cycle)`` (no fill, drain or preload);
* **DRAM**: the bytes of the union of the DRAM bursts the phase reads and of those
  it writes (each burst once, however often it is moved: every extent is widened
  to whole ``dram_burst_bytes``), over ``dram_stream_bytes_per_cycle``; the reads
  and the writes add up when the DMA engines share the channel (``dram_shared``),
  else the larger of the two counts;
* **vector / WUVE / SORE**: each engine's work over its lanes (no latencies).

The phase's bound is the largest of those; the program's roofline is the sum of
its phases' bounds (the phases follow one another). ``makespan / roofline`` says
how far a schedule is from what the modelled hardware could do with this
program's work. The union of extents counts the gaps of a strided access (a
channel slice of an NCHW tensor) as touched: it is a close, not an exact, count.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from satc.backends.sat.access import accesses
from satc.backends.sat.config import HardwareConfig
from satc.backends.sat.cost_model import DMA_OPS
from satc.backends.sat.isa import Instruction
from satc.backends.sat.nmformat import groups
from satc.backends.sat.vecfuncs import VEC_FUNC_BY_NAME, vec_work

#: Stage (from an instruction label ``layer/stage/op``) -> phase of the roofline.
PHASE_OF_STAGE = {"FF": "FF", "BP": "BP+WU", "WU": "BP+WU", "OPT": "tail", "SORE": "tail"}
PHASES = ("FF", "BP+WU", "tail")
RESOURCES = ("gemm", "dram", "vector", "wuve", "sore")


@dataclass(frozen=True)
class PhaseRoofline:
    """One phase: ideal cycles per resource, the DRAM bytes behind ``dram`` and the bound."""

    phase: str
    cycles: dict[str, int]
    dram_bytes: int

    @property
    def bound(self) -> int:
        """The phase cannot take fewer cycles than its busiest resource needs."""
        return max(self.cycles.values())

    @property
    def limiter(self) -> str:
        """The resource that sets the bound."""
        return max(self.cycles, key=self.cycles.get)


def ideal_gemm_cycles(ins: Instruction, cfg: HardwareConfig) -> float:
    """STCE cycles of one gemm with every multiplier busy (no fill, drain or preload)."""
    if ins.n == 0:
        return ins.mt * ins.nt * ins.k / (cfg.rows * cfg.cols * cfg.multipliers_per_pe)
    return ins.mt * ins.nt * groups(ins.k, ins.m) / (cfg.rows * cfg.cols * cfg.nm_groups_per_cycle)


def _union_bytes(extents: list[tuple[int, int]]) -> int:
    total, end = 0, -1
    for lo, hi in sorted(extents):
        if hi > end:
            total += hi - max(lo, end)
            end = hi
    return total


def roofline(instructions: Sequence[Instruction], labels: Sequence[str],
             cfg: HardwareConfig) -> list[PhaseRoofline]:
    """The roofline of each phase (:data:`PHASES`) present in a labelled program."""
    work: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(RESOURCES, 0.0))
    reads: dict[str, list] = defaultdict(list)
    writes: dict[str, list] = defaultdict(list)
    for ins, label in zip(instructions, labels):
        parts = label.split("/")
        phase = PHASE_OF_STAGE.get(parts[1] if len(parts) > 2 else "", "tail")
        w = work[phase]
        if ins.op == "gemm":
            w["gemm"] += ideal_gemm_cycles(ins, cfg)
        elif ins.op == "vec":
            w["vector"] += vec_work(VEC_FUNC_BY_NAME[ins.func], ins.rows, ins.cols, ins) \
                / cfg.vector_lanes
        elif ins.op == "wuve":
            w["wuve"] += ins.length / cfg.wuve_lanes
        elif ins.op == "sore":
            outer, length = (ins.rows, ins.cols) if ins.axis == 1 else (ins.cols, ins.rows)
            w["sore"] += outer * groups(length, ins.m) / cfg.sore_lanes * ins.m \
                * cfg.sore_cycles_per_element
        elif ins.op in DMA_OPS:
            burst = cfg.dram_burst_bytes
            for a in accesses(ins):
                if a.space == "dram":
                    lo, hi = a.extent
                    (writes if a.write else reads)[phase].append((lo // burst * burst, -(-hi // burst) * burst))
    out = []
    for phase in PHASES:
        if phase not in work:
            continue
        rd, wr = _union_bytes(reads[phase]), _union_bytes(writes[phase])
        nbytes = rd + wr
        cycles = {r: math.ceil(v) for r, v in work[phase].items()}
        channel = nbytes if cfg.dram_shared else max(rd, wr)
        cycles["dram"] = math.ceil(channel / cfg.dram_stream_bytes_per_cycle)
        out.append(PhaseRoofline(phase, cycles, nbytes))
    return out


def format_roofline(phases: Sequence[PhaseRoofline], makespan: int | None = None) -> str:
    """The roofline as a table; with ``makespan``, the schedule's distance from it."""
    lines = [f"{'phase':<6} " + " ".join(f"{r:>10}" for r in RESOURCES)
             + f" {'DRAM MiB':>9} {'bound':>10}  limiter"]
    for p in phases:
        lines.append(f"{p.phase:<6} " + " ".join(f"{p.cycles[r]:>10}" for r in RESOURCES)
                     + f" {p.dram_bytes / 2**20:>9.1f} {p.bound:>10}  {p.limiter}")
    total = sum(p.bound for p in phases)
    lines.append(f"roofline {total} cycles" + (f"; makespan / roofline = {makespan / total:.3f}"
                                               if makespan and total else ""))
    return "\n".join(lines)
