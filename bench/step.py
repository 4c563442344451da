"""One ResNet-18 (CIFAR, batch 32) training step: emulated SAT program vs PyTorch on the CPU.

* SAT: ``CompiledProgram.step`` on ``sat-vcu1525`` (mixed precision: fp16
  GEMM operands, fp32 accumulate), and on the same config with
  ``precision = "fp32"`` (the emulator without fp16 rounding of operands);
  preparation of the emulator (checks, issue order, views) is timed once,
  then the median wall time of ``--repeat`` steps (``prog.step``: input
  encode, emulator run, loss and gradients read back; the state stays in
  DRAM between steps). The cycle model runs once and is excluded.
* torch: the same zoo model, forward + backward + SGD (momentum 0.9, wd
  5e-4), median of ``--repeat`` steps after one warm-up, on all the threads
  torch uses by default: dense, and with the same sparsity through
  ``satc.sparsity.convert`` (the BDWP training step in PyTorch: masks from
  the current weights, FF on W_ff, BP on W_bp, dense WU with SR-STE), so a
  sparse emulated step is compared with both.

Usage: ``.venv/bin/python bench/step.py [--sparsity bdwp:2:8] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from satc.backends.sat.config import DEFAULT_HARDWARE, load_hardware
from satc.models import get_model

import satc
import satc.sparsity


def torch_step_seconds(batch: int, repeat: int, sparsity: str = "dense") -> float:
    """Median wall time of a torch CPU training step of resnet18_cifar (``sparsity`` through
    satc.sparsity.convert unless dense)."""
    torch.manual_seed(0)
    model = get_model("resnet18_cifar").train()
    if sparsity != "dense":
        satc.sparsity.convert(model, sparsity)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    times = []
    for i in range(repeat + 1):
        t = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def sat_step_seconds(batch: int, sparsity: str, precision: str, repeat: int
                     ) -> tuple[float, float, float]:
    """(compile s, emulator preparation s, median step s) of resnet18_cifar on sat-vcu1525."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(load_hardware(DEFAULT_HARDWARE), precision=precision)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    t = time.perf_counter()
    prog = satc.compile(get_model("resnet18_cifar"), example_inputs=(x,), sparsity=sparsity, hw=cfg,
                        optimizer=satc.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4))
    t_compile = time.perf_counter() - t
    t = time.perf_counter()
    _ = prog.session.emulator                           # prepared on first use
    t_prep = time.perf_counter() - t
    _ = prog.timing                                     # the cycle model, once
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        prog.step(x, y)
        times.append(time.perf_counter() - t)
    return t_compile, t_prep, statistics.median(times)


def main() -> None:
    """Print emulated vs torch step times."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--sparsity", default="bdwp:2:8")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    t_torch = torch_step_seconds(args.batch, args.repeat)
    print(f"torch CPU step ({torch.get_num_threads()} threads), dense: {t_torch:.2f} s")
    t_same = t_torch
    if args.sparsity != "dense":
        t_same = torch_step_seconds(args.batch, args.repeat, args.sparsity)
        print(f"torch CPU step ({torch.get_num_threads()} threads), {args.sparsity} "
              f"(satc.sparsity layers): {t_same:.2f} s")
    for precision in ("mixed", "fp32"):
        tc, tp, ts = sat_step_seconds(args.batch, args.sparsity, precision, args.repeat)
        same = f"{ts / t_same:.1f}x torch {args.sparsity}, " if args.sparsity != "dense" else ""
        print(f"SAT emulated step, sat-vcu1525 precision={precision}, {args.sparsity}: "
              f"{ts:.2f} s ({same}{ts / t_torch:.1f}x torch dense; compile {tc:.1f} s, emulator "
              f"preparation {tp:.1f} s)")

if __name__ == "__main__":
    main()
