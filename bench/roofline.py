"""Each compiled step against its own per-phase roofline (backends/sat/roofline.py).

For each ``model:batch`` and mode on ``sat-vcu1525``: the list-scheduled makespan, the
per-phase bounds (FF, BP+WU, tail) with their limiting resource, the roofline (sum of
the phase bounds) and makespan / roofline, dense and sparse alike.

Usage: ``.venv/bin/python bench/roofline.py [--models resnet18_cifar:32] [--modes dense,bdwp:2:8]``
"""

from __future__ import annotations

import argparse

from satc.backends.sat.config import DEFAULT_HARDWARE, load_hardware
from satc.backends.sat.roofline import roofline
from satc.compiler import compile as compile_step
from satc.paper import training_step
from satc.passes.schedule import schedule_program


def main() -> None:
    """Print the roofline table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18_cifar:32,vgg16_bn:32,vit_tiny:32")
    ap.add_argument("--modes", default="dense,bdwp:2:8")
    args = ap.parse_args()
    cfg = load_hardware(DEFAULT_HARDWARE)
    print("| model | batch | mode | makespan | FF bound (limiter) | BP+WU bound (limiter) "
          "| tail bound (limiter) | roofline | makespan / roofline |")
    print("|---|---|---|---|---|---|---|---|---|")
    for item in args.models.split(","):
        model, batch = item.split(":")
        for mode in args.modes.split(","):
            prog = compile_step(training_step(model, int(batch), mode), hw=cfg)
            result = schedule_program(prog.program, "list")
            phases = {p.phase: p for p in roofline(prog.program.instructions, prog.labels, cfg)}
            total = sum(p.bound for p in phases.values())
            cells = [f"{phases[k].bound:,} ({phases[k].limiter})" if k in phases else "-"
                     for k in ("FF", "BP+WU", "tail")]
            print(f"| {model} | {batch} | {mode} | {result.makespan:,} | {' | '.join(cells)} "
                  f"| {total:,} | {result.makespan / total:.3f} |", flush=True)


if __name__ == "__main__":
    main()
