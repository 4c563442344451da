"""Operation reduction of N:M sparse training per zoo model (satc.count_ops), as a table.

    .venv/bin/python bench/ops.py [--models resnet18_cifar,resnet50] [--modes ff:2:8,bdwp:2:8]

Prints, for each model and sparsity mode, the training-step MACs per stage
(effective, as a fraction of dense training) and the total reduction.
"""

from __future__ import annotations

import argparse

from satc.ir.types import Stage
from satc.passes.op_count import count_ops
from satc.passes.optimizer import SGD

from satc.pipeline import CompileOptions, load_model, run_passes

# model, batch: the paper's settings (CIFAR batch 32, ImageNet batch 8)
DEFAULT_MODELS = [("resnet18_cifar", 32), ("resnet50_cifar", 32), ("resnet18", 8), ("resnet50", 8),
                  ("vgg16_bn", 32), ("vit_tiny", 32)]
DEFAULT_MODES = ["ff:2:8", "bdwp:2:8", "bdwp:2:4", "bdwp:1:8"]


def _training_graph(forward, mode: str):
    """The training graph of ``forward`` with sparsity ``mode`` and SGD (lr 0.1, momentum 0.9)."""
    return run_passes(forward, CompileOptions(sparsity=mode, optimizer=SGD(lr=0.1, momentum=0.9)),
                      until="sparsify")


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated model[:batch] list")
    ap.add_argument("--modes", default=",".join(DEFAULT_MODES))
    args = ap.parse_args()
    models = DEFAULT_MODELS if not args.models else [
        (m.split(":")[0], int(m.split(":")[1]) if ":" in m else 32) for m in args.models.split(",")]
    stages = [Stage.FF, Stage.BP, Stage.WU, Stage.OPT, Stage.SORE]
    print("| model | batch | mode | dense GMAC | " + " | ".join(f"{s.value} eff/dense" for s in stages)
          + " | effective GMAC | reduction |")
    print("|---|---|---|---|" + "---|" * len(stages) + "---|---|")
    for name, batch in models:
        fwd = load_model(name, batch=batch).graph
        dense_tg = _training_graph(fwd, "dense")
        base = count_ops(dense_tg).by_stage()
        for mode in args.modes.split(","):
            counts = count_ops(_training_graph(fwd, mode))
            per = counts.by_stage()
            d, e = counts.total()
            cells = [f"{per[s][1] / base[s][0]:.3f}" if base[s][0] else f"+{per[s][1] / d:.2%}" for s in stages]
            print(f"| {name} | {batch} | {mode} | {d / 1e9:.2f} | " + " | ".join(cells)
                  + f" | {e / 1e9:.2f} | {100 * counts.reduction:.1f}% |")


if __name__ == "__main__":
    main()
