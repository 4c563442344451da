"""The satc IR: a typed SSA graph of tensor values and ops.

A :class:`Graph` holds

* ``inputs``: user-fed tensors (images, labels);
* ``params`` / ``buffers``: named state, trainable or not (BN running stats,
  optimizer state, pre-generated sparse weights), with initial values in
  ``initializers``;
* ``constants``: named read-only tensors (folded ONNX constants, scalars);
* ``nodes``: ops in topological order, each tagged with its training
  :class:`~satc.ir.types.Stage` and the model layer it came from;
* ``outputs``: named results (``logits``, ``loss``, ``grad/<param>``);
* ``state_updates``: the new value of each state tensor after the step.

Every value is defined once. Nodes are appended with :meth:`Graph.add`,
which runs the op's shape rule, so a graph is typed as it is built.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from satc.errors import IRError
from satc.ir.types import Stage, TensorType


@dataclass(eq=False)
class Value:
    """One SSA tensor value: defined by a node, or a graph input/state/constant."""

    name: str
    type: TensorType
    producer: "Node | None" = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The static shape."""
        return self.type.shape

    @property
    def dtype(self) -> str:
        """The element type name."""
        return self.type.dtype

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


@dataclass(eq=False)
class Node:
    """One op application: inputs, outputs, attributes, stage and source layer."""

    op: str
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    attrs: dict[str, Any]
    stage: Stage
    layer: str = ""
    name: str = ""

    def __repr__(self) -> str:
        return f"<{self.name}: {self.op} {self.stage}>"


@dataclass(eq=False)
class Graph:
    """A typed SSA graph; see the module docstring for its parts."""

    name: str = "graph"
    inputs: list[Value] = field(default_factory=list)
    params: dict[str, Value] = field(default_factory=dict)
    buffers: dict[str, Value] = field(default_factory=dict)
    constants: dict[str, Value] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    outputs: dict[str, Value] = field(default_factory=dict)
    state_updates: dict[str, Value] = field(default_factory=dict)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    _names: set[str] = field(default_factory=set, repr=False)
    _counter: Any = field(default_factory=itertools.count, repr=False)

    # ------------------------------------------------------------ naming
    def fresh_name(self, hint: str) -> str:
        """A value/node name not used yet in this graph, derived from ``hint``."""
        hint = hint or "v"
        name = hint
        while name in self._names:
            name = f"{hint}.{next(self._counter)}"
        self._names.add(name)
        return name

    def _leaf(self, name: str, ttype: TensorType) -> Value:
        if name in self._names:
            raise IRError(f"graph {self.name!r}: the name {name!r} is defined twice")
        self._names.add(name)
        return Value(name, ttype)

    # ------------------------------------------------------------ leaves
    def add_input(self, name: str, ttype: TensorType) -> Value:
        """Declare a user-fed input tensor."""
        v = self._leaf(name, ttype)
        self.inputs.append(v)
        return v

    def add_param(self, name: str, init: np.ndarray, trainable: bool = True) -> Value:
        """Declare a state tensor with its initial value (trainable: a parameter)."""
        init = np.asarray(init)
        v = self._leaf(name, TensorType(tuple(init.shape), str(init.dtype)))
        (self.params if trainable else self.buffers)[name] = v
        self.initializers[name] = init
        return v

    def add_constant(self, value: np.ndarray, hint: str = "const") -> Value:
        """Declare a read-only constant tensor."""
        value = np.asarray(value)
        v = Value(self.fresh_name(hint), TensorType(tuple(value.shape), str(value.dtype)))
        self.constants[v.name] = v
        self.initializers[v.name] = value
        return v

    # ------------------------------------------------------------ nodes
    def add(self, op: str, inputs: Sequence[Value], attrs: dict[str, Any] | None = None,
            stage: Stage = Stage.FF, layer: str = "", name: str = "") -> tuple[Value, ...]:
        """Append ``op`` applied to ``inputs``; infer and return its output values."""
        from satc.ir.ops import get_op

        opdef = get_op(op)
        attrs = dict(attrs or {})
        node_name = self.fresh_name(name or (f"{layer}.{op}" if layer else op))
        try:
            out_types = opdef.infer([v.type for v in inputs], attrs)
        except IRError as e:
            raise type(e)(f"node {node_name!r} ({op}): {e}") from None
        node = Node(op, tuple(inputs), (), attrs, Stage(stage), layer, node_name)
        outs = tuple(
            Value(node_name if len(out_types) == 1 else self.fresh_name(f"{node_name}#{i}"), t, node)
            for i, t in enumerate(out_types))
        node.outputs = outs
        self.nodes.append(node)
        return outs

    def add1(self, op: str, inputs: Sequence[Value], attrs: dict[str, Any] | None = None,
             stage: Stage = Stage.FF, layer: str = "", name: str = "") -> Value:
        """Like :meth:`add` for a single-output op; returns that output."""
        outs = self.add(op, inputs, attrs, stage, layer, name)
        if len(outs) != 1:
            raise IRError(f"op {op!r} has {len(outs)} outputs; use Graph.add")
        return outs[0]

    # ------------------------------------------------------------ queries
    @property
    def state(self) -> dict[str, Value]:
        """Params and buffers together: everything a step reads and may update."""
        return {**self.params, **self.buffers}

    def leaves(self) -> Iterable[Value]:
        """Values defined outside any node: inputs, state and constants."""
        yield from self.inputs
        yield from self.params.values()
        yield from self.buffers.values()
        yield from self.constants.values()

    def users(self) -> dict[int, list[Node]]:
        """Map ``id(value)`` to the nodes that read it."""
        out: dict[int, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(id(v), []).append(n)
        return out

    def kept_ids(self) -> set[int]:
        """``id()`` of every value the step must keep: its outputs and state updates."""
        return {id(v) for v in (*self.outputs.values(), *self.state_updates.values())}

    def weight_update_nodes(self) -> list[Node]:
        """The nodes that update weights once their gradient is known: the optimizer (OPT)
        and the next step's N:M pre-generation (SORE nodes that write state), in list order."""
        new_state = {id(v) for v in self.state_updates.values()}
        return [n for n in self.nodes if n.stage == Stage.OPT
                or (n.stage == Stage.SORE and any(id(v) in new_state for v in n.outputs))]

    def initial_state(self) -> dict[str, np.ndarray]:
        """Fresh copies of the initial value of every param and buffer."""
        return {k: np.array(self.initializers[k]) for k in self.state}

    def clone(self) -> "Graph":
        """A structural copy that shares initializer arrays (treat them read-only)."""
        g = Graph(self.name, meta=dict(self.meta))
        vmap: dict[int, Value] = {}

        def leaf(v: Value) -> Value:
            nv = Value(v.name, v.type)
            vmap[id(v)] = nv
            g._names.add(v.name)
            return nv

        g.inputs = [leaf(v) for v in self.inputs]
        g.params = {k: leaf(v) for k, v in self.params.items()}
        g.buffers = {k: leaf(v) for k, v in self.buffers.items()}
        g.constants = {k: leaf(v) for k, v in self.constants.items()}
        g.initializers = dict(self.initializers)
        for n in self.nodes:
            nn_ = Node(n.op, tuple(vmap[id(v)] for v in n.inputs), (), dict(n.attrs),
                       n.stage, n.layer, n.name)
            g._names.add(n.name)
            outs = []
            for v in n.outputs:
                nv = Value(v.name, v.type, nn_)
                vmap[id(v)] = nv
                g._names.add(v.name)
                outs.append(nv)
            nn_.outputs = tuple(outs)
            g.nodes.append(nn_)
        g.outputs = {k: vmap[id(v)] for k, v in self.outputs.items()}
        g.state_updates = {k: vmap[id(v)] for k, v in self.state_updates.items()}
        return g
