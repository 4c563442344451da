"""Scheduler quality and speed: in-order vs list vs CP-SAT makespans against the lower bound.

For synthetic layer-like training steps of increasing size
(:func:`satc.passes.schedule.synthetic_program`: 30 instructions per layer,
layers in independent chains, buffer slots reused) -- or for saved program
files given with ``--program`` -- prints one row per program: tasks, the
makespan in cycles of the program's own order, of the list schedule and of
CP-SAT, the best proven lower bound (max of the per-engine work bound, the
critical path, the cut-chain bound and CP-SAT's bound on a single model),
CP-SAT's makespan / bound, its wall time, whether the independent checker
(:func:`satc.passes.schedule.check_schedule`) accepts both the list and the
CP-SAT schedule, and the status (``OPTIMAL``: makespan meets the bound; the
solver's own status for one model or the window count).

Usage: ``.venv/bin/python bench/schedule.py [--preset sat-vcu1525] [--layers 2,4,8,32,128]
[--time-limit 10] [--window 400] [--program prog.satbin ...] [--zoo resnet18_cifar:32:dense,...]``
"""

from __future__ import annotations

import argparse
import time

from satc.backends.sat.config import DEFAULT_HARDWARE, load_hardware
from satc.backends.sat.program import Program
from satc.passes.schedule import build_task_graph, schedule_graph, synthetic_program

from satc.compiler import compile as compile_step
from satc.paper import training_step


def bench_row(name: str, program: Program, labels: list[str] | None, time_limit: float, window: int,
              workers: int, seed: int) -> str:
    """One table row for ``program``."""
    t0 = time.perf_counter()
    g = build_task_graph(program, labels)
    graph_s = time.perf_counter() - t0
    ls = schedule_graph(g, "list")
    t0 = time.perf_counter()
    cp = schedule_graph(g, "cpsat", time_limit_s=time_limit, window=window, workers=workers, seed=seed)
    solve_s = time.perf_counter() - t0
    how = cp.solver_status if cp.windows == 1 else f"{cp.windows} windows"
    checked = ls.check() == ls.makespan and cp.check() == cp.makespan   # the independent checker
    return (f"{name:<12} {g.n:>7} {g.inorder_makespan:>10} {ls.makespan:>10} {cp.makespan:>10} "
            f"{cp.lower_bound:>10} {cp.ratio:>6.3f} {g.inorder_makespan / cp.makespan:>6.3f} "
            f"{graph_s:>6.1f} {solve_s:>7.1f} {'ok' if checked else 'FAIL':>5}  {cp.status} ({how})")


def zoo_run(spec: str, preset: str) -> tuple[str, Program, list[str]]:
    """Compile ``MODEL:BATCH:SPARSITY`` (SGD, momentum 0.9) and return (name, program, labels)."""
    model, batch, sparsity = spec.split(":", 2)
    prog = compile_step(training_step(model, int(batch), sparsity), hw=preset)
    program = prog.program
    short = {"resnet18_cifar": "r18c", "resnet50_cifar": "r50c", "resnet18": "r18", "resnet50": "r50",
             "vgg16_bn": "vgg16", "vit_tiny": "vit"}.get(model, model)
    return f"{short}/{sparsity}"[:12], program, prog.labels


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=DEFAULT_HARDWARE)
    ap.add_argument("--tile", type=int, default=32, help="synthetic layer tile (D = 2 * tile)")
    ap.add_argument("--layers", default="2,4,8,32,128", help="synthetic program sizes, in layers")
    ap.add_argument("--time-limit", type=float, default=10.0, help="CP-SAT seconds per program")
    ap.add_argument("--window", type=int, default=400, help="most tasks per CP-SAT model")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--program", action="append", default=[], help="a saved program file (repeatable)")
    ap.add_argument("--zoo", default="", help="compiled zoo steps, MODEL:BATCH:SPARSITY comma list, "
                    "e.g. resnet18_cifar:32:dense,resnet18_cifar:32:bdwp:2:8")
    args = ap.parse_args()
    print(f"{'program':<12} {'tasks':>7} {'in-order':>10} {'list':>10} {'cp-sat':>10} {'bound':>10} "
          f"{'ratio':>6} {'speedup':>6} {'graph':>6} {'solve s':>7} {'check':>5}  status")
    runs: list[tuple[str, Program, list[str] | None]] = []
    if args.program:
        runs = [(p.rsplit("/", 1)[-1][:12], Program.load(p), None) for p in args.program]
    elif args.zoo:
        runs = [zoo_run(spec, args.preset) for spec in args.zoo.split(",")]
    else:
        cfg = load_hardware(args.preset)
        for n in (int(x) for x in args.layers.split(",")):
            prog, labels = synthetic_program(cfg, n, streams=3, tile=args.tile)
            runs.append((f"{n} layers", prog, labels))
    for name, prog, labels in runs:
        print(bench_row(name, prog, labels, args.time_limit, args.window, args.workers, args.seed),
              flush=True)


if __name__ == "__main__":
    main()
