"""Design-space sweep: one model over array sizes, DRAM bandwidths and N:M ratios, in parallel.

Every point compiles the model's training step for a variant of a base
hardware config (array ``rows = cols = size``, ``dram_bandwidth_gbps``),
list-schedules it (fast and never worse than program order) and records the
step's cycles, time, images/s and the speedup over dense on the same
hardware. Points run in a process pool over all local cores.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from satc.backends.sat.config import DEFAULT_HARDWARE, load_hardware


@dataclass(frozen=True)
class SweepPoint:
    """One configuration of the sweep and what it measured."""

    model: str
    batch: int
    array: int
    bandwidth_gbps: float
    sparsity: str
    instructions: int = 0
    cycles: int = 0
    step_ms: float = 0.0
    images_per_s: float = 0.0
    speedup: float = 1.0


def _measure(point: SweepPoint, hw: str) -> SweepPoint:
    from satc.compiler import compile as compile_step
    from satc.models import ZOO
    from satc.passes.schedule import schedule_program

    base = load_hardware(hw)
    cfg = dataclasses.replace(base, name=f"{base.name}-{point.array}x{point.array}-{point.bandwidth_gbps:g}GBps",
                              rows=point.array, cols=point.array,
                              dram_bandwidth_gbps=point.bandwidth_gbps)
    shape = [point.batch, *ZOO[point.model].input_shape]
    prog = compile_step(point.model, sparsity=point.sparsity, hw=cfg, input_shapes={"x": shape})
    cycles = schedule_program(prog.program, "list").makespan
    seconds = cycles / (cfg.clock_mhz * 1e6)
    return dataclasses.replace(point, instructions=len(prog.program.instructions), cycles=cycles,
                               step_ms=seconds * 1e3, images_per_s=point.batch / seconds)


def run_sweep(model: str, batch: int, arrays: Sequence[int], bandwidths: Sequence[float],
              sparsities: Sequence[str], hw: str = DEFAULT_HARDWARE, jobs: int | None = None
              ) -> list[SweepPoint]:
    """Measure every (array, bandwidth, sparsity) point; speedups are over dense at the same hardware."""
    modes = list(dict.fromkeys(["dense", *sparsities]))
    points = [SweepPoint(model, batch, a, b, s) for a in arrays for b in bandwidths for s in modes]
    with ProcessPoolExecutor(max_workers=jobs or os.cpu_count()) as pool:
        done = list(pool.map(_measure, points, [hw] * len(points)))
    dense = {(p.array, p.bandwidth_gbps): p.cycles for p in done if p.sparsity == "dense"}
    return [dataclasses.replace(p, speedup=dense[(p.array, p.bandwidth_gbps)] / p.cycles) for p in done]


def write_csv(points: Sequence[SweepPoint], path: str | Path) -> None:
    """One row per point, the SweepPoint fields as columns."""
    names = [f.name for f in dataclasses.fields(SweepPoint)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for p in points:
            w.writerow([getattr(p, n) for n in names])


def plot(points: Sequence[SweepPoint], path: str | Path) -> None:
    """Speedup over dense against DRAM bandwidth, one panel per array size, one line per N:M."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrays = sorted({p.array for p in points})
    modes = [m for m in dict.fromkeys(p.sparsity for p in points) if m != "dense"]
    fig, axes = plt.subplots(1, len(arrays), figsize=(4 * len(arrays), 3.2), sharey=True, squeeze=False)
    for ax, a in zip(axes[0], arrays):
        for m in modes:
            pts = sorted((p.bandwidth_gbps, p.speedup) for p in points if p.array == a and p.sparsity == m)
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=m)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_title(f"{a}x{a} array")
        ax.set_xlabel("DRAM GB/s")
    axes[0][0].set_ylabel("speedup over dense")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"{points[0].model}, batch {points[0].batch}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(points: Sequence[SweepPoint]) -> str:
    """The sweep as a text table."""
    lines = [f"{'array':>6} {'GB/s':>7} {'sparsity':<10} {'instrs':>8} {'cycles':>11} {'ms/step':>9} "
             f"{'img/s':>9} {'speedup':>8}"]
    lines += [f"{p.array:>6} {p.bandwidth_gbps:>7g} {p.sparsity:<10} {p.instructions:>8} {p.cycles:>11} "
              f"{p.step_ms:>9.3f} {p.images_per_s:>9.1f} {p.speedup:>8.2f}" for p in points]
    return "\n".join(lines)
