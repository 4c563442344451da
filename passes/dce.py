"""Dead-code elimination: drop nodes that no output or state update needs."""

from __future__ import annotations

from satc.ir.graph import Graph


def eliminate_dead_code(graph: Graph) -> Graph:
    """Remove, in place, every node none of whose outputs reaches an output; return the graph."""
    live = graph.kept_ids()
    kept = []
    for node in reversed(graph.nodes):
        if any(id(v) in live for v in node.outputs):
            kept.append(node)
            live.update(id(v) for v in node.inputs)
    graph.nodes = kept[::-1]
    return graph
