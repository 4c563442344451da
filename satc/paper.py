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
(satc's modelling assumptions).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from satc.backends.sat.codegen import NodeSpan
from satc.backends.sat.config import DEFAULT_HARDWARE, HardwareConfig, load_hardware
from satc.backends.sat.cost_model import instruction_cycles
from satc.backends.sat.isa import ENGINES, Instruction
from satc.compiler import compile as compile_step
from satc.ir.graph import Graph
from satc.errors import CompileError
from satc.ir.types import Stage
from satc.passes.op_count import count_ops
from satc.pipeline import CompileOptions, load_model, run_passes
from satc.passes.optimizer import SGD
from satc.passes.schedule import engine_utilisation, schedule_program

MODELS = ["resnet18_cifar:32", "resnet50_cifar:32", "resnet18:8", "resnet50:8", "vgg16_bn:32",
          "vit_tiny:32"]
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
    return Row(model, batch, mode, len(program.instructions), result.makespan,
               result.makespan / (cfg.clock_mhz * 1e6), dense, eff,
               {s.value: busy[s.value] / total_busy for s in STAGES},
               engine_utilisation(result), compile_s, result.baselines["inorder"])


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


def _chart(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(f"{r.model}:{r.batch}" for r in rows))
    modes = [m for m in dict.fromkeys(r.mode for r in rows) if m != "dense"]
    fig, ax = plt.subplots(figsize=(1.6 * len(models) + 2, 3.4))
    width = 0.8 / max(len(modes), 1)
    for i, mode in enumerate(modes):
        vals = [next((r.speedup for r in rows if f"{r.model}:{r.batch}" == m and r.mode == mode), 0)
                for m in models]
        ax.bar(np.arange(len(models)) + i * width, vals, width, label=mode)
    ax.axhline(PAPER_SPEEDUP, color="k", ls="--", lw=0.8, label="paper bdwp:2:8 (1.75x)")
    ax.axhline(CEILING, color="grey", ls=":", lw=0.8, label="2:8 ceiling (2.0x)")
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.set_xticks(np.arange(len(models)) + width * (len(modes) - 1) / 2, models, rotation=15)
    ax.set_ylabel("training-step speedup over dense")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Run the table (and ablations), print it and write docs/results-sat.md (``--out``)."""
    ap = argparse.ArgumentParser(prog="satc bench paper", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="model:batch list")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--hw", default=DEFAULT_HARDWARE)
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument("--out", default="docs/results-sat.md")
    args = ap.parse_args(argv)
    cfg = load_hardware(args.hw)
    rows: list[Row] = []
    models = [(m.split(":")[0], int(m.split(":")[1])) for m in args.models.split(",")]
    skipped: list[str] = []
    for model, batch in models:
        for mode in args.modes.split(","):
            try:
                r = measure(model, batch, mode, cfg)
            except CompileError as e:
                skipped.append(f"- {model} {mode}: not compiled: {e}")
                print(skipped[-1], flush=True)
                continue
            rows.append(r)
            print(_table([r])[-1], flush=True)
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
    out.write_text("\n".join(lines) + "\n")
    _chart(rows, out.with_suffix(".png"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
