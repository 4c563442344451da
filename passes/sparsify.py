"""BDWP sparsity pass: N:M weights for FF (groups along Ci) and BP (along Co), dense WU.

For every weight GEMM of a training graph (conv2d weights, linear weights)
except the stem (a conv over 1 or 3 input channels: the image) and
user-excluded layers, the pass

* adds state ``<w>.ff`` (and ``<w>.bp``): the pruned weights, initialised
  from the initial dense weight;
* makes the FF GEMM read ``<w>.ff`` and the BP GEMM read ``<w>.bp``
  (``bdwp``), or ``<w>.ff_dense`` (``ff``, SR-STE; see below);
* adds the SR-STE term to the dense weight gradient (WU stays dense);
* appends SORE ops after the optimizer update that pre-generate the next
  step's ``<w>.ff`` / ``<w>.bp`` from the updated dense weight
  (``bdwp-nested``: ``<w>.bp`` from the new ``<w>.ff``).

GEMM nodes that run as N:M GEMMs (their weight is pruned along the axis
they reduce over) carry ``attrs["nm"] = [n, m, axis]``; in ``ff`` mode the BP
GEMM reads W_ff but stays a dense GEMM, since W_ff is not N:M along Co; it reads
the state ``<w>.ff_dense`` (same values, pre-generated beside ``<w>.ff``), which
a backend may store uncompressed.
The report of which layers are sparse, in which stage, is
``graph.meta["sparsity"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from satc.errors import SparsityError
from satc.ir.graph import Graph, Node, Value
from satc.ir.nm import SparsitySpec, grouped_conv_dense_reason, is_stem_conv, nm_mask, parse_sparsity
from satc.ir.types import Stage

FF_AXIS, BP_AXIS = 1, 0  # weights are [Co, Ci, ...] (conv) or [out, in] (linear)


def _axes(ff_node: Node) -> tuple[int, int]:
    """(Ci axis, Co axis) of the FF GEMM's weight: (1, 0) for conv and ``x @ W^T`` (torch's
    Linear, [out, in]); (0, 1) for ``x @ W`` (a weight stored [in, out], GPT-2's Conv1D)."""
    if ff_node.op == "matmul" and not ff_node.attrs.get("trans_b"):
        return BP_AXIS, FF_AXIS
    return FF_AXIS, BP_AXIS


@dataclass(frozen=True)
class WeightSparsity:
    """How one weight is treated: ``ff`` / ``bp`` are 'N:M along Ci/Co' or 'dense'."""

    layer: str
    weight: str
    ff: str
    bp: str
    wu: str = "dense"
    reason: str = ""
    kind: str = "weight"      # 'weight', 'embedding' or 'activations' (attention GEMMs)


@dataclass
class SparsityReport:
    """Which layers are sparse, in which stage, under which spec."""

    spec: SparsitySpec
    layers: list[WeightSparsity] = field(default_factory=list)

    def sparse_weights(self) -> list[str]:
        """Names of weights pruned in FF."""
        return [r.weight for r in self.layers if r.ff != "dense"]

    def format(self) -> str:
        """A text table of the report."""
        weights = [r for r in self.layers if r.kind == "weight"]
        rows = [f"sparsity {self.spec}: {len(self.sparse_weights())} of {len(weights)} weight layers pruned",
                f"{'layer':<28} {'FF':<14} {'BP':<14} {'WU':<6} note"]
        rows += [f"{r.layer:<28} {r.ff:<14} {r.bp:<14} {r.wu:<6} {r.reason}" for r in self.layers]
        return "\n".join(rows)


def _weight_gemms(g: Graph) -> list[Node]:
    """FF nodes that multiply by a trainable weight: conv2d, and matmul by a 2-D weight
    ([out, in] read transposed, or [in, out])."""
    out = []
    for n in g.nodes:
        if n.stage != Stage.FF or len(n.inputs) < 2 or n.inputs[1].name not in g.params:
            continue
        if n.op == "conv2d" or (n.op == "matmul" and n.inputs[1].type.rank == 2
                                and not n.attrs.get("trans_a")):
            out.append(n)
    return out


def _dense_gemms(g: Graph) -> list[WeightSparsity]:
    """Report rows of the FF GEMM work BDWP never prunes: embedding tables (a gather, run as a
    one-hot GEMM over a dense table) and GEMMs whose operands are both activations (attention
    scores and context)."""
    rows = []
    for n in g.nodes:
        if n.stage != Stage.FF:
            continue
        if n.op == "embedding" and n.inputs[0].name in g.params:
            rows.append(WeightSparsity(n.layer, n.inputs[0].name, "dense", "dense",
                                       reason="embedding table (gather by token id)",
                                       kind="embedding"))
        elif n.op == "matmul" and not any(v.name in g.state for v in n.inputs):
            rows.append(WeightSparsity(n.layer, f"%{n.outputs[0].name}", "dense", "dense",
                                       reason="activation x activation GEMM (attention)",
                                       kind="activations"))
    return rows


def _replace_input(node: Node, old: Value, new: Value) -> None:
    node.inputs = tuple(new if v is old else v for v in node.inputs)


def _prune(w: np.ndarray, spec: SparsitySpec, axis: int) -> np.ndarray:
    return np.where(nm_mask(w, spec.n, spec.m, axis), w, 0).astype(w.dtype)


def _bp_node(g: Graph, w: Value) -> Node | None:
    for n in g.nodes:
        if n.stage == Stage.BP and n.op in ("conv2d_grad_input", "matmul") and n.inputs[1] is w:
            return n
    return None


def _insert_before(g: Graph, target: Node, op: str, inputs: list[Value], attrs: dict,
                   stage: Stage, name: str) -> Value:
    """Add a node and move it just before ``target``."""
    v = g.add1(op, inputs, attrs, stage, target.layer, name=name)
    g.nodes.insert(g.nodes.index(target), g.nodes.pop())
    return v


def _sparsify_weight(g: Graph, spec: SparsitySpec, ff_node: Node, pregenerate: bool) -> WeightSparsity:
    w = ff_node.inputs[1]
    name, layer = w.name, ff_node.layer
    nm = f"{spec.n}:{spec.m}"
    init = g.initializers[name]
    ff_axis, bp_axis = _axes(ff_node)
    ff_attrs = {"n": spec.n, "m": spec.m, "axis": ff_axis}
    bp_attrs = {"n": spec.n, "m": spec.m, "axis": bp_axis}
    if pregenerate:
        w_ff = g.add_param(f"{name}.ff", _prune(init, spec, ff_axis), trainable=False)
    else:  # pruned at the start of FF, on its critical path
        w_ff = _insert_before(g, ff_node, "nm_prune", [w], ff_attrs, Stage.SORE, f"{layer}.sore_ff")
    _replace_input(ff_node, w, w_ff)
    ff_node.attrs["nm"] = [spec.n, spec.m, ff_axis]
    bp_desc = "none (no BP)"
    bp_node = _bp_node(g, w)
    if bp_node is not None:
        if spec.sparse_bp:
            if pregenerate:
                src = _prune(init, spec, ff_axis) if spec.mode == "bdwp-nested" else init
                w_bp = g.add_param(f"{name}.bp", _prune(src, spec, bp_axis), trainable=False)
            else:
                src_v = w_ff if spec.mode == "bdwp-nested" else w
                w_bp = _insert_before(g, bp_node, "nm_prune", [src_v], bp_attrs, Stage.SORE,
                                      f"{layer}.sore_bp")
            _replace_input(bp_node, w, w_bp)
            bp_node.attrs["nm"] = [spec.n, spec.m, bp_axis]
            bp_desc = f"{nm} along Co"
        else:  # W_ff is N:M along Ci, not along Co, the axis BP reduces over: a dense GEMM on
            # a dense-stored copy of W_ff (the FF copy is kept compressed for the N:M GEMM)
            if pregenerate:
                w_ffd = g.add_param(f"{name}.ff_dense", _prune(init, spec, ff_axis), trainable=False)
            else:
                w_ffd = _insert_before(g, bp_node, "nm_prune", [w], ff_attrs, Stage.SORE,
                                       f"{layer}.sore_ff_dense")
            _replace_input(bp_node, w, w_ffd)
            bp_desc = "dense GEMM on W_ff"

    grad_key = f"grad/{name}"
    if grad_key in g.outputs and spec.srste_lambda > 0:
        dw = g.outputs[grad_key]
        attrs = {"n": spec.n, "m": spec.m, "axis": FF_AXIS, "lam": spec.srste_lambda}
        first = len(g.nodes)                   # the nodes added here move to just after dw's
        if ff_axis == FF_AXIS:
            # W_ff is nm_prune(w) along Ci: SR-STE reads it rather than pruning w again
            refined = g.add1("srste_grad", [dw, w, w_ff], attrs, Stage.WU, layer,
                             name=f"{layer}.srste_grad")
        else:  # an [in, out] weight: SR-STE along Ci of the transposed weight, as SORE prunes
            t = {"perm": [1, 0]}
            dwt = g.add1("transpose", [dw], t, Stage.WU, layer, name=f"{layer}.srste_dw_t")
            wt = g.add1("transpose", [w], t, Stage.WU, layer, name=f"{layer}.srste_w_t")
            rt = g.add1("srste_grad", [dwt, wt], attrs, Stage.WU, layer, name=f"{layer}.srste_grad")
            refined = g.add1("transpose", [rt], t, Stage.WU, layer, name=f"{layer}.srste_t")
        added = g.nodes[first:]
        del g.nodes[first:]
        at = g.nodes.index(dw.producer) + 1
        g.nodes[at:at] = added
        for n in g.nodes:
            if n not in added:
                _replace_input(n, dw, refined)
        g.outputs[grad_key] = refined

    new_w = g.state_updates.get(name)
    if pregenerate and new_w is not None:
        new_ff = g.add1("nm_prune", [new_w], ff_attrs, Stage.SORE, layer, name=f"{layer}.sore_ff")
        g.state_updates[w_ff.name] = new_ff
        if spec.sparse_bp and bp_node is not None:
            src = new_ff if spec.mode == "bdwp-nested" else new_w
            g.state_updates[f"{name}.bp"] = g.add1("nm_prune", [src], bp_attrs, Stage.SORE, layer,
                                                   name=f"{layer}.sore_bp")
        elif bp_node is not None:
            g.state_updates[f"{name}.ff_dense"] = g.add1("nm_prune", [new_w], ff_attrs, Stage.SORE,
                                                         layer, name=f"{layer}.sore_ff_dense")
    return WeightSparsity(layer, name, f"{nm} along Ci", bp_desc)


def sparsify(graph: Graph, spec: str | SparsitySpec, exclude: Sequence[str] = (),
             srste_lambda: float | None = None, pregenerate: bool = True) -> Graph:
    """Apply ``dense``, ``ff:N:M``, ``bdwp:N:M`` or ``bdwp-nested:N:M`` to a training graph.

    ``exclude`` names layers (or weights) to keep dense; the stem (a conv
    over 1 or 3 input channels) always stays dense, as in
    :func:`satc.sparsity.convert`. ``pregenerate=False`` (an ablation) prunes
    W_ff / W_bp right before the FF / BP GEMM that reads them instead of after
    the previous update: the same numbers, with SORE on the critical path.
    Returns a new graph; the input is unchanged.
    """
    spec = parse_sparsity(spec, srste_lambda)
    g = graph.clone()
    if not any(n.stage == Stage.OPT for n in g.nodes):
        raise SparsityError(f"graph {graph.name!r} is not a training graph; "
                            "run build_training_graph first")
    gemms = _weight_gemms(g)
    known = {n.layer for n in gemms} | {n.inputs[1].name for n in gemms}
    unknown = [e for e in exclude if e not in known]
    if unknown:
        raise SparsityError(f"exclude names {unknown} match no weight layer; layers: {sorted(known)}")
    report = SparsityReport(spec)
    dense_gemms = _dense_gemms(g)
    seen: set[str] = set()
    for node in gemms:
        w = node.inputs[1]
        if w.name in seen:
            continue
        seen.add(w.name)
        stem = node.op == "conv2d" and is_stem_conv(node.inputs[0].shape[1])
        grouped = None if spec.is_dense or node.op != "conv2d" else grouped_conv_dense_reason(
            node.attrs["groups"], node.inputs[0].shape[1], w.shape[0], spec)
        if spec.is_dense or stem or grouped or node.layer in exclude or w.name in exclude:
            why = "" if spec.is_dense else ("stem (image input)" if stem else grouped
                                            or "excluded by user")
            report.layers.append(WeightSparsity(node.layer, w.name, "dense", "dense", reason=why))
            continue
        report.layers.append(_sparsify_weight(g, spec, node, pregenerate))
    report.layers += dense_gemms
    g.meta["sparsity"] = report
    return g
