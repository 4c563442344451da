"""Fusion on a training graph: fewer nodes, so fewer DRAM round trips.

:func:`fuse_batchnorm` makes five rewrites, :func:`fuse_matmul_bias` five and
:func:`fuse_layernorm` two, all exact (the fused kernels compute what the nodes
they replace did):

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
* a ``relu_grad(maxpool2d_grad(dz, y), y)`` (a ReLU before a max pool) becomes
  ``maxpool2d_grad(relu_grad(dz, p), y)`` with ``p = maxpool2d(y)``: the mask runs on
  the pooled gradient, which the next two rewrites can fold further (exact: the pool's
  gradient lands on each window's maximum, where ``y`` equals ``p``).
* a gradient ``sum`` read only by a ``relu_grad`` as its dy (the ResNet
  block's skip and main-path gradients meeting at the previous block's relu)
  becomes that ``relu_grad`` with the sum's terms as inputs after y: the SAT
  lowering adds them in dy's tile before the mask, where the separate nodes
  stored the sum and loaded it again.
* a ``conv2d_grad_input`` (one group) whose output only a ``relu_grad`` reads, as its dy
  or as one of its terms (the input gradient of the conv after a ReLU), folds that
  ``relu_grad`` in: the node becomes ``conv2d_grad_input(dy, w, y, *other terms)`` with
  attr ``relu_grad`` and defines the relu_grad's output. The SAT lowering starts each C
  tile as the terms (a DMA into the accumulators) and masks it with y's tile before the
  store, where the separate nodes stored dX, loaded it with y and stored the masked sum.

:func:`fuse_layernorm` makes the same gradient-pair rewrite for layernorm
(``layernorm_grad`` with outputs ``(dx, dgamma, dbeta)``: one read of ``x`` and
``dy`` and one ``xhat`` serve both halves) and then folds the residual stream's
gradient ``sum`` that is the only reader of that dx into the node: the sum's
other terms become inputs after ``invstd`` and the node defines the sum's output
(the SAT lowering loads the terms into dx's tile and accumulates onto them).

:func:`fuse_matmul_bias`:

* a 2-D-weight ``matmul`` whose only reader is a ``bias_add`` along the last
  axis becomes one ``matmul_bias``: the SAT lowering loads the bias into the
  accumulator tile (a DMA that repeats one row) and lets the GEMMs accumulate
  onto it, where the separate node loaded the product, added on the vector
  unit and stored it again. The backward pass reads neither the product nor
  the sum (``bias_grad`` reads dy, the matmul gradients its inputs).
  A same-shape ``add`` that is the only reader of a ``matmul_bias`` output, directly or
  through ``dropout`` (the identity in the compiled step), as a transformer's residual
  stream after its projection and its second MLP layer, folds in
  as the node's fourth input: SAT loads the residual tile into the accumulators,
  adds the bias row on the vector unit and lets the GEMMs accumulate onto it, where
  the separate add loaded the product and the residual and stored the sum (the
  backward pass reads neither: ``add``'s gradient passes dy on).
  A ``conv2d`` whose only reader is a ``bias_add`` along the channel axis takes the bias
  as its third input: SAT adds it to each C tile on the vector unit before the store
  (and before the batchnorm statistics the conv may compute from the tile), where the
  separate node loaded the conv output and stored it again.
  An exact ``gelu`` of a ``matmul_bias`` output (a transformer's first MLP layer) becomes
  the node's second output (attr ``gelu``): SAT stores the product (``gelu_grad`` reads it)
  and then the GELU of the same C tile, where the separate node loaded the product again.
  Its gradient pair fuses too: the weight-gradient ``matmul`` dW = dy^T x
  (``trans_a``; dy as itself or as its 2-D reshape) and the ``bias_grad`` of
  the same dy become one ``matmul_bias_grad`` with outputs (dW, db): SAT sums
  db from the dy tiles the GEMM loads, where ``bias_grad`` read dy once more.
  The fused node sits where the later of the two sat; nodes between them that
  depend on the earlier one's output (the bias's optimizer step) move after it.

The fused node takes the place of the last node it replaces (the first, for
the gradient pair and the GELU epilogue), after a check that nothing in between reads the values it
now defines later.
"""

from __future__ import annotations

from typing import Callable

from satc.ir.graph import Graph, Node, Value
from satc.ir.ops.conv import conv_macs
from satc.ir.types import TensorType


def fuse_batchnorm(graph: Graph) -> Graph:
    """IR -> IR: a copy of ``graph`` with batchnorm's gradient pairs and its relu /
    add + relu tails fused (module docstring)."""
    g = graph.clone()
    _fuse_gradients(g)
    _fuse_relu_tails(g)
    _mask_before_maxpool_grad(g)
    _fuse_gradient_sums(g)
    _fuse_relu_grad_epilogues(g)
    return g


def fuse_batchnorm_grad_stats(graph: Graph, on_chip_bytes: int) -> Graph:
    """IR -> IR: a copy of ``graph`` where each ``batchnorm_grad`` whose dy is made by a
    ``conv2d_grad_input`` with a folded relu_grad (:func:`fuse_batchnorm`) and whose x and dy
    together exceed ``on_chip_bytes`` (the SAT vector buffer: the batchnorm streams them
    twice, once for the sums and once for dx) takes its sums from that conv: the conv gets
    attr ``bn_stats``, the batchnorm's (x, mean, invstd) as inputs after y and a second
    output [C, 2] of sum(dx) and sum(dx * xhat) per channel, computed from its masked C
    tiles before they are stored; the batchnorm takes them as a sixth input and reads x and
    dy once. The first such batchnorm of a conv takes them (a dy read by two batchnorms,
    the projection block's, serves the other as before)."""
    g = graph.clone()
    for bn in [n for n in g.nodes if n.op == "batchnorm_grad" and len(n.inputs) == 5]:
        dy, x, _, mean, invstd = bn.inputs
        conv = dy.producer
        if conv is None or conv.op != "conv2d_grad_input" or not conv.attrs.get("relu_grad") \
                or conv.attrs.get("bn_stats") or conv.stage != bn.stage or x.type.rank != 4 \
                or x.type.nbytes + dy.type.nbytes <= on_chip_bytes:
            continue
        sums = Value(f"{bn.name}.sums", TensorType((x.shape[1], 2), dy.type.dtype))
        fused = Node("conv2d_grad_input", (*conv.inputs[:3], x, mean, invstd, *conv.inputs[3:]),
                     (*conv.outputs, sums), {**conv.attrs, "bn_stats": True}, conv.stage,
                     conv.layer, conv.name)
        _replace(g, {id(conv): fused, id(bn): Node(bn.op, (*bn.inputs, sums), bn.outputs,
                                                   dict(bn.attrs), bn.stage, bn.layer, bn.name)})
    return g


def fuse_layernorm(graph: Graph) -> Graph:
    """IR -> IR: a copy of ``graph`` with each layernorm gradient pair as one
    ``layernorm_grad`` node, and the gradient ``sum`` that is the only reader of its dx
    folded in as that node's terms (module docstring)."""
    g = graph.clone()
    _fuse_gradients(g, "layernorm")
    _fuse_layernorm_sums(g)
    return g


def fuse_matmul_bias(graph: Graph) -> Graph:
    """IR -> IR: a copy of ``graph`` with each matmul -> bias_add (last axis, the product
    read by nothing else) as one ``matmul_bias`` node, a residual ``add`` of that node's
    output folded in as its fourth input, and each weight-gradient matmul with the
    bias_grad of its dy as one ``matmul_bias_grad`` (module docstring)."""
    g = graph.clone()
    _fuse_forward_bias(g)
    _fuse_conv_bias(g)
    _fuse_residuals(g)
    _fuse_gelu_epilogues(g)
    _fuse_bias_gradients(g)
    return g


def _fuse_conv_bias(g: Graph) -> None:
    users = g.users()
    outputs = g.kept_ids()
    fused: dict[int, Node | None] = {}
    for ba in g.nodes:
        y = ba.inputs[0]
        conv = y.producer
        if ba.op != "bias_add" or y.type.rank != 4 or ba.attrs["axis"] % 4 != 1 or conv is None \
                or conv.op != "conv2d" or len(conv.inputs) != 2 or conv.attrs["groups"] != 1 \
                or conv.stage != ba.stage \
                or len(users.get(id(y), [])) != 1 or id(y) in outputs:
            continue
        fused[id(conv)] = None
        fused[id(ba)] = Node("conv2d", (*conv.inputs, ba.inputs[1]), ba.outputs, dict(conv.attrs),
                             conv.stage, conv.layer, f"{conv.name}_bias")
    _replace(g, fused)


def _fuse_gelu_epilogues(g: Graph) -> None:
    fused: dict[int, Node | None] = {}
    for ge in g.nodes:
        mm = ge.inputs[0].producer
        if ge.op != "gelu" or ge.attrs.get("approximate", "none") != "none" or mm is None \
                or mm.op != "matmul_bias" or len(mm.inputs) != 3 or mm.stage != ge.stage \
                or id(mm) in fused or mm.attrs.get("split_heads") or mm.attrs.get("merge_heads"):
            continue
        fused[id(ge)] = None
        fused[id(mm)] = Node("matmul_bias", mm.inputs, (*mm.outputs, *ge.outputs),
                             {**mm.attrs, "gelu": True}, mm.stage, mm.layer, f"{mm.name}_gelu")
    _replace(g, fused)


def _fuse_residuals(g: Graph) -> None:
    users = g.users()
    outputs = g.kept_ids()
    fused: dict[int, Node | None] = {}
    for add in g.nodes:
        if add.op != "add" or add.inputs[0].shape != add.inputs[1].shape:
            continue
        for j, y in enumerate(add.inputs):
            r, between = add.inputs[1 - j], []
            while y.producer is not None and y.producer.op == "dropout" \
                    and len(users.get(id(y), [])) == 1 and id(y) not in outputs:
                between.append(y.producer)              # the identity in the compiled step
                y = y.producer.inputs[0]
            mm = y.producer
            if mm is None or mm.op != "matmul_bias" or len(mm.inputs) != 3 or id(mm) in fused \
                    or mm.stage != add.stage or mm.attrs.get("split_heads") \
                    or mm.attrs.get("merge_heads") or len(users.get(id(y), [])) != 1 \
                    or id(y) in outputs or r is add.inputs[j]:
                continue
            fused.update({id(n): None for n in (mm, *between)})
            fused[id(add)] = Node("matmul_bias", (*mm.inputs, r), add.outputs, dict(mm.attrs),
                                  mm.stage, mm.layer, f"{mm.name}_residual")
            break
    _replace(g, fused)


def _fuse_bias_gradients(g: Graph) -> None:
    for bg in [n for n in g.nodes if n.op == "bias_grad"]:
        dy = bg.inputs[0]
        if bg.attrs["axis"] % dy.type.rank != dy.type.rank - 1:
            continue
        users = g.users()
        mm = next((u for u in users.get(id(dy), []) + _reshape_readers(users, dy)
                   if _is_weight_gradient(u, dy) and u.stage == bg.stage), None)
        if mm is None:
            continue
        node = Node("matmul_bias_grad", mm.inputs, (*mm.outputs, *bg.outputs), dict(mm.attrs),
                    mm.stage, mm.layer, f"{mm.name}_bias_grad")
        _merge_pair(g, bg, mm, node)


def _reshape_readers(users: dict[int, list[Node]], v: Value) -> list[Node]:
    """Readers of the 2-D ``[rows, last]`` reshapes of ``v`` (``users``: Graph.users())."""
    out = []
    for r in users.get(id(v), []):
        if r.op == "reshape" and r.outputs[0].shape == (v.type.numel // v.shape[-1], v.shape[-1]):
            out += users.get(id(r.outputs[0]), [])
    return out


def _is_weight_gradient(n: Node, dy: Value) -> bool:
    """``n`` is dW = dy2^T x2 of a Linear, dy2 being ``dy`` or its 2-D reshape."""
    a = n.inputs[0] if n.op == "matmul" else None
    return (a is not None and n.attrs.get("trans_a") is True and not n.attrs.get("trans_b", False)
            and a.type.rank == 2 and n.inputs[1].type.rank == 2
            and (a is dy or (a.producer is not None and a.producer.op == "reshape"
                             and a.producer.inputs[0] is dy)))


def _merge_pair(g: Graph, p: Node, q: Node, node: Node, internal: Value | None = None) -> None:
    """Replace ``p`` and ``q`` by ``node`` at the later one's place; nodes between them that
    depend on the earlier one move (in order) to right after ``node``. ``internal``: an
    output of the earlier node that only the later one reads (the fused node drops it)."""
    pos = {id(n): i for i, n in enumerate(g.nodes)}
    first, last = sorted((p, q), key=lambda n: pos[id(n)])
    tainted = {id(v) for v in first.outputs if v is not internal}
    moved = []
    for n in g.nodes[pos[id(first)] + 1:pos[id(last)]]:
        if any(id(v) in tainted for v in n.inputs):
            moved.append(n)
            tainted |= {id(v) for v in n.outputs}
    if any(id(v) in tainted for v in last.inputs):
        return                                    # last needs what moves: leave the pair
    skip = {id(first), id(last), *map(id, moved)}
    nodes = []
    for n in g.nodes:
        if n is last:
            nodes += [node, *moved]
        elif id(n) not in skip:
            nodes.append(n)
    for v in node.outputs:
        v.producer = node
    g.nodes = nodes


def _fuse_forward_bias(g: Graph) -> None:
    users = g.users()
    outputs = g.kept_ids()
    fused: dict[int, Node | None] = {}
    for ba in g.nodes:
        if ba.op != "bias_add" or ba.attrs["axis"] % ba.inputs[0].type.rank != ba.inputs[0].type.rank - 1:
            continue
        y = ba.inputs[0]
        mm = y.producer
        if mm is None or mm.op != "matmul" or mm.inputs[1].type.rank != 2 or mm.stage != ba.stage \
                or len(users.get(id(y), [])) != 1 or id(y) in outputs:
            continue
        fused[id(mm)] = None
        fused[id(ba)] = Node("matmul_bias", (*mm.inputs, ba.inputs[1]), ba.outputs, dict(mm.attrs),
                             mm.stage, mm.layer, f"{mm.name}_bias")
    _replace(g, fused)


def _fuse_gradients(g: Graph, norm: str = "batchnorm") -> None:
    """``{norm}_grad_input`` + ``{norm}_grad_params`` over the same (dy, x, mean, invstd)
    -> one ``{norm}_grad``."""
    params = {tuple(id(v) for v in n.inputs): n for n in g.nodes if n.op == f"{norm}_grad_params"}
    fused: dict[int, Node] = {}          # id(replaced node) -> the node in its place (or None)
    for n in g.nodes:
        if n.op != f"{norm}_grad_input":
            continue
        dy, x, _, mean, invstd = n.inputs
        p = params.get((id(dy), id(x), id(mean), id(invstd)))
        if p is None or p.attrs != n.attrs:
            continue
        node = Node(f"{norm}_grad", n.inputs, (n.outputs[0], *p.outputs), dict(n.attrs), n.stage,
                    n.layer, n.name.removesuffix("_input"))
        first, second = sorted((n, p), key=g.nodes.index)
        fused[id(first)], fused[id(second)] = node, None
    _replace(g, fused)


def fold_matmul_scales(graph: Graph) -> Graph:
    """IR -> IR: a copy of ``graph`` with each ``scale`` folded into plain ``matmul`` nodes
    as their attr ``alpha`` (``alpha * (a @ b)``; the SAT lowering multiplies each C tile
    on the vector unit before its store): a scale whose input is a matmul product read by
    nothing else (the attention's dQ = scale(dS @ K)) becomes that matmul; a scale read
    only by matmuls, once each (the attention's scaled Q, read by S = Q K^T and by the
    gradient dK = dS^T Q), folds into each of them, which then read the scale's input.
    Either way the separate node's load and store of the tensor go. Run after autodiff
    (a matmul with alpha has no gradient rule)."""
    g = graph.clone()
    only_reader = _only_reader(g)
    users = g.users()
    kept = g.kept_ids()
    fused: dict[int, Node | None] = {}
    for s in [n for n in g.nodes if n.op == "scale"]:
        factor = float(s.attrs["factor"])
        x, y = s.inputs[0], s.outputs[0]
        p = x.producer
        if p is not None and p.op == "matmul" and id(p) not in fused and only_reader(x) is s:
            fused[id(p)] = Node("matmul", p.inputs, s.outputs, _scaled(p.attrs, factor),
                                p.stage, p.layer, p.name)
            fused[id(s)] = None
            continue
        readers = users.get(id(y), [])
        if readers and id(y) not in kept and all(
                r.op == "matmul" and id(r) not in fused and sum(v is y for v in r.inputs) == 1
                for r in readers):
            for r in readers:
                fused[id(r)] = Node("matmul", tuple(x if v is y else v for v in r.inputs),
                                    r.outputs, _scaled(r.attrs, factor), r.stage, r.layer, r.name)
            fused[id(s)] = None
    _replace(g, fused)
    return g


def _scaled(attrs: dict, factor: float) -> dict:
    """A matmul's attrs with its output scale multiplied by ``factor``."""
    return {**attrs, "alpha": float(attrs.get("alpha", 1.0)) * factor}


def _only_reader(g: Graph) -> Callable[[Value], Node | None]:
    """A lookup of a value's one reader: None when it has several or none, or is a graph
    output or state update (a fused node would stop defining it)."""
    users = g.users()
    outputs = g.kept_ids()

    def only_reader(v: Value) -> Node | None:
        readers = users.get(id(v), [])
        return readers[0] if len(readers) == 1 and id(v) not in outputs else None
    return only_reader


def _fuse_relu_tails(g: Graph) -> None:
    users = g.users()
    only_reader = _only_reader(g)
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


def _mask_before_maxpool_grad(g: Graph) -> None:
    """relu_grad(maxpool2d_grad(dz, y), y) -> maxpool2d_grad(relu_grad(dz, p), y), with p the
    maxpool2d of y in the graph: the mask runs on the pooled gradient (a quarter of the
    elements of a 2x2 pool), and the fusions after this one fold it into the conv that makes
    dz. Exact: maxpool2d_grad puts each window's dz on the window's maximum, where y equals
    p, so y > 0 there exactly when p > 0."""
    only_reader = _only_reader(g)
    pools: dict[int, list[Node]] = {}
    for n in g.nodes:
        if n.op == "maxpool2d":
            pools.setdefault(id(n.inputs[0]), []).append(n)
    fused: dict[int, tuple[Node, Node] | None] = {}
    for rg in g.nodes:
        mp = rg.inputs[0].producer if rg.op == "relu_grad" and len(rg.inputs) == 2 else None
        if mp is None or mp.op != "maxpool2d_grad" or mp.inputs[1] is not rg.inputs[1] \
                or mp.stage != rg.stage or only_reader(rg.inputs[0]) is not rg:
            continue
        p = next((n.outputs[0] for n in pools.get(id(rg.inputs[1]), []) if n.attrs == mp.attrs),
                 None)
        if p is None:
            continue
        dz = mp.inputs[0]
        masked = Value(f"{rg.outputs[0].name}.pooled", dz.type)
        mask = Node("relu_grad", (dz, p), (masked,), dict(rg.attrs), rg.stage, rg.layer, rg.name)
        grad = Node("maxpool2d_grad", (masked, rg.inputs[1]), rg.outputs, dict(mp.attrs),
                    mp.stage, mp.layer, mp.name)
        fused[id(mp)], fused[id(rg)] = (mask, grad), None
    _replace(g, fused)


def _fuse_gradient_sums(g: Graph) -> None:
    """sum(a, b, ...) read only by a relu_grad as its dy: relu_grad(a, y, b, ...)."""
    only_reader = _only_reader(g)
    fused: dict[int, Node | None] = {}
    for rg in g.nodes:
        s = rg.inputs[0].producer if rg.op == "relu_grad" and len(rg.inputs) == 2 else None
        if s is None or s.op != "sum" or len(s.inputs) < 2 or s.stage != rg.stage \
                or only_reader(s.outputs[0]) is not rg:
            continue
        fused[id(s)] = None
        fused[id(rg)] = Node("relu_grad", (s.inputs[0], rg.inputs[1], *s.inputs[1:]),
                             rg.outputs, dict(rg.attrs), rg.stage, rg.layer, rg.name)
    _replace(g, fused)


def _fuse_relu_grad_epilogues(g: Graph) -> None:
    """relu_grad(dy, y, *terms) where one of dy / terms is a conv2d_grad_input output read only
    by it (the one with the most MACs when several are): conv2d_grad_input(dy', w, y, *the
    others) with attr relu_grad, defining the relu_grad's output at its place."""
    only_reader = _only_reader(g)
    for rg in [n for n in g.nodes if n.op == "relu_grad"]:
        grads = [v for v in (rg.inputs[0], *rg.inputs[2:]) if v.producer is not None
                 and v.producer.op == "conv2d_grad_input" and len(v.producer.inputs) == 2
                 and v.producer.attrs["groups"] == 1 and v.producer.stage == rg.stage
                 and only_reader(v) is rg]
        if not grads:
            continue
        dx = max(grads, key=lambda v: conv_macs(v.shape, v.producer.inputs[1].shape,
                                                v.producer.inputs[0].shape))
        conv = dx.producer
        others = [v for v in (rg.inputs[0], *rg.inputs[2:]) if v is not dx]
        node = Node("conv2d_grad_input", (*conv.inputs, rg.inputs[1], *others), rg.outputs,
                    {**conv.attrs, "relu_grad": True}, conv.stage, conv.layer, conv.name)
        _merge_pair(g, conv, rg, node, internal=dx)


def _fuse_layernorm_sums(g: Graph) -> None:
    """sum(..., dx, ...) the only reader of a layernorm_grad's dx: layernorm_grad(dy, x, gamma,
    mean, invstd, *the sum's other terms) defining the sum's output (at the sum's place)."""
    only_reader = _only_reader(g)
    for ln in [n for n in g.nodes if n.op == "layernorm_grad" and len(n.inputs) == 5]:
        dx = ln.outputs[0]
        s = only_reader(dx)
        if s is None or s.op != "sum" or s.stage != ln.stage \
                or sum(v is dx for v in s.inputs) != 1:
            continue
        terms = [v for v in s.inputs if v is not dx]
        node = Node("layernorm_grad", (*ln.inputs, *terms), (s.outputs[0], *ln.outputs[1:]),
                    dict(ln.attrs), ln.stage, ln.layer, ln.name)
        _merge_pair(g, ln, s, node, internal=dx)


def _defined_in_time(g: Graph, chain: list[Node], users: dict[int, list[Node]]) -> bool:
    """True when no node before the chain's last reads batchnorm's statistics outputs (the
    fused node defines them there; the residual is an input of the add, so already defined)."""
    pos = {id(n): i for i, n in enumerate(g.nodes)}
    last = pos[id(chain[-1])]
    for v in chain[0].outputs[1:]:
        if any(pos[id(r)] < last for r in users.get(id(v), [])):
            return False
    return True


def _replace(g: Graph, fused: dict[int, Node | tuple[Node, ...] | None]) -> None:
    """Put each fused node (or nodes, in order) in the place of the node it is mapped to;
    drop those mapped to None."""
    nodes = []
    for n in g.nodes:
        if id(n) not in fused:
            nodes.append(n)
            continue
        new = fused[id(n)]
        if new is None:
            continue
        for node in new if isinstance(new, tuple) else (new,):
            for v in node.outputs:
                v.producer = node
            nodes.append(node)
    g.nodes = nodes
