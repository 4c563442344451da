"""Batch-normalisation fusion on a training graph: fewer nodes, so fewer DRAM round trips.

Two rewrites, both exact (the fused kernels compute what the nodes they replace did):

* ``batchnorm_grad_input`` and ``batchnorm_grad_params`` over the same
  ``(dy, x, mean, invstd)`` become one ``batchnorm_grad`` with outputs
  ``(dx, dgamma, dbeta)``: both need ``sum(dy)`` and ``sum(dy * xhat)``
  (``dbeta`` and ``dgamma`` are those sums), so one pass over ``x`` and ``dy``
  serves both instead of two.
* a training-mode ``batchnorm`` followed by ``relu``, or by ``add`` of a
  residual and then ``relu`` (the ResNet block tail), becomes one
  ``batchnorm_relu`` when each intermediate value has that single reader and
  is not a graph output: only the rectified activation is stored, where the
  separate nodes stored and reloaded the normalised and the summed tensors.
  The backward pass needs neither (``relu_grad`` reads the relu output,
  ``batchnorm_grad`` the batchnorm input).

The fused node takes the place of the last node it replaces (the first, for
the gradient pair), after a check that nothing in between reads the values it
now defines later.
"""

from __future__ import annotations

from satc.ir.graph import Graph, Node, Value


def fuse_batchnorm(graph: Graph) -> Graph:
    """IR -> IR: a copy of ``graph`` with batchnorm's gradient pairs and its relu /
    add + relu tails fused (module docstring)."""
    g = graph.clone()
    _fuse_gradients(g)
    _fuse_relu_tails(g)
    return g


def _fuse_gradients(g: Graph) -> None:
    params = {tuple(id(v) for v in n.inputs): n for n in g.nodes if n.op == "batchnorm_grad_params"}
    fused: dict[int, Node] = {}          # id(replaced node) -> the node in its place (or None)
    for n in g.nodes:
        if n.op != "batchnorm_grad_input":
            continue
        dy, x, _, mean, invstd = n.inputs
        p = params.get((id(dy), id(x), id(mean), id(invstd)))
        if p is None:
            continue
        node = Node("batchnorm_grad", n.inputs, (n.outputs[0], *p.outputs), {}, n.stage, n.layer,
                    n.name.removesuffix("_input"))
        first, second = sorted((n, p), key=g.nodes.index)
        fused[id(first)], fused[id(second)] = node, None
    _replace(g, fused)


def _fuse_relu_tails(g: Graph) -> None:
    users = g.users()
    outputs = {id(v) for v in (*g.outputs.values(), *g.state_updates.values())}

    def only_reader(v: Value) -> Node | None:
        readers = users.get(id(v), [])
        return readers[0] if len(readers) == 1 and id(v) not in outputs else None

    fused: dict[int, Node] = {}
    for bn in g.nodes:
        if bn.op != "batchnorm" or not bn.attrs.get("training"):
            continue
        chain, tail, extra = [bn], only_reader(bn.outputs[0]), []
        if tail is not None and tail.op == "add" and len(tail.inputs) == 2 \
                and tail.inputs[0].shape == tail.inputs[1].shape:
            other = tail.inputs[1] if tail.inputs[0] is bn.outputs[0] else tail.inputs[0]
            if other is not bn.outputs[0]:
                chain, extra, tail = [bn, tail], [other], only_reader(tail.outputs[0])
        if tail is None or tail.op != "relu" or tail.stage != bn.stage:
            continue
        chain.append(tail)
        if any(id(m) in fused for m in chain) or not _defined_in_time(g, chain, users):
            continue
        node = Node("batchnorm_relu", (*bn.inputs, *extra), (tail.outputs[0], *bn.outputs[1:]),
                    dict(bn.attrs), bn.stage, bn.layer, f"{bn.name}_relu")
        for m in chain[:-1]:
            fused[id(m)] = None
        fused[id(tail)] = node
    _replace(g, fused)


def _defined_in_time(g: Graph, chain: list[Node], users: dict[int, list[Node]]) -> bool:
    """True when no node before the chain's last reads batchnorm's statistics outputs (the
    fused node defines them there; the residual is an input of the add, so already defined)."""
    pos = {id(n): i for i, n in enumerate(g.nodes)}
    last = pos[id(chain[-1])]
    for v in chain[0].outputs[1:]:
        if any(pos[id(r)] < last for r in users.get(id(v), [])):
            return False
    return True


def _replace(g: Graph, fused: dict[int, Node | None]) -> None:
    """Put each fused node in the place of the node it is mapped to; drop those mapped to None."""
    nodes = []
    for n in g.nodes:
        if id(n) not in fused:
            nodes.append(n)
        elif fused[id(n)] is not None:
            node = fused[id(n)]
            for v in node.outputs:
                v.producer = node
            nodes.append(node)
    g.nodes = nodes
