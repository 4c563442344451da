"""Where a list-scheduled step's cycles go, phase by phase, against its roofline.

For one ``model:batch:mode`` on ``sat-vcu1525``: per phase (FF, BP+WU, tail) the span of
the schedule (first start to last end of the phase's instructions, by label), its
roofline bound with the limiting resource, and each engine's busy cycles in the phase;
then the vector functions that cost the most cycles, by phase and op.

Usage: ``.venv/bin/python bench/phases.py resnet18_cifar:32:bdwp:2:8``
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from satc.backends.sat.config import DEFAULT_HARDWARE, load_hardware
from satc.backends.sat.cost_model import instruction_cycles
from satc.backends.sat.isa import ENGINES
from satc.backends.sat.roofline import PHASE_OF_STAGE, roofline
from satc.compiler import compile as compile_step
from satc.paper import training_step
from satc.passes.schedule import schedule_program


def main() -> None:
    """Print the phase table and the costliest vector functions."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("row", help="model:batch:mode, e.g. resnet18_cifar:32:bdwp:2:8")
    ap.add_argument("--top", type=int, default=12, help="vector functions to list")
    args = ap.parse_args()
    model, batch, mode = args.row.split(":", 2)
    cfg = load_hardware(DEFAULT_HARDWARE)
    prog = compile_step(training_step(model, int(batch), mode), hw=cfg)
    result = schedule_program(prog.program, "list")
    span: dict[str, list[int]] = defaultdict(lambda: [1 << 62, 0])
    busy: dict[tuple[str, str], int] = defaultdict(int)
    vec: dict[tuple[str, str, str], int] = defaultdict(int)
    for task, start in zip(result.graph.tasks, result.starts):
        ins = prog.program.instructions[task.index]
        parts = prog.labels[task.index].split("/")
        phase = PHASE_OF_STAGE.get(parts[1] if len(parts) > 1 else "", "-")
        cycles = instruction_cycles(ins, cfg)
        span[phase][0] = min(span[phase][0], int(start))
        span[phase][1] = max(span[phase][1], int(start) + cycles)
        busy[(phase, ins.engine)] += cycles
        if ins.engine == "vector":
            vec[(phase, parts[2] if len(parts) > 2 else "-", ins.func)] += cycles
    print(f"{args.row}: makespan {result.makespan:,} cycles (list schedule, {cfg.name})")
    print("| phase | span | bound (limiter) | " + " | ".join(ENGINES) + " |")
    print("|---|---|---|" + "---|" * len(ENGINES))
    for p in roofline(prog.program.instructions, prog.labels, cfg):
        lo, hi = span[p.phase]
        limiter = max(p.cycles, key=p.cycles.get)
        print(f"| {p.phase} | {hi - lo:,} | {p.bound:,} ({limiter}) | "
              + " | ".join(f"{busy[(p.phase, e)]:,}" for e in ENGINES) + " |")
    print("\n| phase | op | vector function | cycles |\n|---|---|---|---|")
    for (phase, op, func), cycles in sorted(vec.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"| {phase} | {op} | {func} | {cycles:,} |")


if __name__ == "__main__":
    main()
