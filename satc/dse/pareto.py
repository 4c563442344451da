"""Pareto fronts of sweep points: minimise every objective, grey the dominated points."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from satc.atomic import save_figure


def front(values: Sequence[Sequence[float]]) -> list[bool]:
    """For each point, True when no other point is <= in every objective and < in one."""
    def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    return [not any(dominates(o, v) for o in values) for v in values]


def plot_fronts(x: Sequence[float], ys: Sequence[tuple[str, Sequence[float]]], labels: Sequence[str],
                xlabel: str, path: str | Path, title: str = "") -> None:
    """One panel per (name, y values): every point, the front in colour (labelled and joined),
    the dominated points grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ys), figsize=(5.2 * len(ys), 4), squeeze=False)
    for ax, (name, y) in zip(axes[0], ys):
        on = front(list(zip(x, y)))
        ax.scatter([a for a, o in zip(x, on) if not o], [b for b, o in zip(y, on) if not o],
                   color="0.75", s=18, label="dominated")
        pts = sorted((a, b, lab) for a, b, lab, o in zip(x, y, labels, on) if o)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="C3", ms=5, label="Pareto front")
        for a, b, lab in pts:
            ax.annotate(lab, (a, b), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
