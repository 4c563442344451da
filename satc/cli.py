"""The ``satc`` command line: zoo, ir, ops, compile, run, asm, schedule, sweep, hw, demo."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from satc.errors import SatcError


def _parse_shapes(items: Sequence[str] | None) -> dict[str, list[int]] | None:
    """``x=2,3,32,32`` (or ``2,3,32,32`` for the single input) -> {name: shape}."""
    if not items:
        return None
    out = {}
    for item in items:
        name, _, dims = item.rpartition("=")
        try:
            out[name or "x"] = [int(d) for d in dims.split(",")]
        except ValueError:
            raise SatcError(f"--input-shape {item!r}: expected NAME=D0,D1,... e.g. x=2,3,32,32") from None
    return out


def _optimizer(args):
    from satc.passes.optimizer import SGD, AdamW

    if args.optimizer == "adamw":
        return AdamW(lr=args.lr)
    return SGD(lr=args.lr, momentum=0.9, weight_decay=5e-4)


DEFAULT_MODEL = "cnn"  # the default model `satc demo` compiles and trains
DEFAULT_BATCH = 16
DEMO_AT_SCALE = ("resnet18_cifar", 32)   # `satc demo`'s closing comparison (--no-at-scale skips)


def _load(args):
    from satc.pipeline import load_model

    return load_model(args.model, input_shapes=_parse_shapes(args.input_shape), batch=args.batch)


def _training_graph(args):
    from satc.pipeline import CompileOptions, run_passes

    src = _load(args)
    options = CompileOptions(sparsity=args.sparsity, optimizer=_optimizer(args),
                             exclude=tuple(args.exclude or ()),
                             print_after=getattr(args, "print_after", False))
    return src, run_passes(src.graph, options)


def cmd_zoo(args) -> None:
    """List the bundled models with parameter counts and forward MACs."""
    from satc.models import count_macs, count_params, list_models

    print(f"{'model':<16}{'input':>14}{'classes':>9}{'params (M)':>12}{'fwd MMAC/img':>14}  description")
    for spec in list_models():
        m = spec.build()
        print(f"{spec.name:<16}{'x'.join(map(str, spec.input_shape)):>14}{spec.num_classes:>9}"
              f"{count_params(m) / 1e6:>12.3f}{count_macs(m, spec.input_shape) / 1e6:>14.3f}  {spec.description}")


def cmd_ir(args) -> None:
    """Print the training graph (or one stage of it) as text."""
    from satc.ir.printer import format_graph

    if args.stage == "forward":
        print(format_graph(_load(args).graph))
        return
    _, tg = _training_graph(args)
    stages = None if args.stage == "all" else [args.stage.upper()]
    print(format_graph(tg, stages))


def cmd_ops(args) -> None:
    """Print MACs per layer and stage, dense-equivalent and effective (or the op coverage)."""
    from satc.passes.op_count import count_ops

    if args.coverage:
        from satc.coverage import coverage, format_coverage
        print(format_coverage(coverage(args.model, input_shapes=_parse_shapes(args.input_shape),
                                       batch=args.batch, sparsity=args.sparsity)))
        return

    _, tg = _training_graph(args)
    print(tg.meta["sparsity"].format() if args.report else "", end="\n" if args.report else "")
    print(count_ops(tg).format(per_layer=not args.totals))


def cmd_demo(args) -> None:
    """The main job: compile a training step for SAT, train on the emulator, schedule, compare."""

    from satc.compiler import compile as compile_step, format_per_layer
    from satc.data import batches, digits, random_batch
    from satc.ir.interpreter import interpret
    from satc.models import ZOO
    from satc.passes.op_count import count_ops
    from satc.passes.schedule import format_report, schedule_program

    shape = [args.batch, *ZOO[args.model].input_shape]
    print(f"== compile {args.model} (batch {args.batch}) for {args.hw}, dense and {args.sparsity}")
    progs = {}
    for mode in ("dense", args.sparsity):
        t = time.perf_counter()
        progs[mode] = compile_step(args.model, sparsity=mode, hw=args.hw, optimizer=_optimizer(args),
                                   input_shapes={"x": shape})
        p = progs[mode]
        print(f"{mode:>10}: {len(p.program.instructions)} instructions in {time.perf_counter() - t:.1f} s, "
              f"{p.timing.total_cycles} cycles in program order")
    prog = progs[args.sparsity]
    print(f"\n== {args.sparsity}: operations\n{count_ops(prog.graph).format(per_layer=False)}")

    print(f"\n== train {args.steps} steps on the emulator (reference interpreter alongside)")
    if tuple(shape[1:]) == (1, 8, 8):
        x_tr, y_tr, _, _ = digits()
        stream = batches(x_tr, y_tr, args.batch, seed=0)
    else:
        fixed = tuple(random_batch(prog.graph, ZOO[args.model].num_classes).values())
        stream = iter(lambda: fixed, None)
    state = prog.graph.initial_state()
    for step in range(args.steps):
        xb, yb = next(stream)
        res = prog.step(xb, yb)
        ref = interpret(prog.graph, {"x": xb, "y": yb}, state)
        state = ref.new_state
        print(f"step {step}: emulator loss {res.loss:.6f}  interpreter loss {ref.loss:.6f}")

    print("\n== offline schedules (CP-SAT, list) of both programs")
    makespans = {}
    for mode, p in progs.items():
        result = schedule_program(p.program, "cpsat", labels=p.labels,
                                  time_limit_s=args.time_limit, seed=0)
        result.check()
        makespans[mode] = result.makespan
        if mode == args.sparsity:
            print(format_report(result, path_lines=6))
    speedup = makespans["dense"] / makespans[args.sparsity]
    print(f"\nscheduled step: dense {makespans['dense']} cycles, {args.sparsity} "
          f"{makespans[args.sparsity]} cycles: speedup {speedup:.2f}x")
    print(f"\n== per layer ({args.sparsity}, program order)\n{format_per_layer(prog.per_layer())}")
    if args.at_scale:
        _demo_at_scale(args)


def _demo_at_scale(args) -> None:
    """The same comparison on a model where N:M has work to save (list schedules)."""
    from satc.compiler import compile as compile_step
    from satc.paper import training_step
    from satc.passes.schedule import schedule_program

    model, batch = DEMO_AT_SCALE
    print(f"\n== at scale: {model} batch {batch} (list schedule)\n"
          f"{args.model}'s convolutions have 16-64 channels: a group of M weights per PE row fills "
          f"few of the array's rows, and the weight-side work N:M adds (SR-STE, SORE) does not "
          f"shrink, so a small model shows little of what N:M buys")
    cycles = {}
    for mode in ("dense", args.sparsity):
        p = compile_step(training_step(model, batch, mode), hw=args.hw)
        cycles[mode] = schedule_program(p.program, "list").makespan
        print(f"{mode:>10}: {cycles[mode]:,} cycles")
    print(f"speedup {cycles['dense'] / cycles[args.sparsity]:.2f}x")


def cmd_hw(args) -> None:
    """Show a hardware config (preset name or TOML path) with its peak rates, or list presets."""
    from satc.backends.sat import describe_hardware, list_presets, load_hardware

    if args.action == "list":
        print("\n".join(list_presets()))
    else:
        print(describe_hardware(load_hardware(args.name)))


def cmd_compile(args) -> None:
    """Compile a training step: write the program file, its assembly and a report."""
    from pathlib import Path

    from satc.atomic import write_text
    from satc.backends.sat import disassemble, encode_all
    from satc.backends.sat.energy import format_energy
    from satc.backends.sat.roofline import format_roofline, roofline
    from satc.compiler import compile as compile_step, format_per_layer
    from satc.models import ZOO

    shapes = _parse_shapes(args.input_shape)
    if shapes is None and args.model in ZOO:
        shapes = {"x": [args.batch, *ZOO[args.model].input_shape]}
    t0 = time.perf_counter()
    prog = compile_step(args.model, sparsity=args.sparsity, hw=args.hw, optimizer=_optimizer(args),
                        input_shapes=shapes, exclude=tuple(args.exclude or ()),
                        interleave=not args.no_interleave)
    seconds = time.perf_counter() - t0
    program = prog.program
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.model).stem
    program.save(out / f"{stem}.satbin")
    write_text(out / f"{stem}.s", disassemble(encode_all(program.instructions)))
    report = [f"model {args.model}, sparsity {args.sparsity}, hardware {prog.config.name}",
              f"compiled in {seconds:.2f} s: {len(program.instructions)} instructions, "
              f"DRAM {program.dram_size / 2**20:.1f} MiB",
              prog.timing.summary(), "", "energy (program order):",
              format_energy(prog.energy(), batch=next(iter(prog.graph.inputs)).shape[0]),
              "", "roofline (program order):",
              format_roofline(roofline(program.instructions, prog.labels, prog.config),
                              prog.timing.total_cycles),
              "", format_per_layer(prog.per_layer()), "", prog.plan.table()]
    write_text(out / f"{stem}.report.txt", "\n".join(report) + "\n")
    print("\n".join(report[:3]))
    print(f"wrote {out / (stem + '.satbin')}, {stem}.s, {stem}.report.txt")


def cmd_run(args) -> None:
    """Train on the emulator from a program file alone."""
    import numpy as np

    from satc.data import batches, digits
    from satc.runtime import open_run, train

    _check_output_dirs({"--checkpoint": args.checkpoint})
    session, start = open_run(args.program, args.checkpoint)
    manifest = session.manifest
    x_name, y_name = manifest.input_order
    shape = manifest.input_shapes[x_name]
    if args.data == "digits":
        x_tr, y_tr, _, _ = digits()
        if shape[1:] != x_tr.shape[1:]:
            raise SatcError(f"--data digits gives {x_tr.shape[1:]} images, the program takes "
                            f"{shape[1:]}; compile a digits model (mlp, cnn) or use --data synthetic")
        stream = batches(x_tr, y_tr, shape[0], seed=args.seed)
    else:
        rng = np.random.default_rng(args.seed)
        classes = manifest.inputs[y_name].classes
        fixed = (rng.standard_normal(shape).astype(np.float32),
                 rng.integers(0, classes, manifest.input_shapes[y_name]).astype(np.int64))
        stream = iter(lambda: fixed, None)
    clock_mhz = session.program.config.clock_mhz
    seconds = session.cycles / (clock_mhz * 1e6)
    print(f"{args.program}: {session.cycles} cycles per step ({seconds * 1e3:.3f} ms at "
          f"{clock_mhz:g} MHz)")
    if start:
        print(f"resuming from {args.checkpoint} after step {start}")
    train(session, stream, start, args.steps, checkpoint=args.checkpoint,
          on_step=lambda step, loss, s: print(f"step {step:3d}  loss {loss:.4f}  ({s:.2f} s emulated)"))


def cmd_asm(args) -> None:
    """Print a program file's instructions as assembly."""
    from satc.backends.sat import Program, disassemble, encode_all

    program = Program.load(args.program)
    labels = program.meta.get("satc", {}).get("labels")
    lines = disassemble(encode_all(program.instructions)).splitlines()
    for i, line in enumerate(lines):
        print(f"{line}  # {i}: {labels[i]}" if labels else line)


def _check_output_dirs(paths: dict[str, str | None]) -> None:
    """Refuse, before any long work, an output path whose folder does not exist."""
    from pathlib import Path

    for option, path in paths.items():
        if path and not Path(path).resolve().parent.is_dir():
            raise SatcError(f"{option} {path}: folder {Path(path).parent} does not exist; "
                            "create it first (nothing was computed)")


def _batch_of(program) -> int | None:
    """Images per step of a program file: dim 0 of its first input (None without a manifest)."""
    meta = program.meta.get("satc", {})
    order = meta.get("input_order")
    return meta["input_shapes"][order[0]][0] if order else None


def cmd_schedule(args) -> None:
    """Schedule a program file offline; print utilisation, bounds and the critical path."""
    from satc.backends.sat import Program
    from satc.backends.sat.energy import format_energy, step_energy
    from satc.backends.sat.roofline import format_roofline, roofline
    from satc.passes.schedule import format_report, schedule_program, write_gantt, write_trace
    from satc.runtime import rescheduled

    _check_output_dirs({"-o": args.output, "--trace": args.trace, "--gantt": args.gantt})
    program = Program.load(args.program)
    labels = program.meta.get("satc", {}).get("labels")
    result = schedule_program(program, args.method, labels=labels, time_limit_s=args.time_limit,
                              workers=args.workers, seed=args.seed, progress=not args.quiet)
    result.check()
    print(format_report(result))
    print("\n" + format_energy(step_energy(program.instructions, program.config, result.makespan, labels),
                               batch=_batch_of(program)))
    if labels:
        print("\nroofline:\n" + format_roofline(roofline(program.instructions, labels,
                                                        program.config), result.makespan))
    if args.trace:
        write_trace(result, args.trace)
        print(f"wrote trace {args.trace} (open in https://ui.perfetto.dev)")
    if args.gantt:
        write_gantt(result, args.gantt)
        print(f"wrote Gantt chart {args.gantt}")
    if args.output:
        rescheduled(result).save(args.output)
        print(f"wrote scheduled program {args.output}")


def cmd_bench(args) -> None:
    """Run a results benchmark: ``paper`` is the paper's SAT comparison (satc.paper)."""
    from satc.paper import main as paper

    paper(args.args)


def cmd_sweep(args) -> None:
    """Design-space sweep over hardware-config fields and N:M ratios on Dask, with Pareto fronts."""
    from pathlib import Path

    from satc.dse.space import parse_axis
    from satc.sweep import DEFAULT_AXES, format_table, plot, run_sweep, write_csv

    axes = [parse_axis(v) for v in args.vary or ()]
    if args.arrays:
        axes.append(parse_axis(f"rows+cols={args.arrays}"))
    if args.bandwidths:
        axes.append(parse_axis(f"dram_bandwidth_gbps={args.bandwidths}"))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = run_sweep(args.model, args.batch, axes or DEFAULT_AXES, args.sparsities.split(","), hw=args.hw,
                    sample=args.sample, seed=args.seed, scheduler=args.scheduler, workers=args.workers,
                    cache_dir=None if args.no_cache else args.cache, progress=not args.quiet)
    print(format_table(res.points))
    print(f"sweep took {time.perf_counter() - t0:.1f} s"
          + (" (interrupted: the finished rows are kept and cached)" if res.interrupted else ""))
    write_csv(res.points, out / f"sweep-{args.model}.csv")
    if any(p.ok for p in res.points):
        plot(res.points, out / f"sweep-{args.model}.png")
    print(f"wrote {out / f'sweep-{args.model}.csv'} and {out / f'sweep-{args.model}.png'}")


def _add_model_args(p: argparse.ArgumentParser, default_model: str | None = None) -> None:
    if default_model:
        p.add_argument("model", nargs="?", default=default_model, help="zoo model name or .onnx file")
    else:
        p.add_argument("model", help="zoo model name or .onnx file")
    p.add_argument("--batch", type=int, default=2, help="batch size for zoo models (default 2)")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,..",
                   help="bind an input's shape (symbolic ONNX dims); repeatable")
    p.add_argument("--sparsity", default="dense", help="dense | ff:N:M | bdwp:N:M | bdwp-nested:N:M")
    p.add_argument("--exclude", action="append", help="layer to keep dense; repeatable")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--lr", type=float, default=0.05)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``satc`` command."""
    from satc.backends.sat.config import DEFAULT_HARDWARE
    from satc.dse.cache import default_cache_dir

    ap = argparse.ArgumentParser(prog="satc", description="compiler for SAT, the N:M sparse training accelerator")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("zoo", help="list bundled models").set_defaults(fn=cmd_zoo)
    p = sub.add_parser("ir", help="print the training graph")
    _add_model_args(p)
    p.add_argument("--stage", default="all", choices=("all", "forward", "ff", "bp", "wu", "opt", "sore"))
    p.add_argument("--print-after", action="store_true", help="print the IR after every pass")
    p.set_defaults(fn=cmd_ir)
    p = sub.add_parser("ops", help="MACs per layer and stage")
    _add_model_args(p)
    p.add_argument("--totals", action="store_true", help="stage totals only")
    p.add_argument("--report", action="store_true", help="also print which layers are sparse")
    p.add_argument("--coverage", action="store_true",
                   help="list every op: supported on SAT, interpreter only, or unsupported")
    p.set_defaults(fn=cmd_ops)
    p = sub.add_parser("compile", help="compile a training step to a SAT program file")
    _add_model_args(p)
    p.add_argument("--hw", default=DEFAULT_HARDWARE, help="hardware preset or TOML file")
    p.add_argument("-o", "--output", default="out", help="output folder (default out/)")
    p.add_argument("--no-interleave", action="store_true",
                   help="ablation: no interleave mapping (every array pass fills and drains)")
    p.set_defaults(fn=cmd_compile)
    p = sub.add_parser("run", help="train on the emulator from a program file")
    p.add_argument("program")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--data", choices=("digits", "synthetic"), default="digits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="save the training state here after every step; resume "
                   "from it when it exists")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("asm", help="print a program file as assembly")
    p.add_argument("program")
    p.set_defaults(fn=cmd_asm)
    p = sub.add_parser("schedule", help="schedule a program file offline and inspect it")
    p.add_argument("program")
    p.add_argument("--method", choices=("cpsat", "list", "inorder"), default="cpsat")
    p.add_argument("--time-limit", type=float, default=10.0, help="CP-SAT seconds for the whole solve (split over windows)")
    p.add_argument("--workers", type=int, default=1, help="CP-SAT workers (1: reproducible)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trace", help="write a Chrome/Perfetto trace JSON")
    p.add_argument("--gantt", help="write a Gantt chart PNG")
    p.add_argument("-o", "--output", help="write the rescheduled program file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_schedule)
    p = sub.add_parser("bench", help="results benchmarks: paper (docs/results-sat.md)")
    p.add_argument("name", choices=("paper",))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own flags (--help)")
    p.set_defaults(fn=cmd_bench)
    p = sub.add_parser("sweep", help="design-space sweep of hardware fields x N:M on Dask, Pareto fronts")
    p.add_argument("model", nargs="?", default="cnn")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--hw", default=DEFAULT_HARDWARE, help="base hardware preset or TOML file")
    p.add_argument("--vary", action="append", metavar="FIELD[+FIELD]=V1,V2,..",
                   help="vary any hardware-config field (tied fields share a value); repeatable")
    p.add_argument("--arrays", help="array sizes, shorthand for --vary rows+cols=..")
    p.add_argument("--bandwidths", help="DRAM GB/s, shorthand for --vary dram_bandwidth_gbps=..")
    p.add_argument("--sparsities", default="bdwp:2:8,bdwp:2:4,bdwp:1:8", help="N:M modes (dense always runs)")
    p.add_argument("--sample", type=int, help="measure this many points drawn from the grid")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample")
    p.add_argument("--scheduler", help="address of a running dask scheduler (default: a LocalCluster)")
    p.add_argument("--workers", type=int, help="LocalCluster worker processes (default: all cores)")
    p.add_argument("--cache", default=str(default_cache_dir()), help="result cache folder")
    p.add_argument("--no-cache", action="store_true", help="recompute every point")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("-o", "--output", default="out")
    p.set_defaults(fn=cmd_sweep)
    p = sub.add_parser("hw", help="SAT hardware configs")
    p.add_argument("action", choices=("show", "list"))
    p.add_argument("name", nargs="?", default=DEFAULT_HARDWARE, help="preset name or TOML file")
    p.set_defaults(fn=cmd_hw)
    p = sub.add_parser("demo", help="the main job on the default model and hardware")
    _add_model_args(p, DEFAULT_MODEL)
    p.add_argument("--hw", default=DEFAULT_HARDWARE, help="hardware preset or TOML file")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--time-limit", type=float, default=5.0, help="CP-SAT seconds for the whole solve (split over windows)")
    p.add_argument("--no-at-scale", dest="at_scale", action="store_false",
                   help="skip the closing comparison on ResNet-18 CIFAR batch 32 (about a minute)")
    p.set_defaults(fn=cmd_demo, batch=DEFAULT_BATCH, sparsity="bdwp:2:8")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``satc`` console script."""
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except SatcError as e:
        print(f"satc: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head/less that closed early
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
