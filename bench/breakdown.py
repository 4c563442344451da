"""Where a training step's cycles go on SAT, with and without interleave mapping.

    .venv/bin/python bench/breakdown.py [--model resnet18_cifar:32] [--modes dense,bdwp:2:8]

For each mode, compiled with and without interleave mapping and
list-scheduled on ``sat-vcu1525``: STCE busy cycles, dense-equivalent MACs
per STCE busy cycle, makespan and array utilisation (dense-equivalent MACs
over makespan x peak dense MACs per cycle). Then, for the interleaved
programs: busy cycles per stage and engine, the N:M GEMMs' dense-equivalent
MACs per cycle against the N:M peak and the share of PE rows their WS
passes fill (cycle-weighted), and the STCE's idle time in the schedule.
These are the numbers docs/results.md uses to explain the speedup.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from satc.backends.sat.config import DEFAULT_HARDWARE, load_hardware
from satc.backends.sat.cost_model import gemm_macs, instruction_cycles
from satc.backends.sat.isa import ENGINES
from satc.passes.schedule import schedule_program

from satc.compiler import compile as compile_step
from satc.paper import busy_cycles, training_step


def _ws_row_share(ins, cfg) -> float:
    """Share of the PE rows a WS N:M GEMM's passes fill (1.0 for OS)."""
    if ins.dataflow != "ws":
        return 1.0
    ksteps = math.ceil(math.ceil(ins.k / ins.m) / cfg.nm_groups_per_cycle)
    return ksteps / (cfg.rows * math.ceil(ksteps / cfg.rows))


def main() -> None:
    """Print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18_cifar:32")
    ap.add_argument("--modes", default="dense,bdwp:2:8")
    ap.add_argument("--hw", default=DEFAULT_HARDWARE)
    args = ap.parse_args()
    cfg = load_hardware(args.hw)
    model, batch = args.model.split(":")[0], int(args.model.split(":")[1])
    print(f"{model} batch {batch} on {cfg.name}, list schedule")
    print("| mode | interleave | STCE busy cycles | MACs per busy cycle | makespan | array utilisation |")
    print("|---|---|---|---|---|---|")
    kept = {}
    for mode in args.modes.split(","):
        for interleave in (False, True):
            prog = compile_step(training_step(model, batch, mode), hw=cfg, interleave=interleave)
            program = prog.program
            gemms = [i for i in program.instructions if i.op == "gemm"]
            busy = sum(instruction_cycles(i, cfg) for i in gemms)
            macs = sum(gemm_macs(i)[1] for i in gemms)
            res = schedule_program(program, "list")
            print(f"| {mode} | {'on' if interleave else 'off'} | {busy:,} | {macs / busy:,.0f} | "
                  f"{res.makespan:,} | {macs / res.makespan / cfg.peak_dense_macs_per_cycle:.1%} |",
                  flush=True)
            if interleave:
                kept[mode] = (prog, program, res)
    for mode, (prog, program, res) in kept.items():
        busy = busy_cycles(prog.spans, program.instructions, cfg)
        stages = sorted({s for s, _ in busy})
        print(f"\n{mode}: busy cycles per stage and engine")
        print("| stage | " + " | ".join(ENGINES) + " |")
        print("|---|" + "---|" * len(ENGINES))
        for s in stages:
            print(f"| {s} | " + " | ".join(f"{busy[(s, e)]:,}" for e in ENGINES) + " |")
        nm = [i for i in program.instructions if i.op == "gemm" and i.n > 0]
        if nm:
            cyc = np.array([instruction_cycles(i, cfg) for i in nm], float)
            dense_eq = sum(gemm_macs(i)[1] for i in nm)
            rows = np.array([_ws_row_share(i, cfg) for i in nm])
            n, m = nm[0].n, nm[0].m
            print(f"N:M GEMMs: {dense_eq / cyc.sum():,.0f} dense-equivalent MACs per cycle of a "
                  f"{cfg.peak_nm_macs_per_cycle(n, m):,} peak; "
                  f"WS passes fill {float((rows * cyc).sum() / cyc.sum()):.0%} of the PE rows")
        st = ENGINES.index("stce")
        work = int(res.graph.durations[res.graph.engine_ids == st].sum())
        print(f"STCE idle in the schedule: {res.makespan - work:,} of {res.makespan:,} cycles")


if __name__ == "__main__":
    main()
