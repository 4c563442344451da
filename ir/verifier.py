"""IR verifier: SSA, known ops, types that match the shape rules, valid outputs."""

from __future__ import annotations

from satc.errors import IRError
from satc.ir.graph import Graph
from satc.ir.ops import get_op


def verify(graph: Graph, after_pass: str | None = None) -> Graph:
    """Check ``graph`` and return it; IRError names the first broken node (and the pass)."""
    where = f" after pass {after_pass!r}" if after_pass else ""

    def fail(msg: str) -> None:
        raise IRError(f"graph {graph.name!r}{where}: {msg}")

    defined: set[int] = set()
    names: set[str] = set()
    for v in graph.leaves():
        if v.name in names:
            fail(f"value name {v.name!r} is defined twice")
        names.add(v.name)
        defined.add(id(v))
    for k, v in graph.state.items():
        if k not in graph.initializers:
            fail(f"state {k!r} has no initial value")
    for i, node in enumerate(graph.nodes):
        at = f"node {i} {node.name!r} ({node.op})"
        try:
            opdef = get_op(node.op)
        except IRError as e:
            fail(f"{at}: {e}")
        for v in node.inputs:
            if id(v) not in defined:
                fail(f"{at}: input %{v.name} is used before it is defined (or not in this graph)")
        try:
            types = opdef.infer([v.type for v in node.inputs], node.attrs)
        except IRError as e:
            fail(f"{at}: {e}")
        if [v.type for v in node.outputs] != list(types):
            fail(f"{at}: recorded output types {[str(v.type) for v in node.outputs]} "
                 f"differ from inferred {[str(t) for t in types]}")
        for v in node.outputs:
            if v.name in names:
                fail(f"{at}: output name {v.name!r} is defined twice")
            if v.producer is not node:
                fail(f"{at}: output %{v.name} does not point back to its node")
            names.add(v.name)
            defined.add(id(v))
    for k, v in {**graph.outputs, **graph.state_updates}.items():
        if id(v) not in defined:
            fail(f"output {k!r} refers to %{v.name}, which no node or leaf defines")
    for k, v in graph.state_updates.items():
        if k not in graph.state:
            fail(f"state update {k!r} names no param or buffer")
        if v.type != graph.state[k].type:
            fail(f"state update {k!r} has type {v.type}, the state has {graph.state[k].type}")
    return graph
