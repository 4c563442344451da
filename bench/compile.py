"""Compile time and program size of whole training steps on ``sat-vcu1525``.

For ResNet-18 (CIFAR stem, batch 32) and ResNet-50 (ImageNet stem, 224x224,
batch 8), dense and ``bdwp:2:8``: the median wall time of ``satc.compile``
over ``--repeat`` runs in one warm process (the first run's module imports
are excluded by a warm-up compile of a small model), the instruction count,
the DRAM image and the liveness pool of intermediates.

Usage: ``.venv/bin/python bench/compile.py [--repeat 3] [--models resnet18_cifar:32,resnet50:8]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from satc.backends.sat.config import DEFAULT_HARDWARE

import satc

IMAGE = {"resnet18_cifar": 32, "resnet50_cifar": 32, "vgg16_bn": 32, "resnet18": 224, "resnet50": 224}


def compile_zoo(name: str, batch: int, sparsity: str, hw: str = DEFAULT_HARDWARE):
    """satc.compile of zoo model ``name`` at ``batch`` with SGD (momentum 0.9, wd 5e-4)."""
    size = IMAGE[name]
    return satc.compile(name, input_shapes={"x": (batch, 3, size, size)}, sparsity=sparsity,
                        hw=hw, optimizer=satc.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4))


def main() -> None:
    """Print the compile-time table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", default="resnet18_cifar:32,resnet50:8")
    args = ap.parse_args()
    compile_zoo("resnet18_cifar", 2, "dense")           # warm-up: imports, torch.export
    rows = []
    for item in args.models.split(","):
        name, batch = item.split(":")
        for sparsity in ("dense", "bdwp:2:8"):
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                prog = compile_zoo(name, int(batch), sparsity)
                times.append(time.perf_counter() - t)
            rows.append((name, int(batch), sparsity, statistics.median(times),
                         len(prog.program.instructions), prog.program.dram_size,
                         prog.plan.pool_bytes,
                         sum(int(np.prod(v.shape)) * 4 for n in prog.graph.nodes for v in n.outputs)))
            del prog
    print(f"{'model':<16} {'batch':>5} {'sparsity':<9} {'compile s':>9} {'instrs':>8} "
          f"{'DRAM MiB':>9} {'pool MiB':>9} {'no-reuse MiB':>12}")
    for name, batch, sp, t, n, dram, pool, made in rows:
        print(f"{name:<16} {batch:>5} {sp:<9} {t:>9.2f} {n:>8,} {dram / 2**20:>9.1f} "
              f"{pool / 2**20:>9.1f} {made / 2**20:>12.1f}")


if __name__ == "__main__":
    main()
