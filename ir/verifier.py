"""IR verifier: SSA, known ops, types that match the shape rules, valid outputs."""

from __future__ import annotations

import math

import numpy as np

from satc.errors import IRError
from satc.ir.graph import Graph
from satc.ir.ops import get_op

#: The most bytes one value may hold: the 4 GiB the SAT ISA addresses in DRAM (32-bit
#: ``dram_addr``). Frontends check inputs against it before anything is allocated.
MAX_VALUE_BYTES = 1 << 32


def size_problem(shape: tuple[int, ...], dtype: str) -> str | None:
    """Why a tensor of ``shape`` cannot be compiled (a dim below 1, or more than
    :data:`MAX_VALUE_BYTES`), or None."""
    if any(d < 1 for d in shape):
        return f"has shape {tuple(shape)}; every dim must be an integer >= 1"
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize   # exact: numpy's int64 product can overflow
    if nbytes > MAX_VALUE_BYTES:
        return (f"of shape {tuple(shape)} holds {nbytes} bytes, more than the {MAX_VALUE_BYTES} "
                "the SAT DRAM addresses; use a smaller batch or model")
    return None


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
        if v.name not in graph.constants and (problem := size_problem(v.shape, v.dtype)):
            fail(f"{'input' if any(v is i for i in graph.inputs) else 'state'} %{v.name} {problem}")
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
            if problem := size_problem(v.shape, v.dtype):
                fail(f"{at}: output %{v.name} {problem}")
    for k, v in {**graph.outputs, **graph.state_updates}.items():
        if id(v) not in defined:
            fail(f"output {k!r} refers to %{v.name}, which no node or leaf defines")
    for k, v in graph.state_updates.items():
        if k not in graph.state:
            fail(f"state update {k!r} names no param or buffer")
        if v.type != graph.state[k].type:
            fail(f"state update {k!r} has type {v.type}, the state has {graph.state[k].type}")
    return graph
