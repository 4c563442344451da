"""Reference interpreter: numpy execution of any IR graph, the oracle for everything later."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from satc.errors import IRError, ShapeError
from satc.ir.graph import Graph, Value
from satc.ir.ops import get_op


@dataclass
class ExecResult:
    """What one run of a graph gives back."""

    outputs: dict[str, np.ndarray]
    new_state: dict[str, np.ndarray]
    values: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def loss(self) -> float | None:
        """The scalar loss, when the graph has a ``loss`` output."""
        return float(self.outputs["loss"]) if "loss" in self.outputs else None

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """Parameter gradients (outputs named ``grad/<param>``), keyed by parameter."""
        return {k[5:]: v for k, v in self.outputs.items() if k.startswith("grad/")}


def _bind(v: Value, arr, what: str, compute: np.dtype | None) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.shape != v.shape:
        raise ShapeError(f"{what} {v.name!r} has shape {arr.shape}, the graph expects "
                         f"{v.shape}; recompile for this shape (input_shapes=...)")
    if arr.dtype != np.dtype(v.dtype):
        if v.dtype.startswith("int") and not np.issubdtype(arr.dtype, np.integer):
            raise ShapeError(f"{what} {v.name!r} must be integer ({v.dtype}), got {arr.dtype}")
        arr = arr.astype(v.dtype)
    if compute is not None and v.dtype == "float32":
        arr = arr.astype(compute)
    return arr


def interpret(graph: Graph, inputs: Mapping[str, np.ndarray],
              state: Mapping[str, np.ndarray] | None = None, keep_values: bool = False,
              compute_dtype: str | None = None) -> ExecResult:
    """Run ``graph`` on ``inputs`` and ``state`` (default: its initial state).

    ``compute_dtype="float64"`` runs every float32 tensor in float64: for
    checking graph semantics on models whose fp32 rounding is ill-conditioned.
    """
    compute = np.dtype(compute_dtype) if compute_dtype else None
    env: dict[int, np.ndarray] = {}
    missing = [v.name for v in graph.inputs if v.name not in inputs]
    if missing:
        raise ShapeError(f"missing graph inputs {missing}; the graph takes "
                         f"{[v.name for v in graph.inputs]}")
    for v in graph.inputs:
        env[id(v)] = _bind(v, inputs[v.name], "input", compute)
    state = dict(state) if state is not None else graph.initial_state()
    for k, v in graph.state.items():
        if k not in state:
            raise ShapeError(f"state {k!r} is missing; start from graph.initial_state()")
        env[id(v)] = _bind(v, state[k], "state", compute)
    for k, v in graph.constants.items():
        env[id(v)] = _bind(v, graph.initializers[k], "constant", compute)
    for node in graph.nodes:
        args = [env[id(v)] for v in node.inputs]
        outs = get_op(node.op).kernel(args, node.attrs)
        for v, a in zip(node.outputs, outs):
            if a.shape != v.shape:
                raise IRError(f"node {node.name!r} ({node.op}) produced shape {a.shape}, "
                              f"its type says {v.shape}")
            env[id(v)] = a
    outputs = {k: env[id(v)] for k, v in graph.outputs.items()}
    new_state = {k: np.array(a) for k, a in state.items()}
    for k, v in graph.state_updates.items():
        new_state[k] = env[id(v)]
    values = {}
    if keep_values:
        values = {v.name: env[id(v)] for n in graph.nodes for v in n.outputs}
    return ExecResult(outputs, new_state, values)
