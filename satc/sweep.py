"""Design-space sweep: one model over hardware-config fields and N:M ratios, on Dask.

Every point compiles the model's training step for a variant of a base
hardware config (any fields, :mod:`satc.dse.space`), list-schedules it (fast
and never worse than program order) and records the step's cycles, time,
images/s, energy (:mod:`satc.backends.sat.energy`), on-chip memory and the
speedup over dense on the same hardware. Points run as dask.distributed jobs
(:mod:`satc.dse.runner`); finished points are cached on disk
(:mod:`satc.dse.cache`), so a re-run recomputes only what changed. The table
marks the Pareto fronts of cycles vs energy and cycles vs on-chip memory.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

from satc.atomic import atomic_write
from satc.backends.sat.config import DEFAULT_HARDWARE, HardwareConfig, load_hardware
from satc.dse.cache import ResultCache, graph_digest, result_key
from satc.dse.pareto import front, plot_fronts
from satc.dse.runner import dask_client, run_jobs
from satc.dse.space import Axis, onchip_bytes, points, variant

#: the measurement every point makes (part of the cache key)
SETTINGS = {"scheduler": "list", "optimizer": "default"}
#: the grid ``satc sweep`` runs when no axis is given: array size x DRAM bandwidth
DEFAULT_AXES: tuple[Axis, ...] = ((("rows", "cols"), (16, 32, 64)),
                                  (("dram_bandwidth_gbps",), (19.25, 38.5, 77.0, 154.0)))


@dataclass(frozen=True)
class SweepPoint:
    """One configuration of the sweep (base config + ``hw`` overrides) and what it measured."""

    model: str
    batch: int
    sparsity: str
    hw: tuple[tuple[str, Any], ...]
    instructions: int = 0
    cycles: int = 0
    step_ms: float = 0.0
    images_per_s: float = 0.0
    energy_mj: float = 0.0
    watts: float = 0.0
    gops_per_w: float = 0.0
    images_per_j: float = 0.0
    onchip_mib: float = 0.0
    speedup: float = 0.0          # over dense on the same hardware (0: no dense point)
    cached: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        """True when the point was measured (no error)."""
        return not self.error


@dataclass(frozen=True)
class SweepResult:
    """The points in grid order (unfinished ones carry an error) and whether Ctrl-C stopped it."""

    points: list[SweepPoint]
    interrupted: bool = False


@lru_cache(maxsize=4)
def _forward(model: str, batch: int) -> Any:
    """The forward graph of ``model`` at ``batch``, imported once per worker process."""
    from satc.pipeline import load_model

    return load_model(model, batch=batch).graph


def measure(job: tuple[str, int, str, HardwareConfig]) -> dict[str, Any]:
    """Compile, list-schedule and price one (model, batch, sparsity, config): the result fields."""
    from satc.compiler import compile as compile_step
    from satc.passes.schedule import schedule_program

    model, batch, sparsity, cfg = job
    prog = compile_step(_forward(model, batch), sparsity=sparsity, hw=cfg)
    cycles = schedule_program(prog.program, SETTINGS["scheduler"]).makespan
    energy = prog.energy(cycles)
    seconds = cycles / (cfg.clock_mhz * 1e6)
    return {"instructions": len(prog.program.instructions), "cycles": cycles, "step_ms": seconds * 1e3,
            "images_per_s": batch / seconds, "energy_mj": energy.total_j * 1e3, "watts": energy.watts,
            "gops_per_w": energy.gops_per_watt, "images_per_j": energy.images_per_joule(batch)}


def _deterministic(row: dict[str, Any]) -> bool:
    """A result worth caching: measured, or refused by satc itself (not a lost worker)."""
    return "error" not in row or bool(row.get("satc_error"))


def run_sweep(model: str, batch: int, axes: Sequence[Axis], sparsities: Sequence[str],
              hw: str | HardwareConfig = DEFAULT_HARDWARE, sample: int | None = None, seed: int = 0,
              scheduler: str | None = None, workers: int | None = None,
              cache_dir: str | Path | None = None, progress: bool = True,
              on_row: Callable[[int, dict[str, Any]], None] | None = None) -> SweepResult:
    """Measure every point of ``axes`` x (dense + ``sparsities``) on a Dask cluster.

    ``scheduler``: address of a running dask scheduler (default: a LocalCluster
    of ``workers`` processes). ``cache_dir``: where results are cached (None:
    no cache). ``on_row(i, row)`` sees each freshly computed row.
    """
    base = hw if isinstance(hw, HardwareConfig) else load_hardware(hw)
    modes = list(dict.fromkeys(["dense", *sparsities]))
    grid = [(o, s) for o in points(axes, sample, seed) for s in modes]
    cfgs = [variant(base, o) for o, _ in grid]
    cache = ResultCache(cache_dir)
    digest = graph_digest(model, batch)
    keys = [result_key(digest, s, c, {**SETTINGS, "batch": batch}) for (_, s), c in zip(grid, cfgs)]
    rows: list[dict[str, Any] | None] = [None] * len(grid)
    cached = [False] * len(grid)
    for i, k in enumerate(keys):
        rows[i] = cache.get(k)
        cached[i] = rows[i] is not None
    todo = [i for i, r in enumerate(rows) if r is None]
    interrupted = False
    if todo:
        def keep(j: int, row: dict[str, Any]) -> None:
            if _deterministic(row):
                cache.put(keys[todo[j]], row)
            if on_row:
                on_row(todo[j], row)

        with dask_client(scheduler, workers) as client:
            run = run_jobs(measure, [(model, batch, grid[i][1], cfgs[i]) for i in todo], client,
                           on_row=keep, progress=progress)
        for j, row in zip(todo, run.rows):
            rows[j] = row
        interrupted = run.interrupted
    out = [_point(model, batch, s, o, c, row, hit) for (o, s), c, row, hit in zip(grid, cfgs, rows, cached)]
    return SweepResult(_speedups(out), interrupted)


def _point(model: str, batch: int, sparsity: str, overrides: dict[str, Any], cfg: HardwareConfig,
           row: dict[str, Any] | None, cached: bool) -> SweepPoint:
    row = row if row is not None else {"error": "not run (interrupted)"}
    fields = {k: v for k, v in row.items() if k != "satc_error"}
    return SweepPoint(model, batch, sparsity, tuple(overrides.items()),
                      onchip_mib=onchip_bytes(cfg) / 2**20, cached=cached, **fields)


def _speedups(pts: list[SweepPoint]) -> list[SweepPoint]:
    dense = {p.hw: p.cycles for p in pts if p.sparsity == "dense" and p.ok}
    return [dataclasses.replace(p, speedup=dense[p.hw] / p.cycles) if p.ok and p.hw in dense else p
            for p in pts]


def pareto_marks(pts: Sequence[SweepPoint]) -> tuple[list[bool], list[bool]]:
    """Per point: on the cycles-vs-energy front, on the cycles-vs-on-chip-memory front."""
    ok = [i for i, p in enumerate(pts) if p.ok]
    marks = []
    for obj in ("energy_mj", "onchip_mib"):
        on = front([(pts[i].cycles, getattr(pts[i], obj)) for i in ok])
        flags = [False] * len(pts)
        for i, o in zip(ok, on):
            flags[i] = o
        marks.append(flags)
    return marks[0], marks[1]


def _columns(pts: Sequence[SweepPoint]) -> list[str]:
    return list(dict.fromkeys(k for p in pts for k, _ in p.hw))


def write_csv(pts: Sequence[SweepPoint], path: str | Path) -> None:
    """One row per point: the varied fields, then the SweepPoint fields and the Pareto marks."""
    fields = _columns(pts)
    names = [f.name for f in dataclasses.fields(SweepPoint) if f.name != "hw"]
    e_front, m_front = pareto_marks(pts)
    with atomic_write(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields + names + ["pareto_energy", "pareto_memory"])
        for p, e, m in zip(pts, e_front, m_front):
            hw = dict(p.hw)
            w.writerow([hw.get(k, "") for k in fields] + [getattr(p, n) for n in names] + [int(e), int(m)])


def _label(p: SweepPoint) -> str:
    hw = dict(p.hw)
    vals = [f"{v:g}" if isinstance(v, float) else str(v) for k, v in hw.items() if k != "cols" or
            hw.get("rows") != v]
    return f"{p.sparsity} {'/'.join(vals)}"


def plot(pts: Sequence[SweepPoint], path: str | Path) -> None:
    """Pareto fronts: energy and on-chip memory against ms per step, dominated points grey."""
    ok = [p for p in pts if p.ok]
    plot_fronts([p.step_ms for p in ok], [("mJ per step", [p.energy_mj for p in ok]),
                                          ("on-chip buffers (MiB)", [p.onchip_mib for p in ok])],
                [_label(p) for p in ok], "ms per step", path,
                title=f"{ok[0].model}, batch {ok[0].batch}" if ok else "")


def format_table(pts: Sequence[SweepPoint]) -> str:
    """The sweep as a text table; ``E`` / ``M`` mark the cycles-vs-energy / -memory fronts."""
    fields = _columns(pts)
    width = {k: max(len(k), 7) for k in fields}
    e_front, m_front = pareto_marks(pts)
    head = " ".join(f"{k:>{width[k]}}" for k in fields)
    lines = [f"{head} {'sparsity':<10} {'instrs':>8} {'cycles':>11} {'ms/step':>9} {'img/s':>9} "
             f"{'speedup':>8} {'mJ/step':>9} {'W':>7} {'GOPS/W':>7} {'img/J':>8} {'MiB':>6} front"]
    for p, e, m in zip(pts, e_front, m_front):
        hw = dict(p.hw)
        cells = " ".join(f"{hw.get(k, ''):>{width[k]}}" if not isinstance(hw.get(k), float)
                         else f"{hw[k]:>{width[k]}g}" for k in fields)
        if not p.ok:
            lines.append(f"{cells} {p.sparsity:<10} error: {p.error}")
            continue
        lines.append(f"{cells} {p.sparsity:<10} {p.instructions:>8} {p.cycles:>11} {p.step_ms:>9.3f} "
                     f"{p.images_per_s:>9.1f} {p.speedup:>8.2f} {p.energy_mj:>9.3f} {p.watts:>7.2f} "
                     f"{p.gops_per_w:>7.2f} {p.images_per_j:>8.1f} {p.onchip_mib:>6g} "
                     f"{('E' if e else '') + ('M' if m else '') or '-'}")
    n_ok = sum(p.ok for p in pts)
    lines.append(f"{n_ok} of {len(pts)} points measured ({sum(p.cached for p in pts)} from the cache); "
                 f"Pareto fronts: {sum(e_front)} on cycles vs energy (E), {sum(m_front)} on cycles vs "
                 "on-chip memory (M)")
    return "\n".join(lines)
