"""What N:M sparse training buys on SAT: the paper's comparison, from satc's compiled schedules.

    satc bench paper                                     # writes docs/results-sat.md and a PNG
    satc bench paper --models cnn:16 --modes dense,bdwp:2:8 --no-ablations
    .venv/bin/python bench/paper.py ...                  # the same

For each model and sparsity mode on ``sat-vcu1525`` (fp16 mixed): the
training step is compiled, list-scheduled (CP-SAT windows tie the list
schedule at these sizes, see docs/scheduling.md) and measured: cycles,
images/s, dense-equivalent GOPS, speedup over dense on the same hardware
(paper: 1.75x average for bdwp:2:8, 2.0x ceiling), operation reduction
(paper: 48%), each stage's share of the busy cycles and each engine's
utilisation. Ablations (one row each, on the first model): no
pre-generation (SORE inside FF/BP), WS-only and OS-only dataflow, program
order instead of the offline schedule, no interleave mapping; and the
sensitivity of the bdwp:2:8 speedup to the vector lanes and DRAM bandwidth
(satc's modelling assumptions). An energy table (joules per step, watts,
GOPS/W, images/J, by engine and by stage; satc.backends.sat.energy) and
plot follow. The main rows run as dask.distributed jobs (a LocalCluster, or
``--scheduler ADDRESS``) and are cached on disk (``--cache``, satc.dse.cache).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from satc.atomic import save_figure, write_text
from satc.backends.sat.codegen import NodeSpan
from satc.backends.sat.config import DEFAULT_HARDWARE, HardwareConfig, load_hardware
from satc.backends.sat.cost_model import instruction_cycles
from satc.backends.sat.isa import ENGINES, Instruction
from satc.backends.sat.roofline import PHASES, roofline
from satc.compiler import compile as compile_step
from satc.dse.cache import ResultCache, default_cache_dir, graph_digest, result_key
from satc.dse.runner import dask_client, run_jobs
from satc.ir.graph import Graph
from satc.ir.types import Stage
from satc.passes.op_count import count_ops
from satc.passes.optimizer import SGD
from satc.passes.schedule import engine_utilisation, schedule_program
from satc.pipeline import CompileOptions, load_model, run_passes

MODELS = ["resnet18_cifar:32", "resnet50_cifar:32", "resnet18:8", "resnet50:8", "vgg16_bn:32",
          "vit_tiny:32", "gpt_tiny:8", "bert_tiny:8"]
MODES = ["dense", "ff:2:8", "bdwp:2:8", "bdwp:2:4", "bdwp:1:8"]
STAGES = [Stage.FF, Stage.BP, Stage.WU, Stage.OPT, Stage.SORE]
PAPER_SPEEDUP, CEILING = 1.75, 2.0
#: hardware variants of the sensitivity table: name -> {config field: new value from old}
SENSITIVITY = [("4x vector lanes", {"vector_lanes": lambda v: 4 * v}),
               ("2x DRAM bandwidth", {"dram_bandwidth_gbps": lambda v: 2 * v}),
               ("both", {"vector_lanes": lambda v: 4 * v, "dram_bandwidth_gbps": lambda v: 2 * v})]


@dataclasses.dataclass
class Row:
    """One measured configuration."""

    model: str
    batch: int
    mode: str
    instructions: int
    cycles: int
    seconds: float
    dense_macs: int
    effective_macs: int
    stage_share: dict[str, float]
    engine_util: dict[str, float]
    compile_s: float
    inorder_cycles: int = 0
    speedup: float = 1.0
    energy_j: float = 0.0
    static_j: float = 0.0
    energy_engine: dict[str, float] = dataclasses.field(default_factory=dict)   # dynamic + idle J
    energy_stage: dict[str, float] = dataclasses.field(default_factory=dict)    # dynamic J
    roofline: dict[str, list] = dataclasses.field(default_factory=dict)  # phase -> [bound, limiter]


def training_step(model: str, batch: int, mode: str, pregenerate: bool = True) -> Graph:
    """The training graph every SAT benchmark compiles: zoo ``model`` at ``batch``, SGD
    (lr 0.05, momentum 0.9, weight decay 5e-4), sparsity ``mode``."""
    options = CompileOptions(sparsity=mode, optimizer=SGD(lr=0.05, momentum=0.9, weight_decay=5e-4),
                             pregenerate=pregenerate)
    return run_passes(load_model(model, batch=batch).graph, options, until="sparsify")


def busy_cycles(spans: Sequence[NodeSpan], instructions: Sequence[Instruction], cfg: HardwareConfig
                ) -> dict[tuple[str, str], int]:
    """Engine-busy cycles of a compiled step per (stage, engine), from its nodes' spans."""
    busy: dict[tuple[str, str], int] = defaultdict(int)
    for span in spans:
        for i in range(span.start, span.end):
            ins = instructions[i]
            busy[(str(span.node.stage), ins.engine)] += instruction_cycles(ins, cfg)
    return busy


def measure(model: str, batch: int, mode: str, cfg, scheduler: str = "list",
            pregenerate: bool = True, interleave: bool = True) -> Row:
    """Compile, schedule and measure one configuration."""
    graph = training_step(model, batch, mode, pregenerate)
    t0 = time.perf_counter()
    prog = compile_step(graph, hw=cfg, interleave=interleave)
    compile_s = time.perf_counter() - t0
    program = prog.program
    result = schedule_program(program, scheduler, time_limit_s=5)
    result.check()                     # the independent checker: ScheduleError if anything is off
    busy: dict[str, int] = defaultdict(int)
    for (stage, _), cycles in busy_cycles(prog.spans, program.instructions, cfg).items():
        busy[stage] += cycles
    total_busy = sum(busy.values()) or 1
    ops = count_ops(graph)
    dense, eff = ops.total()
    energy = prog.energy(result.makespan)
    return Row(model, batch, mode, len(program.instructions), result.makespan,
               result.makespan / (cfg.clock_mhz * 1e6), dense, eff,
               {s.value: busy[s.value] / total_busy for s in STAGES},
               engine_utilisation(result), compile_s, result.baselines["inorder"],
               energy_j=energy.total_j, static_j=energy.static_j, energy_engine=energy.by_engine(),
               energy_stage=energy.by_stage(),
               roofline={p.phase: [p.bound, p.limiter]
                         for p in roofline(program.instructions, prog.labels, cfg)})


def _measure_job(job: tuple[str, int, str, HardwareConfig]) -> dict:
    """:func:`measure` of one (model, batch, mode, config) as a plain dict (a Dask job)."""
    return dataclasses.asdict(measure(*job))


def measure_all(jobs: Sequence[tuple[str, int, str, HardwareConfig]], scheduler: str | None = None,
                workers: int | None = None, cache_dir: str | Path | None = None
                ) -> list[Row | str]:
    """Measure every job on Dask (cached by content hash): a Row each, or its error text."""
    cache = ResultCache(cache_dir)
    digests = {(m, b): graph_digest(m, b) for m, b, _, _ in jobs}
    settings = {"bench": "paper", "scheduler": "list", "optimizer": "sgd 0.05 0.9 5e-4"}
    keys = [result_key(digests[(m, b)], mode, cfg, {**settings, "batch": b}) for m, b, mode, cfg in jobs]
    rows: list[dict | None] = [cache.get(k) for k in keys]
    todo = [i for i, r in enumerate(rows) if r is None]
    if todo:
        def keep(j: int, row: dict) -> None:
            if "error" not in row:
                cache.put(keys[todo[j]], row)
            print(f"{jobs[todo[j]][0]} {jobs[todo[j]][2]}: {row.get('error') or str(row['cycles']) + ' cycles'}",
                  flush=True)

        with dask_client(scheduler, workers) as client:
            run = run_jobs(_measure_job, [jobs[i] for i in todo], client, on_row=keep)
        for j, row in zip(todo, run.rows):
            rows[j] = row if row is not None else {"error": "not run (interrupted)"}
    return [r["error"] if "error" in r else Row(**r) for r in rows]


def _table(rows: list[Row]) -> list[str]:
    lines = ["| model | batch | mode | instrs | cycles | ms/step | img/s | dense-eq. GOPS | speedup | "
             "op reduction | " + " | ".join(f"{s.value} share" for s in STAGES) + " | "
             + " | ".join(f"{e} util" for e in ENGINES) + " |",
             "|" + "---|" * (10 + len(STAGES) + len(ENGINES))]
    for r in rows:
        gops = 2 * r.dense_macs / r.seconds / 1e9
        red = 1 - r.effective_macs / r.dense_macs
        lines.append(f"| {r.model} | {r.batch} | {r.mode} | {r.instructions} | {r.cycles} | "
                     f"{r.seconds * 1e3:.2f} | {r.batch / r.seconds:.0f} | {gops:.0f} | {r.speedup:.2f}x | "
                     f"{red:.1%} | " + " | ".join(f"{r.stage_share[s.value]:.1%}" for s in STAGES) + " | "
                     + " | ".join(f"{r.engine_util[e]:.0%}" for e in ENGINES) + " |")
    return lines


ROOFLINE_NOTE = ("Per phase, the least cycles the program's own work needs on this hardware "
                 "(backends/sat/roofline.py: ideal GEMM cycles, the DRAM bursts it touches once "
                 "over the shared channel, vector / WUVE / SORE work over their lanes), with the "
                 "resource that sets it; roofline = the sum over the phases; the last column is "
                 "how far the list schedule is from it.")


def roofline_table(rows: list[Row]) -> list[str]:
    """Each row's makespan against its per-phase roofline (markdown lines)."""
    lines = ["| model | batch | mode | makespan | " + " | ".join(f"{p} bound (limiter)" for p in PHASES)
             + " | roofline | makespan / roofline |", "|" + "---|" * (6 + len(PHASES))]
    for r in rows:
        total = sum(b for b, _ in r.roofline.values()) or 1
        cells = [f"{r.roofline[p][0]:,} ({r.roofline[p][1]})" if p in r.roofline else "-"
                 for p in PHASES]
        lines.append(f"| {r.model} | {r.batch} | {r.mode} | {r.cycles:,} | {' | '.join(cells)} | "
                     f"{total:,} | {r.cycles / total:.3f} |")
    return lines


ENERGY_NOTE = ("Model estimate (satc.backends.sat.energy) from the energy fields of the hardware "
               "config: static power plus a price per action, over the list schedule's makespan. Not a "
               "vendor power report and not calibrated to a board; recalibrate by editing the preset's "
               "energy fields (docs/dse.md). Engine columns: dynamic + idle share of the step's joules "
               "(static apart); stage columns: dynamic share.")


def _energy_table(rows: list[Row]) -> list[str]:
    lines = ["| model | batch | mode | mJ/step | W | dense-eq. GOPS/W | img/J | vs dense | static | "
             + " | ".join(ENGINES) + " | " + " | ".join(s.value for s in STAGES) + " |",
             "|" + "---|" * (9 + len(ENGINES) + len(STAGES))]
    for r in rows:
        base = next(d for d in rows if (d.model, d.batch, d.mode) == (r.model, r.batch, "dense"))
        lines.append(f"| {r.model} | {r.batch} | {r.mode} | {r.energy_j * 1e3:.4g} | "
                     f"{r.energy_j / r.seconds:.2f} | {2 * r.dense_macs / r.energy_j / 1e9:.1f} | "
                     f"{r.batch / r.energy_j:.2f} | {r.energy_j / base.energy_j:.3f}x | "
                     f"{r.static_j / r.energy_j:.1%} | "
                     + " | ".join(f"{r.energy_engine.get(e, 0) / r.energy_j:.1%}" for e in ENGINES) + " | "
                     + " | ".join(f"{r.energy_stage.get(s.value, 0) / r.energy_j:.1%}" for s in STAGES)
                     + " |")
    return lines


def _bar_chart(rows: list[Row], path: Path, modes: list[str], value, ylabel: str,
               marks: tuple[tuple[float, dict], ...] = ()) -> None:
    """Bars of ``value(row)`` per model and mode, horizontal ``marks`` (y, line style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(f"{r.model}:{r.batch}" for r in rows))
    fig, ax = plt.subplots(figsize=(1.6 * len(models) + 2, 3.4))
    width = 0.8 / max(len(modes), 1)
    for i, mode in enumerate(modes):
        vals = [next((value(r) for r in rows if f"{r.model}:{r.batch}" == m and r.mode == mode), 0)
                for m in models]
        ax.bar(np.arange(len(models)) + i * width, vals, width, label=mode)
    for y, style in marks:
        ax.axhline(y, **style)
    ax.set_xticks(np.arange(len(models)) + width * (len(modes) - 1) / 2, models, rotation=15)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _energy_chart(rows: list[Row], path: Path) -> None:
    _bar_chart(rows, path, list(dict.fromkeys(r.mode for r in rows)),
               lambda r: 2 * r.dense_macs / r.energy_j / 1e9, "dense-equivalent GOPS/W (model)")


def _chart(rows: list[Row], path: Path) -> None:
    _bar_chart(rows, path, [m for m in dict.fromkeys(r.mode for r in rows) if m != "dense"],
               lambda r: r.speedup, "training-step speedup over dense",
               ((PAPER_SPEEDUP, dict(color="k", ls="--", lw=0.8, label="paper bdwp:2:8 (1.75x)")),
                (CEILING, dict(color="grey", ls=":", lw=0.8, label="2:8 ceiling (2.0x)")),
                (1.0, dict(color="grey", lw=0.6))))


def main(argv: list[str] | None = None) -> None:
    """Run the table (and ablations), print it and write docs/results-sat.md (``--out``)."""
    ap = argparse.ArgumentParser(prog="satc bench paper", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="model:batch list")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--hw", default=DEFAULT_HARDWARE)
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument("--out", default="docs/results-sat.md")
    ap.add_argument("--scheduler", help="address of a running dask scheduler (default: a LocalCluster)")
    ap.add_argument("--workers", type=int, help="LocalCluster worker processes (default: all cores)")
    ap.add_argument("--cache", default=str(default_cache_dir()), help="result cache folder")
    ap.add_argument("--no-cache", action="store_true", help="recompute every row")
    args = ap.parse_args(argv)
    cfg = load_hardware(args.hw)
    rows: list[Row] = []
    models = [(m.split(":")[0], int(m.split(":")[1])) for m in args.models.split(",")]
    skipped: list[str] = []
    jobs = [(model, batch, mode, cfg) for model, batch in models for mode in args.modes.split(",")]
    for job, r in zip(jobs, measure_all(jobs, args.scheduler, args.workers,
                                        None if args.no_cache else args.cache)):
        if isinstance(r, str):
            skipped.append(f"- {job[0]} {job[2]}: not compiled: {r}")
        else:
            rows.append(r)
    for r in rows:
        base = next(d for d in rows if d.model == r.model and d.batch == r.batch and d.mode == "dense")
        r.speedup = base.cycles / r.cycles
    bdwp = [r.speedup for r in rows if r.mode == "bdwp:2:8"]
    lines = [f"# SAT results (`{args.hw}`)", "",
             f"Regenerate: `satc bench paper --models {args.models} --modes {args.modes}` "
             "(or `.venv/bin/python bench/paper.py` with the same flags).", "",
             *_table(rows), "",
             f"**BDWP 2:8 average speedup over dense: {np.mean(bdwp):.2f}x** "
             f"(paper: {PAPER_SPEEDUP}x, ceiling {CEILING}x)." if bdwp else ""]
    lines += skipped
    lines += ["", "## Roofline per phase", "", ROOFLINE_NOTE, "", *roofline_table(rows)]
    lines += ["", "## Energy per training step", "", ENERGY_NOTE, "", *_energy_table(rows)]
    if not args.no_ablations:
        model, batch = models[0]
        full = next(r for r in rows if (r.model, r.batch, r.mode) == (model, batch, "bdwp:2:8"))
        abl = [("full (bdwp:2:8, list schedule)", full.cycles),
               ("no pre-generation (SORE inside FF/BP)",
                measure(model, batch, "bdwp:2:8", cfg, pregenerate=False).cycles)]
        for df in ("ws", "os"):
            abl.append((f"{df.upper()}-only dataflow",
                        measure(model, batch, "bdwp:2:8", dataclasses.replace(cfg, dataflows=(df,))).cycles))
        abl.append(("program order (no offline schedule)", full.inorder_cycles))
        abl.append(("no interleave mapping (every array pass fills and drains)",
                    measure(model, batch, "bdwp:2:8", cfg, interleave=False).cycles))
        lines += ["", f"## Ablations ({model}, batch {batch}, bdwp:2:8)", "",
                  "| variant | cycles | vs full |", "|---|---|---|"]
        lines += [f"| {name} | {c} | {c / full.cycles:.3f}x |" for name, c in abl]
        base = next(r for r in rows if (r.model, r.batch, r.mode) == (model, batch, "dense"))
        lines += ["", f"## Sensitivity ({model}, batch {batch}): bdwp:2:8 speedup over dense", "",
                  "| hardware | dense cycles | bdwp:2:8 cycles | speedup |", "|---|---|---|---|",
                  f"| {args.hw} | {base.cycles} | {full.cycles} | {base.cycles / full.cycles:.2f}x |"]
        for name, changes in SENSITIVITY:
            var = dataclasses.replace(cfg, **{k: f(getattr(cfg, k)) for k, f in changes.items()})
            d, s_ = (measure(model, batch, mode, var).cycles for mode in ("dense", "bdwp:2:8"))
            lines.append(f"| {name} | {d} | {s_} | {d / s_:.2f}x |")
    out = Path(args.out)
    write_text(out, "\n".join(lines) + "\n")
    _chart(rows, out.with_suffix(".png"))
    _energy_chart(rows, out.with_name(out.stem + "-energy.png"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
