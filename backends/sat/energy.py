"""Energy model of SAT: static power plus a price per action, over one training step.

Energy is a pure function of (instructions, hardware config, makespan of the
chosen schedule). Each instruction is turned into counts of actions
(:func:`instruction_activity`):

* gemm: multiplies executed (``gemm_macs``), priced dense or N:M at the
  config's multiply precision (``mac_{dense,nm}_{fp16,fp32}_pj``); the busy
  STCE cycles of the cycle model times the USPE count
  (``pe_active_pj_per_cycle``);
* every on-chip operand tile an instruction reads or writes
  (:func:`satc.backends.sat.access.accesses`), read once per instruction:
  ``buffer_{read,write}_pj_per_byte``;
* load / store: DRAM bytes read / written (``dram_{read,write}_pj_per_byte``),
  as moved: every contiguous run rounded up to whole ``dram_burst_bytes``;
* vec: lane operations (``vec_work``, as the cycle model counts them);
  wuve: weights updated; sore: source elements sorted.

Over the makespan every engine idles for ``makespan - busy`` cycles: the STCE
at ``pe_idle_pj_per_cycle`` per USPE, the other engines at
``engine_idle_pj_per_cycle``; ``static_power_w + dram_static_power_w`` burn
for the whole step. Every price is a field of the
:class:`~satc.backends.sat.config.HardwareConfig`; none is in this code.

This is a model for ranking design points, not a power report: it is not
calibrated to a board. To recalibrate, measure (or take Vivado's
``report_power`` for) a few programs and edit the preset's energy fields.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, Sequence

from satc.backends.sat.access import accesses
from satc.backends.sat.config import HardwareConfig
from satc.backends.sat.cost_model import dma_burst_bytes, gemm_macs, instruction_cycles
from satc.backends.sat.isa import ENGINES, Instruction
from satc.backends.sat.vecfuncs import VEC_FUNC_BY_NAME, vec_work
from satc.errors import ScheduleError

#: actions with a price, in report order
ACTIONS = ("mac_dense", "mac_nm", "pe_active", "buffer_read", "buffer_write", "dram_read",
           "dram_write", "vector", "wuve", "sore")
PJ = 1e-12


def action_prices(cfg: HardwareConfig) -> dict[str, float]:
    """pJ per unit of every action on ``cfg`` (MACs at the config's multiply precision)."""
    prec = "fp16" if cfg.mixed_precision else "fp32"
    return {"mac_dense": getattr(cfg, f"mac_dense_{prec}_pj"), "mac_nm": getattr(cfg, f"mac_nm_{prec}_pj"),
            "pe_active": cfg.pe_active_pj_per_cycle,
            "buffer_read": cfg.buffer_read_pj_per_byte, "buffer_write": cfg.buffer_write_pj_per_byte,
            "dram_read": cfg.dram_read_pj_per_byte, "dram_write": cfg.dram_write_pj_per_byte,
            "vector": cfg.vector_pj_per_element, "wuve": cfg.wuve_pj_per_element,
            "sore": cfg.sore_pj_per_element}


def instruction_activity(ins: Instruction, cfg: HardwareConfig) -> dict[str, int]:
    """Counts of every priced action of one instruction (MACs, PE-cycles, bytes, elements)."""
    act: dict[str, int] = defaultdict(int)
    for a in accesses(ins):
        if a.space != "dram":
            act["buffer_write" if a.write else "buffer_read"] += math.prod(a.shape) * a.dtype.itemsize
    op = ins.op
    if op in ("load", "store"):
        act["dram_read" if op == "load" else "dram_write"] += dma_burst_bytes(ins, cfg)
    elif op == "gemm":
        act["mac_nm" if ins.n else "mac_dense"] += gemm_macs(ins)[0]
        act["pe_active"] += instruction_cycles(ins, cfg) * cfg.pes
    elif op == "vec":
        act["vector"] += vec_work(VEC_FUNC_BY_NAME[ins.func], ins.rows, ins.cols, ins)
    elif op == "wuve":
        act["wuve"] += ins.length
    elif op == "sore":
        act["sore"] += ins.rows * ins.cols
    return dict(act)


@dataclass(frozen=True)
class EnergyReport:
    """Energy of one training step, in joules, with its breakdowns."""

    cycles: int
    seconds: float
    static_j: float                              # (static + DRAM static power) x step time
    idle_j: dict[str, float]                     # engine -> idle energy
    dynamic_j: dict[tuple[str, str], float]      # (stage, engine) -> dynamic energy
    action_j: dict[str, float]                   # action -> dynamic energy
    dense_macs: int                              # dense-equivalent GEMM MACs of the step

    @property
    def total_j(self) -> float:
        """Joules per step: static + idle + dynamic."""
        return self.static_j + sum(self.idle_j.values()) + sum(self.action_j.values())

    @property
    def watts(self) -> float:
        """Average power over the step."""
        return self.total_j / self.seconds if self.seconds else 0.0

    @property
    def gops_per_watt(self) -> float:
        """Dense-equivalent GOPS/W (2 operations per dense MAC per joule, / 1e9)."""
        return 2 * self.dense_macs / self.total_j / 1e9 if self.total_j else 0.0

    def images_per_joule(self, batch: int) -> float:
        """Training images per joule at ``batch`` images per step."""
        return batch / self.total_j if self.total_j else 0.0

    def by_engine(self) -> dict[str, float]:
        """Dynamic plus idle joules of each engine."""
        out = dict(self.idle_j)
        for (_, eng), j in self.dynamic_j.items():
            out[eng] += j
        return out

    def by_stage(self) -> dict[str, float]:
        """Dynamic joules of each stage (``-`` for unlabelled instructions)."""
        out: dict[str, float] = defaultdict(float)
        for (stage, _), j in self.dynamic_j.items():
            out[stage] += j
        return dict(out)


def _stage(label: str) -> str:
    parts = label.rsplit("/", 2)         # the layer name may itself hold a '/'
    return parts[1] if len(parts) == 3 else "-"


def step_energy(instructions: Sequence[Instruction], cfg: HardwareConfig, makespan: int,
                labels: Sequence[str] | None = None) -> EnergyReport:
    """The energy of one step of ``instructions`` that runs in ``makespan`` cycles on ``cfg``.

    ``labels`` (``layer/stage/op`` per instruction, as ``satc.compile`` gives
    them) attribute dynamic energy to stages. A makespan shorter than an
    engine's busy cycles is no schedule: ScheduleError.
    """
    prices = action_prices(cfg)
    busy = dict.fromkeys(ENGINES, 0)
    dynamic: dict[tuple[str, str], float] = defaultdict(float)
    counts: dict[str, int] = dict.fromkeys(ACTIONS, 0)
    dense_macs = 0
    for i, ins in enumerate(instructions):
        busy[ins.engine] += instruction_cycles(ins, cfg)
        act = instruction_activity(ins, cfg)
        stage = _stage(labels[i]) if labels else "-"
        dynamic[(stage, ins.engine)] += sum(prices[a] * n for a, n in act.items()) * PJ
        for a, n in act.items():
            counts[a] += n
        if ins.op == "gemm":
            dense_macs += gemm_macs(ins)[1]
    for eng, b in busy.items():
        if b > makespan:
            raise ScheduleError(f"makespan {makespan} is shorter than the {b} busy cycles of engine "
                                f"{eng}: pass the makespan of a schedule of these instructions")
    idle = {eng: (makespan - b) * (cfg.pe_idle_pj_per_cycle * cfg.pes if eng == "stce"
                                   else cfg.engine_idle_pj_per_cycle) * PJ for eng, b in busy.items()}
    seconds = makespan / (cfg.clock_mhz * 1e6)
    return EnergyReport(makespan, seconds, (cfg.static_power_w + cfg.dram_static_power_w) * seconds,
                        idle, dict(dynamic), {a: prices[a] * n * PJ for a, n in counts.items()},
                        dense_macs)


def _mj(j: float) -> str:
    return f"{j * 1e3:.3f} mJ"


def _shares(parts: Mapping[str, float], total: float) -> str:
    return ", ".join(f"{k} {_mj(v)} ({v / total:.1%})" for k, v in parts.items() if v) if total else "-"


def format_energy(rep: EnergyReport, batch: int | None = None) -> str:
    """The energy report as text: totals, then by engine, by stage and by action."""
    total = rep.total_j
    per_img = f", {rep.images_per_joule(batch):.2f} images/J" if batch else ""
    return "\n".join([
        f"energy per step {_mj(total)} over {rep.seconds * 1e3:.3f} ms: average {rep.watts:.2f} W, "
        f"{rep.gops_per_watt:.2f} dense-equivalent GOPS/W{per_img}",
        f"  static {_mj(rep.static_j)}, idle {_mj(sum(rep.idle_j.values()))}, "
        f"dynamic {_mj(sum(rep.action_j.values()))}",
        f"  by engine (dynamic + idle): {_shares(rep.by_engine(), total)}",
        f"  by stage (dynamic): {_shares(rep.by_stage(), total)}",
        f"  by action: {_shares(rep.action_j, total)}",
        "  (a per-action model from the hardware config's energy fields, not a vendor power "
        "report and not calibrated to a board; see docs/dse.md)"])
