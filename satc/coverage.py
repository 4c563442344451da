"""Op coverage of a model: every op with its status on SAT, the interpreter, or neither.

:func:`coverage` imports the model (torch module, ONNX file, zoo name or
Graph), builds its training graph (loss, backward ops, optimizer, BDWP
state when ``sparsity`` asks for it) and classifies each IR op:

* ``sat`` -- the SAT backend has a lowering for it (``LOWERINGS``);
* ``interpreter`` -- the IR op exists (interpreter kernel, shape rule) but
  SAT cannot lower it yet: ``satc.compile`` refuses it;
* ``unsupported`` -- the frontend cannot translate it (no handler, no
  core-ATen decomposition): the import error lists every such op, and the
  rest of the model cannot be classified until they are rewritten.

A lowering may still refuse some attributes of an op it lowers (softmax over
a middle axis); ``satc.compile`` names the node. Convs are classified by their
attributes: a dilated conv is ``interpreter`` (no SAT lowering), a grouped or
depthwise one (groups > 1) is ``sat`` with a note (how SAT runs it).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from satc.errors import SatcError, UnsupportedOpError
from satc.ir.graph import Graph

STATUSES = ("sat", "interpreter", "unsupported")


@dataclass(frozen=True)
class OpCoverage:
    """One op of a model: its status, how many nodes use it, in which stages, a note."""

    op: str
    status: str
    count: int
    stages: tuple[str, ...] = ()
    note: str = ""


def graph_coverage(graph: Graph) -> list[OpCoverage]:
    """The status of every IR op of ``graph``, SAT first, then interpreter-only; by name."""
    from satc.backends.sat.codegen import LOWERINGS

    counts = Counter(n.op for n in graph.nodes)
    stages: dict[str, set[str]] = defaultdict(set)
    for n in graph.nodes:
        stages[n.op].add(n.stage.value)
    rows = [OpCoverage(op, _conv_status(graph, op) if op in LOWERINGS else "interpreter", c,
                       tuple(sorted(stages[op])), _conv_note(graph, op))
            for op, c in counts.items()]
    return sorted(rows, key=lambda r: (STATUSES.index(r.status), r.op))


_CONVS = ("conv2d", "conv2d_grad_input", "conv2d_grad_weight")


def _conv_status(graph: Graph, op: str) -> str:
    """'interpreter' for a conv op some node of which is dilated (no SAT lowering), else 'sat'."""
    dilated = op in _CONVS and any(tuple(n.attrs["dilation"]) != (1, 1)
                                   for n in graph.nodes if n.op == op)
    return "interpreter" if dilated else "sat"


def _conv_note(graph: Graph, op: str) -> str:
    """A note for conv ops with groups > 1 (how SAT runs them), else ''."""
    groups = sorted({n.attrs["groups"] for n in graph.nodes if n.op == op and op in _CONVS} - {1})
    if not groups:
        return ""
    return (f"groups {groups}: one implicit GEMM per group on the STCE; stride-1 depthwise "
            "on the vector engine")


def coverage(model: Any, example_inputs: Sequence[Any] | None = None,
             input_shapes: Mapping[str, Sequence[int]] | None = None, batch: int | None = None,
             sparsity: str = "dense") -> list[OpCoverage]:
    """The op coverage of ``model`` (loaded as by ``satc.compile``) in its training graph.

    When the frontend cannot translate some ops, those are the rows (status
    ``unsupported``, the note names the node and layer). When the training
    graph cannot be built (an op without a gradient rule), the forward
    graph's ops are listed and the first row's note says why.
    """
    from satc.pipeline import CompileOptions, load_model, run_passes

    try:
        src = load_model(model, example_inputs=example_inputs, input_shapes=input_shapes, batch=batch)
    except UnsupportedOpError as e:
        per_op: dict[str, list[str]] = defaultdict(list)
        for op, where in getattr(e, "unsupported", None) or [("?", str(e))]:
            per_op[op].append(where)
        return [OpCoverage(op, "unsupported", len(w), (), "; ".join(w)) for op, w in sorted(per_op.items())]
    try:
        graph = run_passes(src.graph, CompileOptions(sparsity=sparsity))
    except SatcError as e:
        rows = graph_coverage(src.graph)
        return [OpCoverage(rows[0].op, rows[0].status, rows[0].count, rows[0].stages,
                           f"forward graph only: the training graph failed: {e}")] + rows[1:]
    return graph_coverage(graph)


def format_coverage(rows: Sequence[OpCoverage]) -> str:
    """A text table of the rows and a one-line summary per status."""
    width = max([len(r.op) for r in rows] + [2])
    lines = [f"{'op':<{width}}  {'status':<12}{'nodes':>6}  stages  note"]
    for r in rows:
        lines.append(f"{r.op:<{width}}  {r.status:<12}{r.count:>6}  {','.join(r.stages) or '-':<6}  "
                     f"{r.note}".rstrip())
    per = Counter(r.status for r in rows)
    lines.append("ops: " + ", ".join(f"{per[s]} {s}" for s in STATUSES))
    return "\n".join(lines)
