"""ONNX graph helpers for the ONNX frontend: a read-only view, constant evaluation, fused patterns.

* :class:`OnnxView` indexes an ONNX graph (producer and consumers of every
  value, the constants evaluated so far) for the pattern matchers.
* :func:`evaluate` runs one node on constant inputs with onnx's numpy
  reference implementation, at the model's opset (constant folding).
* :func:`find_fusions` finds the subgraphs that exporters write for one op
  satc has natively, table-driven by their anchor op (``PATTERNS``):
  exact GELU ``x * 0.5 * (1 + Erf(x / sqrt(2)))`` (``Div`` by sqrt 2 or
  ``Mul`` by 1/sqrt 2; the 0.5 applied first or last), tanh GELU
  ``0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`` (``Pow`` 3 or
  ``x*x*x``), and LayerNorm decomposed as ReduceMean/Sub/Pow/ReduceMean/
  Add/Sqrt/Div with an optional Mul (gamma) and Add (beta).

Every intermediate value of a pattern must be read by the pattern only, so
replacing it by one op changes nothing else in the graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

DEFAULT_DOMAINS = ("", "ai.onnx")
COMMUTATIVE = ("Add", "Mul")
RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                        "Multinomial", "Bernoulli"})
SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715


def node_label(node: onnx.NodeProto) -> str:
    """A node's name, or its first output's name when it has none."""
    return node.name or (node.output[0] if node.output else node.op_type)


def attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values (strings decoded)."""
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def foldable(node: onnx.NodeProto, const_names: set[str]) -> bool:
    """Whether constant folding evaluates ``node``: a deterministic default-domain op whose
    inputs are all constants, or ``Shape`` (every satc value has a static shape)."""
    if node.domain not in DEFAULT_DOMAINS or node.op_type in RANDOM_OPS:
        return False
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return False
    return node.op_type == "Shape" or all(not i or i in const_names for i in node.input)


def evaluate(node: onnx.NodeProto, opset: int, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run ``node`` on constant ``inputs`` (one per non-empty input name) with onnx's numpy
    reference implementation of the op at ``opset``; one array per non-empty output."""
    feeds = dict(zip([i for i in node.input if i], inputs))
    undefined = onnx.TensorProto.UNDEFINED
    graph = helper.make_graph(
        [node], "fold", [helper.make_tensor_value_info(n, undefined, None) for n in feeds],
        [helper.make_tensor_value_info(o, undefined, None) for o in node.output if o])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return [np.asarray(a) for a in ReferenceEvaluator(model).run(None, feeds)]


@dataclass
class OnnxView:
    """An ONNX graph indexed for pattern matching: producers, consumers and known constants."""

    nodes: list[onnx.NodeProto]
    consts: dict[str, np.ndarray]
    const_names: set[str]
    graph_outputs: set[str]
    producer: dict[str, int] = field(default_factory=dict, init=False)
    consumers: dict[str, list[int]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for i, n in enumerate(self.nodes):
            for o in n.output:
                if o:
                    self.producer[o] = i
            for name in set(n.input):
                if name:
                    self.consumers.setdefault(name, []).append(i)

    def node_of(self, name: str) -> tuple[int, onnx.NodeProto] | None:
        """The index and node that produce ``name`` (None for inputs and initializers)."""
        i = self.producer.get(name)
        return None if i is None else (i, self.nodes[i])

    def sole_consumer(self, name: str) -> tuple[int, onnx.NodeProto] | None:
        """The only node that reads ``name``, if it has exactly one and is no graph output."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.graph_outputs:
            return None
        return users[0], self.nodes[users[0]]

    def scalar(self, name: str) -> float | None:
        """The value of ``name`` if it is a one-element constant."""
        arr = self.consts.get(name)
        return float(arr.reshape(-1)[0]) if arr is not None and arr.size == 1 else None

    def dynamic(self, name: str) -> bool:
        """Whether ``name`` is computed from graph inputs (not a constant)."""
        return bool(name) and name not in self.const_names

    def consts_after_first(self, node: onnx.NodeProto) -> bool:
        """Whether every input of ``node`` but the first is an evaluated constant (or omitted)."""
        return all(not n or n in self.consts for n in node.input[1:])

    def split_const(self, node: onnx.NodeProto, op: str) -> tuple[str, str] | None:
        """(dynamic operand, constant operand) of binary ``op`` node (either order if commutative)."""
        if node.op_type != op or len(node.input) != 2:
            return None
        a, b = node.input
        orders = ((a, b), (b, a)) if op in COMMUTATIVE else ((a, b),)
        for dyn, const in orders:
            if self.dynamic(dyn) and const in self.consts:
                return dyn, const
        return None

    def scaled(self, node: onnx.NodeProto, op: str, target: float) -> str | None:
        """The dynamic operand of ``node`` if it is ``op`` by a scalar constant close to ``target``."""
        split = self.split_const(node, op)
        if split is None:
            return None
        s = self.scalar(split[1])
        return split[0] if s is not None and math.isclose(s, target, rel_tol=1e-3) else None


@dataclass(frozen=True)
class Fusion:
    """A matched subgraph that becomes one satc op.

    ``x`` is the ONNX value it reads, ``out`` the one it defines (the output of
    node ``last``), ``nodes`` every node it replaces, ``params`` ONNX
    constants it reads as trainable state (layernorm gamma and beta).
    """

    op: str
    x: str
    out: str
    last: int
    nodes: frozenset[int]
    attrs: dict[str, Any]
    params: tuple[str | None, ...] = ()


Matcher = Callable[[OnnxView, int], "Fusion | None"]


def _gelu_tail(v: OnnxView, x: str, t_index: int, inner: set[int], approximate: str) -> Fusion | None:
    """Match ``(1 + t) * x * 0.5`` (any association) after the Erf/Tanh node ``t_index``."""
    t_out = v.nodes[t_index].output[0]
    add = v.sole_consumer(t_out)
    if add is None or v.scaled(add[1], "Add", 1.0) != t_out:
        return None
    one_plus = add[1].output[0]
    m1 = v.sole_consumer(one_plus)
    if m1 is None or m1[1].op_type != "Mul":
        return None
    nodes = inner | {t_index, add[0], m1[0]}
    m1_out = m1[1].output[0]
    other = m1[1].input[1] if m1[1].input[0] == one_plus else m1[1].input[0]
    half = v.scalar(other) if other in v.consts else None
    if other == x or (half is not None and math.isclose(half, 0.5)):
        # (x * s) * 0.5 or (0.5 * s) * x: one more Mul by the remaining factor
        last = v.sole_consumer(m1_out)
        if last is None or last[1].op_type != "Mul":
            return None
        ok = (v.scaled(last[1], "Mul", 0.5) == m1_out if other == x
              else sorted(last[1].input) == sorted([m1_out, x]))
        if not ok:
            return None
        nodes.add(last[0])
    else:  # s * (0.5 * x)
        pre = v.node_of(other)
        if pre is None or v.scaled(pre[1], "Mul", 0.5) != x or v.sole_consumer(other) is None:
            return None
        nodes.add(pre[0])
        last = m1
    return Fusion("gelu", x, last[1].output[0], last[0], frozenset(nodes), {"approximate": approximate})


def _gelu_erf(v: OnnxView, i: int) -> Fusion | None:
    """``x * 0.5 * (1 + Erf(x / sqrt 2))`` anchored at the Erf node."""
    pre = v.node_of(v.nodes[i].input[0])
    if pre is None or v.sole_consumer(pre[1].output[0]) is None:
        return None
    x = v.scaled(pre[1], "Div", SQRT2) or v.scaled(pre[1], "Mul", 1.0 / SQRT2)
    return _gelu_tail(v, x, i, {pre[0]}, "none") if x else None


def _cube(v: OnnxView, name: str) -> tuple[str, set[int]] | None:
    """(x, nodes) if ``name`` is ``Pow(x, 3)``, ``x * (x * x)`` or ``(x * x) * x``, read once."""
    p = v.node_of(name)
    if p is None or v.sole_consumer(name) is None:
        return None
    i, n = p
    if n.op_type == "Pow" and n.input[1] in v.consts and v.scalar(n.input[1]) == 3.0:
        return n.input[0], {i}
    if n.op_type != "Mul":
        return None
    for x, sq in (tuple(n.input), tuple(reversed(n.input))):
        q = v.node_of(sq)
        if (q is not None and q[1].op_type == "Mul" and list(q[1].input) == [x, x]
                and v.sole_consumer(sq) is not None):
            return x, {i, q[0]}
    return None


def _gelu_tanh(v: OnnxView, i: int) -> Fusion | None:
    """``0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`` anchored at the Tanh node."""
    pre = v.node_of(v.nodes[i].input[0])
    if pre is None or v.sole_consumer(pre[1].output[0]) is None:
        return None
    inner = v.scaled(pre[1], "Mul", SQRT_2_OVER_PI)
    add = v.node_of(inner) if inner else None
    if add is None or add[1].op_type != "Add" or v.sole_consumer(inner) is None:
        return None
    for x, term in (tuple(add[1].input), tuple(reversed(add[1].input))):
        mul = v.node_of(term)
        cubed = v.scaled(mul[1], "Mul", GELU_CUBIC) if mul is not None else None
        cube = _cube(v, cubed) if cubed and v.sole_consumer(term) is not None else None
        if cube is not None and cube[0] == x:
            return _gelu_tail(v, x, i, {pre[0], add[0], mul[0]} | cube[1], "tanh")
    return None


def reduce_axes(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> list[int] | None:
    """The axes of a Reduce* node (attribute before opset 18, constant input after); None when
    none are given (all axes). The axes input, when present, must be in ``consts``."""
    if len(node.input) > 1 and node.input[1]:
        axes = consts[node.input[1]].reshape(-1)
        return [int(a) for a in axes] if axes.size else None
    axes = attributes(node).get("axes")
    return None if axes is None else [int(a) for a in axes]


def _layernorm(v: OnnxView, i: int) -> Fusion | None:
    """LayerNorm written out, anchored at the first ReduceMean (the mean)."""
    mean_node = v.nodes[i]
    if attributes(mean_node).get("keepdims", 1) != 1 or not v.consts_after_first(mean_node):
        return None
    x, axes = mean_node.input[0], reduce_axes(mean_node, v.consts)
    if not v.dynamic(x) or not axes:
        return None
    sub = v.sole_consumer(mean_node.output[0])
    if sub is None or sub[1].op_type != "Sub" or list(sub[1].input) != [x, mean_node.output[0]]:
        return None
    d = sub[1].output[0]
    users = v.consumers.get(d, [])
    if len(users) != 2 or d in v.graph_outputs:
        return None
    sq = next((v.nodes[u] for u in users if v.nodes[u].op_type == "Pow"
               and v.scalar(v.nodes[u].input[1]) == 2.0 and v.nodes[u].input[0] == d), None)
    div = next((v.nodes[u] for u in users if v.nodes[u].op_type == "Div" and v.nodes[u].input[0] == d), None)
    if sq is None or div is None:
        return None
    chain, name = [i, sub[0], *users], sq.output[0]
    var = v.sole_consumer(name)
    if (var is None or var[1].op_type != "ReduceMean" or var[1].input[0] != name
            or not v.consts_after_first(var[1]) or reduce_axes(var[1], v.consts) != axes
            or attributes(var[1]).get("keepdims", 1) != 1):
        return None
    plus = v.sole_consumer(var[1].output[0])
    split = v.split_const(plus[1], "Add") if plus is not None else None
    eps = v.scalar(split[1]) if split is not None else None
    if eps is None:
        return None
    root = v.sole_consumer(plus[1].output[0])
    if root is None or root[1].op_type != "Sqrt":
        return None
    chain += [var[0], plus[0], root[0]]
    name = root[1].output[0]
    if list(div.input) != [d, name]:
        return None
    out, last = div.output[0], v.producer[div.output[0]]
    params: list[str | None] = []
    for op in ("Mul", "Add"):
        nxt = v.sole_consumer(out)
        split = v.split_const(nxt[1], op) if nxt is not None else None
        if split is None or split[0] != out or v.consts[split[1]].ndim != len(axes):
            params.append(None)
            continue
        params.append(split[1])
        last, out = nxt[0], nxt[1].output[0]
        chain.append(last)
    return Fusion("layernorm", x, out, last, frozenset(chain),
                  {"axes": axes, "eps": eps}, tuple(params))


PATTERNS: dict[str, Matcher] = {"Erf": _gelu_erf, "Tanh": _gelu_tanh, "ReduceMean": _layernorm}


def find_fusions(view: OnnxView, skip: set[int]) -> list[Fusion]:
    """Every non-overlapping pattern match in ``view``, ignoring nodes in ``skip`` (folded)."""
    found: list[Fusion] = []
    taken: set[int] = set()
    for i, node in enumerate(view.nodes):
        matcher = PATTERNS.get(node.op_type)
        if matcher is None or i in skip or i in taken or node.domain not in DEFAULT_DOMAINS:
            continue
        fusion = matcher(view, i)
        if fusion is not None and not fusion.nodes & (taken | skip):
            found.append(fusion)
            taken |= fusion.nodes
    return found
