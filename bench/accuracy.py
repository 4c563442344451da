"""Accuracy study: dense vs N:M (FF-only and BDWP) training from the same initialisation.

``python bench/accuracy.py`` trains the zoo ``cnn`` and ``mlp`` on
scikit-learn's 8x8 digits for each mode and seed and prints a markdown
table of final test accuracy and training MACs per step. :func:`run_study`
works unchanged on any model factory and pair of data loaders.

Training MACs per step count, for every Conv2d/Linear layer, the forward
GEMM (FF), the input-gradient GEMM (BP) and the weight-gradient GEMM (WU),
each equal to the layer's forward MACs for the batch (BP of the first layer
included). "Dense" is that sum; "effective" is what an N:M engine such as
SAT performs: FF and BP of each sparse layer scaled by its ``ff_density`` /
``bp_density`` (N/M, more where M does not divide the channel count; BP
stays dense in mode ``ff``, whose W_ff is not N:M along Co), WU dense.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from satc.data import digits
from satc.models import get_model, layer_macs
from satc.sparsity import SparseConv2d, SparseLinear, convert

DEFAULT_MODES = ("dense", "ff:2:8", "bdwp:2:8", "bdwp:2:4", "bdwp:1:8")


@dataclass(frozen=True)
class ModeResult:
    """One mode of a study: final test accuracy per seed and training MACs per step."""

    mode: str
    accuracies: tuple[float, ...]
    dense_macs: int
    effective_macs: int

    @property
    def mean(self) -> float:
        """Mean test accuracy over seeds."""
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        """Sample standard deviation of the test accuracy (0 for one seed)."""
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0


def digits_loaders(batch_size: int = 64, test_fraction: float = 0.2,
                   split_seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Shuffled train and ordered test loaders of sklearn's digits as [B, 1, 8, 8] in [0, 1]."""
    x_tr, y_tr, x_te, y_te = (torch.from_numpy(a) for a in digits(test_fraction, split_seed))
    return (DataLoader(TensorDataset(x_tr, y_tr), batch_size=batch_size, shuffle=True),
            DataLoader(TensorDataset(x_te, y_te), batch_size=512))


def training_macs(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> tuple[int, int]:
    """(dense-equivalent, effective) FF+BP+WU MACs of one training step of ``batch_size``."""
    dense = effective = 0
    modules = dict(model.named_modules())
    for name, macs in layer_macs(model, input_shape).items():
        layer = modules[name]
        ff, bp = ((layer.ff_density, layer.bp_density)
                  if isinstance(layer, (SparseConv2d, SparseLinear)) else (1.0, 1.0))
        dense += 3 * macs * batch_size
        effective += round(macs * batch_size * (ff + bp + 1.0))
    return dense, effective


def train(model: nn.Module, loader: DataLoader, epochs: int, device: str, lr: float,
          momentum: float, weight_decay: float) -> None:
    """SGD with momentum and a cosine learning-rate schedule, cross-entropy loss."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: str) -> float:
    """Top-1 accuracy (%) of ``model`` on ``loader``."""
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
        total += y.numel()
    return 100.0 * correct / total


def run_study(model_fn: Callable[[], nn.Module], train_loader: DataLoader, test_loader: DataLoader,
              modes: Sequence[str] = DEFAULT_MODES, seeds: Sequence[int] = (0, 1, 2),
              epochs: int = 30, device: str = "cpu", lr: float = 0.05, momentum: float = 0.9,
              weight_decay: float = 5e-4) -> list[ModeResult]:
    """Train a fresh ``model_fn()`` per mode and seed; report test accuracy and step MACs.

    For each seed every mode starts from the same initial weights and sees
    the same batch order. ``modes`` are sparsity specs (``'dense'``,
    ``'bdwp:2:8'``, ...) applied with :func:`satc.sparsity.convert`.
    """
    input_shape = tuple(next(iter(train_loader))[0].shape[1:])
    accs: dict[str, list[float]] = {mode: [] for mode in modes}
    macs: dict[str, tuple[int, int]] = {}
    for seed in seeds:
        torch.manual_seed(seed)
        init = {k: v.clone() for k, v in model_fn().state_dict().items()}
        for mode in modes:
            model = model_fn()
            model.load_state_dict(init)
            model = convert(model, mode).to(device)
            macs[mode] = training_macs(model, input_shape, train_loader.batch_size or 1)
            torch.manual_seed(seed)
            train(model, train_loader, epochs, device, lr, momentum, weight_decay)
            accs[mode].append(evaluate(model, test_loader, device))
    return [ModeResult(mode, tuple(accs[mode]), *macs[mode]) for mode in modes]


def format_table(model_name: str, results: Sequence[ModeResult]) -> str:
    """Markdown rows (no header) for one model's results; deltas are against mode ``dense``."""
    base = next((r.mean for r in results if r.mode == "dense"), None)
    rows = []
    for r in results:
        delta = "" if base is None or r.mode == "dense" else f"{r.mean - base:+.2f}"
        rows.append(f"| {model_name} | {r.mode} | {r.mean:.2f} +- {r.std:.2f} | {delta} | "
                    f"{r.dense_macs / 1e6:.2f} | {r.effective_macs / 1e6:.2f} | "
                    f"{r.effective_macs / r.dense_macs:.3f} |")
    return "\n".join(rows)


TABLE_HEADER = ("| model | mode | test acc % (mean +- std) | delta vs dense | "
                "train MMACs/step dense | effective | ratio |\n"
                "|---|---|---|---|---|---|---|")


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: run the study on digits for the zoo ``cnn`` and ``mlp``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["cnn", "mlp"])
    ap.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES))
    ap.add_argument("--seeds", type=int, default=3, help="number of seeds (0..n-1)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads; 1 is fastest for these tiny models on a shared CPU")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_loader, test_loader = digits_loaders(args.batch_size)
    print(f"digits: {len(train_loader.dataset)} train / {len(test_loader.dataset)} test, "
          f"{args.epochs} epochs, batch {args.batch_size}, seeds 0..{args.seeds - 1}, "
          f"device {args.device}, {args.threads} CPU thread(s)\n", file=sys.stderr)
    print(TABLE_HEADER)
    for name in args.models:
        start = time.perf_counter()
        results = run_study(lambda: get_model(name), train_loader, test_loader, args.modes,
                            range(args.seeds), args.epochs, args.device, args.lr)
        print(format_table(name, results), flush=True)
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
