"""Training-graph builder: loss, reverse-mode autodiff (BP and WU), optimizer (OPT).

``build_training_graph(g)`` takes a forward graph (stage FF) and returns a
new graph that computes, for one training step:

* FF: the forward ops and the loss;
* BP: gradients of activations (``conv2d_grad_input``, ``relu_grad``, ...);
* WU: gradients of parameters (``conv2d_grad_weight``, ``bias_grad``, ...);
* OPT: optimizer updates of every parameter, and optimizer state.

A backward op is tagged WU when the value it differentiates depends on
parameters only (a weight, or a weight reshaped), BP otherwise. Gradients
are only built for values on a path from a parameter to the loss, so the
first layer gets no gradient with respect to the image.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from satc.errors import IRError
from satc.ir.graph import Graph, Node, Value
from satc.ir.ops import get_op
from satc.ir.types import Stage, TensorType
from satc.ir.verifier import verify
from satc.passes.dce import eliminate_dead_code
from satc.passes.optimizer import SGD, Optimizer

LOSSES = ("cross_entropy",)
IGNORE_INDEX = -100     # torch's default ignore_index, for token labels


class _GradContext:
    """Emits the backward nodes of one forward node (see GradContext)."""

    def __init__(self, graph: Graph, node: Node, needs_grad: set[int], weight_side: set[int]):
        self.graph, self.node = graph, node
        self.needs_grad, self.weight_side = needs_grad, weight_side

    def emit_multi(self, op: str, inputs: Sequence[Any], attrs: dict | None = None,
                   wrt: int = 0) -> tuple[Value | None, ...]:
        target = self.node.inputs[wrt]
        if id(target) not in self.needs_grad or any(v is None for v in inputs):
            n_out = len(get_op(op).infer([v.type for v in inputs if v is not None], attrs or {})) \
                if all(v is not None for v in inputs) else 1
            return (None,) * n_out
        stage = Stage.WU if id(target) in self.weight_side else Stage.BP
        return self.graph.add(op, list(inputs), attrs, stage, self.node.layer,
                              name=f"{self.node.name}.{op}")

    def emit(self, op: str, inputs: Sequence[Any], attrs: dict | None = None,
             wrt: int = 0) -> Value | None:
        return self.emit_multi(op, inputs, attrs, wrt)[0]


def _depends_on(graph: Graph, roots: set[int]) -> set[int]:
    """ids of values that depend on any value in ``roots`` (roots included)."""
    out = set(roots)
    for n in graph.nodes:
        if any(id(v) in out for v in n.inputs):
            out.update(id(v) for v in n.outputs)
    return out


def _logits_of(graph: Graph, output: str | None) -> Value:
    if output is None:
        if len(graph.outputs) != 1:
            raise IRError(f"graph {graph.name!r} has outputs {list(graph.outputs)}; "
                          "name the one the loss is attached to with output=...")
        output = next(iter(graph.outputs))
    if output not in graph.outputs:
        raise IRError(f"graph {graph.name!r} has no output {output!r}; outputs: {list(graph.outputs)}")
    logits = graph.outputs[output]
    p = logits.producer
    if p is not None and p.op == "reshape" and p.inputs[0].producer is not None \
            and p.inputs[0].producer.op == "softmax" and p.inputs[0].type.rank == 2:
        logits = p.inputs[0]                # a pre-opset-13 ONNX softmax: reshape(softmax(2-D))
    if logits.producer is not None and logits.producer.op == "softmax":
        logits = logits.producer.inputs[0]  # the loss applies its own softmax
    return logits


def build_training_graph(graph: Graph, loss: str = "cross_entropy",
                         optimizer: Optimizer | None = None, output: str | None = None,
                         label_name: str = "y", ignore_index: int = IGNORE_INDEX) -> Graph:
    """The training step of forward graph ``graph``: FF + loss, BP, WU and OPT.

    Logits ``[N, classes]`` take labels ``[N]``; token logits ``[N, T, vocab]`` (a language
    model) take labels ``[N, T]``, and tokens labelled ``ignore_index`` do not count (torch's
    ``cross_entropy(logits.flatten(0, 1), labels.flatten())``)."""
    if loss not in LOSSES:
        raise IRError(f"unknown loss {loss!r}; supported: {', '.join(LOSSES)}")
    optimizer = optimizer if optimizer is not None else SGD()
    forward = verify(graph)
    if any(n.stage != Stage.FF for n in forward.nodes):
        raise IRError(f"graph {graph.name!r} already has non-FF nodes; pass a forward graph")
    tg = forward.clone()
    tg.name = f"{graph.name}.train"
    logits = _logits_of(tg, output)
    if logits.type.rank > 2 and all(d == 1 for d in logits.shape[2:]):   # [N, C, 1, 1] -> [N, C]
        logits = tg.add1("reshape", [logits], {"shape": list(logits.shape[:2])}, Stage.FF,
                         "loss", name=f"{logits.name}.flat")
    scores, attrs = logits, {}
    if logits.type.rank == 3:       # language model: token logits [N, T, V], labels [N, T]
        n, t, v = logits.shape
        scores = tg.add1("reshape", [logits], {"shape": [n * t, v]}, Stage.FF, "loss",
                         name=f"{logits.name}.tokens")
        attrs = {"ignore_index": ignore_index}
    if scores.type.rank != 2:
        raise IRError(f"the loss needs logits [N, classes] or token logits [N, T, vocab]; "
                      f"output %{logits.name} is {logits.type}")
    labels = tg.add_input(label_name, TensorType(tuple(logits.shape[:-1]), "int64"))
    loss_v = tg.add1(loss, [scores, labels], attrs, Stage.FF, "loss", name="loss")
    tg.outputs = {"logits": logits, "loss": loss_v}

    params = [(k, v) for k, v in tg.params.items()]
    needs_grad = _depends_on(tg, {id(v) for _, v in params})
    user_side = _depends_on(tg, {id(v) for v in tg.inputs})
    weight_side = {id(n_out) for n in tg.nodes for n_out in n.outputs if id(n_out) not in user_side}
    weight_side.update(id(v) for _, v in params)

    partials: dict[int, list[Value]] = {id(loss_v): [tg.add_constant(np.ones((), np.float32), "loss_seed")]}
    grads: dict[int, Value] = {}

    def total(v: Value, layer: str) -> Value | None:
        parts = partials.pop(id(v), None)
        if not parts:
            return None
        if len(parts) > 1:
            stage = Stage.WU if id(v) in weight_side else Stage.BP
            grads[id(v)] = tg.add1("sum", parts, {}, stage, layer, name=f"{v.name}.grad_sum")
        else:
            grads[id(v)] = parts[0]
        return grads[id(v)]

    forward_nodes = list(tg.nodes)
    for node in reversed(forward_nodes):
        dys = [total(v, node.layer) for v in node.outputs]
        if all(d is None for d in dys):
            continue
        if dys[0] is None:
            raise IRError(f"node {node.name!r} ({node.op}): gradients flow into a secondary "
                          "output only, which satc does not differentiate")
        rule = get_op(node.op).grad
        if rule is None:
            raise IRError(f"node {node.name!r}: op {node.op!r} has no gradient rule")
        dxs = rule(_GradContext(tg, node, needs_grad, weight_side), node, dys)
        for v, dx in zip(node.inputs, dxs):
            if dx is not None and id(v) in needs_grad:
                partials.setdefault(id(v), []).append(dx)

    for name, p in params:
        g = total(p, name.rsplit(".", 1)[0])
        if g is None:
            continue  # unused parameter: no gradient, no update (as torch)
        tg.outputs[f"grad/{name}"] = g
        layer = g.producer.layer if g.producer is not None else name
        tg.state_updates[name] = optimizer.emit(tg, name, p, g, layer)
    if not tg.state_updates:
        held = f"its params {sorted(tg.params)} do not reach the loss" if tg.params else "it has no params"
        raise IRError(f"graph {graph.name!r} has nothing to train: {held}; satc compiles training "
                      "steps, so give the model a layer with weights (Linear, Conv) on the path to "
                      "its output")
    eliminate_dead_code(tg)
    tg.meta["optimizer"] = optimizer
    tg.meta["loss"] = loss
    return tg
