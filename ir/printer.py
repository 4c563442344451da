"""Readable text form of an IR graph, optionally filtered by stage."""

from __future__ import annotations

from typing import Any, Iterable

from satc.ir.graph import Graph
from satc.ir.types import Stage


def _fmt_attr(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt_attr(x) for x in v) + "]"
    return str(v)


def format_graph(graph: Graph, stages: Iterable[Stage | str] | None = None) -> str:
    """The graph as text: header, state, then one line per node (of ``stages`` only)."""
    keep = {Stage(s) for s in stages} if stages is not None else set(Stage)
    lines = [f"graph {graph.name}("
             + ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs) + ") {"]
    for kind, table in (("param", graph.params), ("buffer", graph.buffers)):
        for k, v in table.items():
            lines.append(f"  {kind} %{k}: {v.type}")
    current = None
    for n in graph.nodes:
        if n.stage not in keep:
            continue
        if n.stage != current:
            current = n.stage
            lines.append(f"  // ---- {n.stage} ----")
        outs = ", ".join(f"%{v.name}" for v in n.outputs)
        ins = ", ".join(f"%{v.name}" for v in n.inputs)
        attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in sorted(n.attrs.items()))
        types = ", ".join(str(v.type) for v in n.outputs)
        lines.append(f"  {outs} = {n.op}({ins})" + (f" {{{attrs}}}" if attrs else "")
                     + f" : {types}" + (f"  # {n.layer}" if n.layer else ""))
    for k, v in graph.outputs.items():
        lines.append(f"  output {k} = %{v.name}")
    for k, v in graph.state_updates.items():
        lines.append(f"  update {k} <- %{v.name}")
    lines.append("}")
    return "\n".join(lines)
