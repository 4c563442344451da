"""Operation accounting: MACs per layer and per stage, dense-equivalent and effective.

What is counted: multiply-accumulates of the GEMM ops (conv2d and matmul
and their gradients) in FF, BP and WU; the optimizer's per-element
multiply-adds in OPT (and the SR-STE term in WU); SORE's per-element
compare work for N:M pre-generation. Vector work (BN, activations,
pooling, softmax) is not counted, as in the paper's operation counts.

*Dense-equivalent* is what the same op costs in dense training (SORE and
SR-STE cost nothing there); *effective* scales a GEMM that reads an N:M
weight by N/M.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from satc.ir.graph import Graph
from satc.ir.ops import get_op
from satc.ir.types import Stage

EXTRA_WORK_OPS = ("nm_prune", "srste_grad")  # work that dense training does not do


@dataclass(frozen=True)
class OpRow:
    """MACs of one layer in one stage."""

    layer: str
    stage: Stage
    dense: int
    effective: int


@dataclass
class OpCounts:
    """The rows of a graph's op accounting, with totals."""

    rows: list[OpRow]

    def by_stage(self) -> dict[Stage, tuple[int, int]]:
        """(dense, effective) MACs per stage, every stage present."""
        out = {s: [0, 0] for s in Stage}
        for r in self.rows:
            out[r.stage][0] += r.dense
            out[r.stage][1] += r.effective
        return {s: (d, e) for s, (d, e) in out.items()}

    def total(self) -> tuple[int, int]:
        """(dense, effective) MACs of the whole step."""
        return sum(r.dense for r in self.rows), sum(r.effective for r in self.rows)

    @property
    def reduction(self) -> float:
        """1 - effective / dense: the fraction of the step's operations saved."""
        dense, eff = self.total()
        return 1.0 - eff / dense if dense else 0.0

    def format(self, per_layer: bool = True) -> str:
        """A text table: per layer and stage (optional), per stage, total."""
        lines = []
        if per_layer:
            table: dict[str, dict[Stage, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
            for r in self.rows:
                table[r.layer][r.stage][0] += r.dense
                table[r.layer][r.stage][1] += r.effective
            stages = [Stage.FF, Stage.BP, Stage.WU, Stage.OPT, Stage.SORE]
            lines.append(f"{'layer':<30}" + "".join(f"{s.value + ' MMAC':>13}" for s in stages))
            for layer, per in table.items():
                lines.append(f"{layer or '-':<30}" + "".join(
                    f"{per[s][1] / 1e6:>13.3f}" for s in stages))
            lines.append("")
        lines.append(f"{'stage':<8}{'dense MMAC':>14}{'effective MMAC':>16}{'ratio':>8}")
        for s, (d, e) in self.by_stage().items():
            ratio = f"{e / d:.3f}" if d else "-"
            lines.append(f"{s.value:<8}{d / 1e6:>14.3f}{e / 1e6:>16.3f}{ratio:>8}")
        d, e = self.total()
        lines.append(f"{'total':<8}{d / 1e6:>14.3f}{e / 1e6:>16.3f}{e / d if d else 0:>8.3f}")
        lines.append(f"operation reduction: {100 * self.reduction:.1f}%")
        return "\n".join(lines)


def node_macs(node) -> tuple[int, int]:
    """(dense-equivalent, effective) MACs of one node."""
    fn = get_op(node.op).macs
    if fn is None:
        return 0, 0
    macs = fn([v.type for v in node.inputs], [v.type for v in node.outputs], node.attrs)
    if node.op in EXTRA_WORK_OPS:
        return 0, macs
    nm = node.attrs.get("nm")
    return macs, (macs * nm[0] // nm[1] if nm else macs)


def count_ops(graph: Graph) -> OpCounts:
    """MACs per layer and stage of ``graph``, dense-equivalent and effective."""
    acc: dict[tuple[str, Stage], list[int]] = defaultdict(lambda: [0, 0])
    for node in graph.nodes:
        d, e = node_macs(node)
        if d or e:
            acc[(node.layer, node.stage)][0] += d
            acc[(node.layer, node.stage)][1] += e
    return OpCounts([OpRow(layer, stage, d, e) for (layer, stage), (d, e) in acc.items()])
