"""Fold attention's layout transposes into the GEMMs around them (a training-graph pass).

A multi-head attention block reshapes and transposes its activations between
GEMMs: ``[B, T, F] -> [B, T, H, d] -> [B, H, T, d]`` to split the heads,
the reverse to merge them, and ``K^T`` for the scores; backward has the same
transposes of the gradients. On SAT each is a DRAM round trip through the
vector unit. :func:`fold_transposes` removes them where a GEMM can absorb
them, in four exact rewrites (the interpreted step is unchanged):

* **operand flags**: a transpose of the last two axes whose readers are all
  batched matmuls becomes their ``trans_a`` / ``trans_b`` flag;
* **output swap**: a batched matmul whose product is only transposed (last two
  axes) computes the transpose instead, ``(A B)^T = B^T A^T``, by swapping its
  operands and flags;
* **split heads**: a 2-D-weight ``matmul`` / ``matmul_bias`` whose product
  ``[B, T, F]`` is only reshaped to ``[B, T, H, F/H]`` and transposed
  ``(0, 2, 1, 3)`` stores ``[B, H, T, F/H]`` directly (attr ``split_heads=H``);
* **merge heads**: a batched matmul whose product ``[B, H, T, d]`` is only
  transposed ``(0, 2, 1, 3)`` stores ``[B, T, H, d]`` (attr ``merge_heads``).

A ``scale`` between a matmul and a head transpose is moved after the
transpose first (scaling commutes with it), so the transpose meets the GEMM.
The SAT lowering writes the stored layouts with strided stores
(``backends/sat/codegen/conv.py``).
"""

from __future__ import annotations

from satc.ir.graph import Graph, Node, Value

HEADS = [0, 2, 1, 3]


def fold_transposes(graph: Graph) -> Graph:
    """IR -> IR: a copy of ``graph`` with attention's transposes folded into its matmuls
    where the module docstring's rewrites apply."""
    g = graph.clone()
    _push_through_scale(g)
    for rewrite in (_fold_operand_flags, _swap_transposed_products, _split_heads, _merge_heads):
        rewrite(g)
    return g


def _last_two(n: Node) -> bool:
    r = n.inputs[0].type.rank
    return n.op == "transpose" and r >= 2 and list(n.attrs["perm"]) == [*range(r - 2), r - 1, r - 2]


def _batched(n: Node) -> bool:
    return n.op == "matmul" and "nm" not in n.attrs and n.inputs[0].type.rank > 2 \
        and n.inputs[1].type.rank > 2 and not _layout(n)


def _layout(n: Node) -> bool:
    return bool(n.attrs.get("split_heads") or n.attrs.get("merge_heads"))


class _Index:
    """Readers of every value and the values the step must keep (outputs, state updates)."""

    def __init__(self, g: Graph) -> None:
        self.users = g.users()
        self.kept = g.kept_ids()

    def only_reader(self, v: Value) -> Node | None:
        """The single reader of ``v`` when it has one and is not kept, else None."""
        rs = self.users.get(id(v), [])
        return rs[0] if len(rs) == 1 and id(v) not in self.kept else None


def _rebuild(g: Graph, old: Node, inputs, outputs, attrs) -> Node:
    """A node like ``old`` with new inputs / outputs / attrs, in ``old``'s place."""
    node = Node(old.op, tuple(inputs), tuple(outputs), attrs, old.stage, old.layer, old.name)
    for v in node.outputs:
        v.producer = node
    g.nodes[g.nodes.index(old)] = node
    return node


def _drop(g: Graph, *nodes: Node) -> None:
    gone = {id(n) for n in nodes}
    g.nodes = [n for n in g.nodes if id(n) not in gone]


def _head_transposes(g: Graph) -> list[Node]:
    return [n for n in g.nodes if n.op == "transpose" and list(n.attrs["perm"]) == HEADS]


def _sole_source(ix: _Index, t: Node, ops: tuple[str, ...]) -> Node | None:
    """The producer of ``t``'s input when it is one of ``ops`` and only ``t`` reads it."""
    p = t.inputs[0].producer
    return p if p is not None and p.op in ops and ix.only_reader(t.inputs[0]) is t else None


def _push_through_scale(g: Graph) -> None:
    """matmul -> scale -> transpose(heads) becomes matmul -> transpose -> scale."""
    ix = _Index(g)
    for t in _head_transposes(g):
        sc = _sole_source(ix, t, ("scale",))
        if sc is None:
            continue
        src = sc.inputs[0]
        if src.producer is None or not _batched(src.producer) or ix.only_reader(src) is not sc:
            continue
        moved = Value(g.fresh_name(f"{src.name}.heads"), t.outputs[0].type)
        pos = g.nodes.index(sc)
        _drop(g, t, sc)
        tn = Node("transpose", (src,), (moved,), dict(t.attrs), t.stage, t.layer, t.name)
        moved.producer = tn
        sn = Node("scale", (moved,), t.outputs, dict(sc.attrs), sc.stage, sc.layer, sc.name)
        t.outputs[0].producer = sn
        g.nodes[pos:pos] = [tn, sn]
        ix = _Index(g)


def _fold_operand_flags(g: Graph) -> None:
    ix = _Index(g)
    for t in [n for n in g.nodes if _last_two(n)]:
        v = t.outputs[0]
        readers = ix.users.get(id(v), [])
        if not readers or id(v) in ix.kept or not all(
                _batched(r) and sum(x is v for x in r.inputs) == 1 for r in readers):
            continue
        for r in readers:
            i = r.inputs.index(v)
            flag = "trans_a" if i == 0 else "trans_b"
            attrs = {**r.attrs, flag: not r.attrs.get(flag, False)}
            inputs = tuple(t.inputs[0] if x is v else x for x in r.inputs)
            _rebuild(g, r, inputs, r.outputs, attrs)
        _drop(g, t)
        ix = _Index(g)


def _swap_transposed_products(g: Graph) -> None:
    ix = _Index(g)
    for t in [n for n in g.nodes if _last_two(n)]:
        mm = t.inputs[0].producer
        if mm is None or not _batched(mm) or ix.only_reader(t.inputs[0]) is not t:
            continue
        a, b = mm.inputs
        attrs = {**mm.attrs, "trans_a": not mm.attrs.get("trans_b", False),
                 "trans_b": not mm.attrs.get("trans_a", False)}
        _drop(g, t)
        _rebuild(g, mm, (b, a), t.outputs, attrs)
        ix = _Index(g)


def _split_heads(g: Graph) -> None:
    ix = _Index(g)
    for t in _head_transposes(g):
        rs = _sole_source(ix, t, ("reshape",))
        if rs is None:
            continue
        y = rs.inputs[0]
        mm = y.producer
        if mm is None or mm.op not in ("matmul", "matmul_bias") or mm.inputs[1].type.rank != 2 \
                or _layout(mm) or mm.attrs.get("trans_a") or y.type.rank != 3 \
                or ix.only_reader(y) is not rs:
            continue
        b, tt, f = y.shape
        if tuple(rs.outputs[0].shape[:2]) != (b, tt) or rs.outputs[0].type.rank != 4:
            continue
        _drop(g, rs, t)
        _rebuild(g, mm, mm.inputs, t.outputs, {**mm.attrs, "split_heads": rs.outputs[0].shape[2]})
        ix = _Index(g)


def _merge_heads(g: Graph) -> None:
    ix = _Index(g)
    for t in _head_transposes(g):
        mm = _sole_source(ix, t, ("matmul",))
        if mm is None or not _batched(mm) or t.inputs[0].type.rank != 4:
            continue
        _drop(g, t)
        _rebuild(g, mm, mm.inputs, t.outputs, {**mm.attrs, "merge_heads": True})
        ix = _Index(g)
