"""ONNX frontend: an ONNX model (default-domain opsets 9 to 21) to a satc forward graph.

:func:`import_onnx` works in five steps:

1. **Load and check**: parse the file, run ``onnx.checker``, read the
   default-domain opset; bind every graph input to a static shape
   (``input_shapes`` binds symbolic dims).
2. **Constant folding**: initializers and ``Constant`` nodes are constants;
   so is the output of every deterministic node whose inputs are all
   constants, and of every ``Shape`` (each satc value has a static shape).
   Constants are evaluated with onnx's numpy reference implementation of the
   op at the model's opset (:func:`satc.frontend.onnx_patterns.evaluate`):
   before translation where they do not depend on an activation's shape,
   otherwise (``Shape`` of an activation and what it feeds) when the walk
   reaches them, once that shape is known. Folded nodes emit no IR.
3. **Pattern fusion** (:mod:`satc.frontend.onnx_patterns`): the erf and tanh
   GELU subgraphs and LayerNorm written out in ReduceMean/Sub/Pow/Sqrt/Div
   become one ``gelu`` / ``layernorm`` op.
4. **Support check**: every node left must have a handler in
   ``ONNX_HANDLERS``; all that do not are reported in one
   :class:`~satc.errors.UnsupportedOpError`.
5. **Translation**: the nodes in order, through the handler table, with
   BatchNormalization, LayerNormalization and Linear-style layers emitted by
   :class:`~satc.frontend.emitter.GraphEmitter` as in the torch frontend.

State. A constant read as a Conv/Gemm/MatMul weight or bias, a
BatchNormalization or LayerNormalization scale/bias (written out or not), or
as the 1-D bias ``Add`` after a MatMul/Gemm with a constant weight becomes a
trainable param named after its initializer (or the output of the node that
computed it); so does a float initializer of more than one element read
directly by Add, Mul or Concat (a position embedding, a class token). A Gemm/MatMul weight read through a ``Transpose`` of a constant
is one param in its stored layout: the transpose becomes ``trans_a``/
``trans_b`` (or a transpose op). BatchNormalization running mean and
variance become buffers. Every other constant is a graph constant.

BatchNormalization: with ``bn_training=True`` (the default, satc builds
training graphs) every BatchNormalization, whatever its ``training_mode``,
becomes training-mode batchnorm that normalises with batch statistics and
updates its running-stat buffers with torch's rule (unbiased variance);
ONNX momentum is the running-average weight, so torch's momentum is
``1 - momentum``. With ``bn_training=False`` it normalises with the running
statistics (inference).
"""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from satc.errors import FrontendError, IRError, ShapeError, UnsupportedOpError
from satc.frontend.emitter import GraphEmitter
from satc.frontend.onnx_patterns import (DEFAULT_DOMAINS, Fusion, OnnxView, attributes, evaluate,
                                         find_fusions, foldable, node_label, reduce_axes)
from satc.ir.graph import Graph, Value
from satc.ir.ops.pool import pool_out_hw
from satc.ir.types import TensorType
from satc.ir.verifier import MAX_VALUE_BYTES, size_problem, verify

MIN_OPSET, MAX_OPSET = 9, 21
ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
               onnx.TensorProto.INT64: "int64", onnx.TensorProto.UINT8: "uint8"}
# Constant inputs of these ops (by input index) are trainable params.
PARAM_SLOTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2), "Gemm": (1, 2), "MatMul": (0, 1), "BatchNormalization": (1, 2),
    "LayerNormalization": (1, 2)}
# A float initializer (not a Constant node or a folded value) of more than one
# element read directly by these ops is a learned tensor (a position
# embedding, a class token, an unfolded BN scale): a trainable param, as in torch.
LEARNED_TENSOR_OPS = ("Add", "Mul", "Concat")
# Ops whose constant operand may be a Transpose of the param (folded into trans_a / trans_b).
WEIGHT_OPS = ("Gemm", "MatMul")
# Why ops that satc only takes inside a pattern or a constant subgraph were left over.
ONLY_IN_PATTERNS = {
    "Erf": "only inside the exact GELU pattern x * 0.5 * (1 + Erf(x / sqrt 2))",
    "Sqrt": "only on constants or inside the LayerNorm pattern"}

Handler = Callable[["_Importer", onnx.NodeProto, dict[str, Any]], "Value | Sequence[Value | None]"]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _f32(v: float) -> float:
    """A float32 attribute as the shortest decimal that rounds to it (1e-5, not 9.99999974e-06)."""
    return float(np.format_float_positional(np.float32(v), unique=True, trim="-"))


def _torch_momentum(onnx_momentum: float) -> float:
    """torch's BN momentum (weight of the batch statistic) from ONNX's (weight of the running one)."""
    return float(Decimal(1) - Decimal(np.format_float_positional(np.float32(onnx_momentum),
                                                                 unique=True, trim="-")))


def _ir_array(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` in a dtype the IR holds (float32/float16, int64, uint8)."""
    if arr.dtype in (np.float16, np.float32, np.int64, np.uint8):
        return arr
    if arr.dtype.kind == "f":
        return arr.astype(np.float32)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    raise FrontendError(f"constant {name!r} has dtype {arr.dtype}, which satc cannot hold")


# ------------------------------------------------------------------ loading
def _load(model: str | Path | onnx.ModelProto
          ) -> tuple[onnx.ModelProto, str, str, dict[str, np.ndarray]]:
    """(checked model, how messages name it, a default graph name, its initializers' arrays)."""
    if isinstance(model, onnx.ModelProto):
        proto, where, stem = model, f"ONNX model {model.graph.name or '(unnamed)'!r}", ""
    else:
        path = Path(model)
        where, stem = f"ONNX file {str(path)!r}", path.stem
        if not path.is_file():
            raise FrontendError(f"{where} does not exist or is not a file")
        try:
            proto = onnx.load(str(path))
        except Exception as e:  # protobuf and external-data loaders raise many types
            raise FrontendError(f"{where} is not a readable ONNX model ({type(e).__name__}: "
                                f"{_first_line(e)}); is it truncated or not an .onnx file?") from None
    _check_references(proto.graph, where)
    consts = {t.name: _initializer(t, where) for t in proto.graph.initializer}
    try:
        onnx.checker.check_model(proto)
    except Exception as e:  # ValidationError, or ValueError for a bad proto
        raise FrontendError(f"{where} fails onnx.checker: {_first_line(e)}; "
                            "re-export the model or fix it with onnx.helper") from None
    return proto, where, stem, consts


def _check_references(graph: onnx.GraphProto, where: str) -> None:
    """Every value a node reads is defined once, before the node (else FrontendError naming the
    node and the value: a missing initializer, a duplicate name, a cycle or an unsorted graph)."""
    inits = [t.name for t in graph.initializer]
    twice = sorted({n for n in inits if inits.count(n) > 1})
    if twice:
        raise FrontendError(f"{where}: initializer {twice[0]!r} is defined twice; give each "
                            "initializer a unique name")
    defined = {vi.name for vi in graph.input} | set(inits)
    made_by: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for o in node.output:
            if o and (o in made_by or o in defined):
                first = (f"node {made_by[o]} {node_label(graph.node[made_by[o]])!r}" if o in made_by
                         else "a graph input or initializer")
                raise FrontendError(f"{where}: node {i} {node_label(node)!r} ({node.op_type}) "
                                    f"writes {o!r}, already defined by {first}; rename one of them")
            if o:
                made_by[o] = i
    for i, node in enumerate(graph.node):
        at = f"{where}: node {i} {node_label(node)!r} ({node.op_type})"
        for name in node.input:
            if not name or name in defined:
                continue
            j = made_by.get(name)
            if j is None:
                raise FrontendError(
                    f"{at} reads {name!r}, which no graph input, initializer or node defines: a "
                    f"missing initializer? Re-export the model with its weights (export_params=True) "
                    f"or add {name!r} to graph.initializer")
            cycle = _reaches(graph, made_by, j, i)
            raise FrontendError(
                f"{at} reads {name!r}, made by " + ("itself" if j == i else
                                                    f"the later node {j} {node_label(graph.node[j])!r}")
                + ("; the graph has a cycle, which ONNX forbids: break it" if cycle else
                   "; the nodes are not in topological order: sort them (re-export the model)"))
        defined.update(node.output)


def _reaches(graph: onnx.GraphProto, made_by: Mapping[str, int], start: int, target: int) -> bool:
    """Whether node ``start`` depends (through node inputs) on node ``target``."""
    seen, todo = {start}, [start]
    while todo:
        for name in graph.node[todo.pop()].input:
            j = made_by.get(name)
            if j == target:
                return True
            if j is not None and j not in seen:
                seen.add(j)
                todo.append(j)
    return False


def _initializer(t: onnx.TensorProto, where: str) -> np.ndarray:
    """The array of initializer ``t``; FrontendError for dims or data that do not fit."""
    dims = list(t.dims)
    if min(dims, default=0) < 0 or math.prod(dims) * 8 > MAX_VALUE_BYTES:
        raise FrontendError(f"{where}: initializer {t.name!r} has dims {dims}: negative or more than "
                            f"{MAX_VALUE_BYTES} bytes; fix or re-export the model")
    try:
        return numpy_helper.to_array(t)
    except Exception as e:  # numpy_helper raises ValueError, TypeError, KeyError, ...
        raise FrontendError(f"{where}: initializer {t.name!r} cannot be read ({_first_line(e)}): its "
                            f"data does not fit its dims {dims} and data type; re-export the model") from None


def _finite(arr: np.ndarray, what: str) -> np.ndarray:
    """``arr`` when it holds no NaN or infinity, else FrontendError naming ``what``."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr.reshape(-1)))
        raise FrontendError(f"{what} holds {bad.size} NaN or infinite value(s) (first at flat index "
                            f"{int(bad[0])}); satc does not train from corrupt weights: re-export the "
                            "model with finite values")
    return arr


def _default_opset(proto: onnx.ModelProto, where: str) -> int:
    versions = {o.domain: o.version for o in proto.opset_import}
    opset = versions.get("", versions.get("ai.onnx"))
    if opset is None:
        raise FrontendError(f"{where} imports no default-domain (ai.onnx) opset")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UnsupportedOpError(
            f"{where} uses opset {opset}; satc imports opsets {MIN_OPSET} to {MAX_OPSET}. "
            f"Re-export with opset_version in that range, or convert it with "
            f"onnx.version_converter.convert_version(model, 13)")
    return opset


def _bind_hint(name: str, dims: Sequence[int | str]) -> str:
    """How to give input ``name`` a static shape, from the API and from the CLI."""
    example = ",".join(map(str, dims)) if dims else "D0,D1,..."
    return (f"bind it with import_onnx(..., input_shapes={{{name!r}: [{example.replace(',', ', ')}]}}) "
            f"or the CLI's --input-shape {name}={example}, each symbolic dim replaced by a size")


def _input_type(vi: onnx.ValueInfoProto, name: str, given: Sequence[int] | None) -> TensorType:
    """The static type of graph input ``vi`` (satc name ``name``), with ``given`` binding its shape."""
    if not vi.type.HasField("tensor_type"):
        raise FrontendError(f"input {vi.name!r} is a {vi.type.WhichOneof('value')}, not a tensor")
    tt = vi.type.tensor_type
    dtype = ONNX_DTYPES.get(tt.elem_type)
    if dtype is None:
        raise FrontendError(f"input {vi.name!r} has element type "
                            f"{onnx.TensorProto.DataType.Name(tt.elem_type)}; satc takes "
                            f"{', '.join(ONNX_DTYPES.values())}")
    dims: list[int | str] | None = None
    if tt.HasField("shape"):
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    if given is not None:
        shape = list(given) if isinstance(given, (list, tuple, np.ndarray)) else None
        if shape is None or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                    for s in shape):
            raise ShapeError(f"input {vi.name!r}: input_shapes gives {given!r}; give a list of "
                             "integer sizes, e.g. [2, 3, 32, 32]")
        shape = [int(s) for s in shape]
        if dims is not None and len(dims) != len(shape):
            raise ShapeError(f"input {vi.name!r}: input_shapes gives {shape} (rank {len(shape)}), "
                             f"the model declares {dims} (rank {len(dims)})")
        for i, (d, s) in enumerate(zip(dims or [], shape)):
            if isinstance(d, int) and d != s:
                raise ShapeError(f"input {vi.name!r} dim {i}: input_shapes gives {s}, the model "
                                 f"fixes it to {d} (model shape {dims})")
        return _sized(vi.name, shape, dtype)
    if dims is None:
        raise FrontendError(f"input {vi.name!r} has no shape in the model; {_bind_hint(vi.name, [])}")
    free = [f"dim {i} ({d!r})" for i, d in enumerate(dims) if not isinstance(d, int)]
    if free:
        raise FrontendError(f"input {vi.name!r} (satc input {name!r}) has symbolic "
                            f"{', '.join(free)} in shape {dims}; {_bind_hint(vi.name, dims)}")
    return _sized(vi.name, [int(d) for d in dims], dtype)


def _sized(name: str, shape: list[int], dtype: str) -> TensorType:
    """The type of input ``name``, checked (each dim >= 1, at most MAX_VALUE_BYTES) before any
    array of that size exists."""
    problem = size_problem(tuple(shape), dtype)
    if problem:
        raise ShapeError(f"input {name!r} {problem} (bind its dims with input_shapes)")
    return TensorType(tuple(shape), dtype)


# ------------------------------------------------------------------ importer
class _Importer:
    """Folds, fuses and translates one ONNX graph, emitting IR through a GraphEmitter."""

    def __init__(self, proto: onnx.ModelProto, consts: dict[str, np.ndarray], opset: int, where: str,
                 name: str, bn_training: bool):
        self.proto, self.opset, self.where, self.bn_training = proto, opset, where, bn_training
        self.em = GraphEmitter(Graph(name))
        self.nodes = list(proto.graph.node)
        self.consts = consts
        self.const_names = set(self.consts)
        self.initializers = set(self.consts)
        self.env: dict[str, Value | None] = {}
        self.folded: set[int] = set()
        self.fusions: dict[int, Fusion] = {}
        self.absorbed: set[int] = set()
        self.params: set[str] = set()
        self.view = OnnxView(self.nodes, self.consts, self.const_names,
                             {o.name for o in proto.graph.output})
        self.layer = ""

    @property
    def g(self) -> Graph:
        """The graph being built."""
        return self.em.graph

    def emit(self, op: str, inputs: Sequence[Value], attrs: dict | None = None) -> Value:
        """Append ``op`` tagged with the current ONNX node as its layer."""
        return self.g.add1(op, inputs, attrs, layer=self.layer)

    def opset_of(self, domain: str) -> int | str:
        """The opset version the model imports for ``domain``."""
        if domain in DEFAULT_DOMAINS:
            return self.opset
        return next((o.version for o in self.proto.opset_import if o.domain == domain), "?")

    # -------------------------------------------------------------- values
    def value(self, name: str) -> Value:
        """The IR value of ONNX value ``name``; constants become params or constants on first use."""
        if name in self.env:
            v = self.env[name]
            if v is None:
                i, made_by = self.view.node_of(name)
                raise UnsupportedOpError(
                    f"it reads {name!r}, output {list(made_by.output).index(name)} of node "
                    f"{node_label(made_by)!r} ({made_by.op_type}), an optional output satc does not "
                    "compute (BN saved statistics, pool indices, dropout mask, LayerNorm mean / "
                    "inverse std)")
            return v
        if name not in self.consts:
            raise FrontendError(f"value {name!r} is not defined (sparse initializers and "
                                "outer-scope values are not supported)")
        arr = _ir_array(self.consts[name], name)
        if name in self.params:
            _finite(arr, f"parameter {name!r}")
        v = (self.g.add_param(name, arr, trainable=True) if name in self.params
             else self.g.add_constant(arr, name))
        self.env[name] = v
        return v

    def const(self, name: str) -> np.ndarray | None:
        """The folded value of ``name``, or None when it is computed from the inputs."""
        return self.consts.get(name) if name else None

    def need_const(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray:
        """Input ``index`` of ``node``, which must be a constant (``what`` names it in errors)."""
        arr = self.const(node.input[index]) if index < len(node.input) else None
        if arr is None:
            raise UnsupportedOpError(f"its {what} (input {index}) must be a constant; satc needs "
                                     "static shapes and folds only constant subgraphs")
        return arr

    def optional_const(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray | None:
        """Like :meth:`need_const` for an optional input; None when it is omitted."""
        given = index < len(node.input) and node.input[index]
        return self.need_const(node, index, what) if given else None

    def buffer(self, node: onnx.NodeProto, index: int, what: str) -> Value:
        """A fresh non-trainable state tensor (BN running stat) from constant input ``index``."""
        arr = self.need_const(node, index, what)
        name = node.input[index]
        if name in self.params or name in self.g.state or name in self.g.constants:
            name = f"{self.layer}.{what}"  # shared with other state: give this BN its own copy
        arr = _finite(_ir_array(arr, name).astype(np.float32), f"{what} {node.input[index]!r}")
        return self.g.add_param(name, arr, trainable=False)

    def weight_source(self, name: str) -> tuple[str, onnx.NodeProto | None]:
        """(param name, Transpose node) when ``name`` is a Transpose of a constant, else (name, None)."""
        p = self.view.node_of(name) if name in self.const_names else None
        if p is not None and p[1].op_type == "Transpose" and p[1].input[0] in self.const_names:
            return p[1].input[0], p[1]
        return name, None

    def weight(self, name: str, trans: bool) -> tuple[Value, bool]:
        """A MatMul/Gemm operand and its transpose flag, with a Transpose of a param folded in."""
        src, tnode = self.weight_source(name)
        if tnode is None:
            return self.value(name), trans
        w = self.value(src)
        r = w.type.rank
        perm = [int(p) for p in attributes(tnode).get("perm", range(r - 1, -1, -1))]
        if perm == list(range(r - 2)) + [r - 1, r - 2]:
            return w, not trans
        return self.emit("transpose", [w], {"perm": perm}), trans

    # -------------------------------------------------------------- steps
    def bind_inputs(self, input_shapes: Mapping[str, Sequence[int]] | None,
                    input_names: Sequence[str] | None) -> None:
        """Declare the graph inputs (the non-initializer ONNX inputs) with static shapes."""
        user = [vi for vi in self.proto.graph.input if vi.name not in self.consts]
        onnx_names = [vi.name for vi in user]
        names = (list(input_names) if input_names is not None
                 else ["x"] if len(user) == 1 else onnx_names)
        if len(names) != len(user):
            raise FrontendError(f"input_names {names} do not match the model's {len(user)} "
                                f"inputs {onnx_names}")
        shapes = dict(input_shapes or {})
        unknown = sorted(set(shapes) - set(onnx_names) - set(names))
        if unknown:
            raise FrontendError(f"input_shapes names {unknown}, which are not inputs of {self.where}; "
                                f"its inputs are {onnx_names}")
        for vi, name in zip(user, names):
            given = shapes.get(vi.name, shapes.get(name))
            self.env[vi.name] = self.g.add_input(name, _input_type(vi, name, given))

    def analyse(self) -> None:
        """Fold constants, match patterns, check support, and pick which constants are params."""
        for i, node in enumerate(self.nodes):
            if foldable(node, self.const_names):
                self.folded.add(i)
                self.const_names.update(o for o in node.output if o)
                if all(n in self.consts or (node.op_type == "Shape" and n in self.env)
                       for n in node.input if n):
                    self.fold(node)
        for f in find_fusions(self.view, self.folded):
            self.fusions[f.last] = f
            self.absorbed |= f.nodes - {f.last}
        self._check_supported()
        for i, node in enumerate(self.nodes):
            if i in self.folded or i in self.absorbed:
                continue
            if i in self.fusions:
                self.params.update(p for p in self.fusions[i].params if p)
                continue
            for slot in PARAM_SLOTS.get(node.op_type, ()):
                name = node.input[slot] if slot < len(node.input) else ""
                if name in self.const_names:
                    self.params.add(self.weight_source(name)[0] if node.op_type in WEIGHT_OPS else name)
            if node.op_type in LEARNED_TENSOR_OPS:
                self.params.update(n for n in node.input if n in self.initializers
                                   and self.consts[n].dtype == np.float32 and self.consts[n].size > 1)
            if node.op_type == "Add" and (split := self.view.split_const(node, "Add")) is not None:
                made_by = self.view.node_of(split[0])
                if (made_by is not None and made_by[1].op_type in WEIGHT_OPS
                        and any(n in self.const_names for n in made_by[1].input[:2])
                        and self.consts[split[1]].ndim == 1):
                    self.params.add(split[1])  # the bias of a MatMul + Add linear layer

    def _check_supported(self) -> None:
        bad = []
        for i, node in enumerate(self.nodes):
            if i in self.folded or i in self.absorbed or i in self.fusions:
                continue
            if node.domain in DEFAULT_DOMAINS and node.op_type in ONNX_HANDLERS:
                continue
            op = node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}"
            hint = f": {ONLY_IN_PATTERNS[op]}" if op in ONLY_IN_PATTERNS else ""
            bad.append((op, f"node {node_label(node)!r} ({op}, opset {self.opset_of(node.domain)}){hint}"))
        if bad:
            err = UnsupportedOpError(
                f"{self.where} has {len(bad)} unsupported node(s):\n  " + "\n  ".join(w for _, w in bad)
                + f"\nsatc translates {', '.join(sorted(ONNX_HANDLERS))}, folds constant "
                "subgraphs, and fuses the GELU and LayerNorm patterns; rewrite the model with "
                "these ops or re-export it")
            err.unsupported = bad           # (op, where) per node, for satc.coverage
            raise err

    def fold(self, node: onnx.NodeProto) -> None:
        """Evaluate a folded node; an activation's Shape reads a zero-stride stand-in of it."""
        ins = []
        for name in (n for n in node.input if n):
            if name in self.consts:
                ins.append(self.consts[name])
            else:
                try:
                    v = self.value(name)
                except FrontendError as e:
                    raise type(e)(f"{self.where}: node {node_label(node)!r} (Shape): {e}") from None
                ins.append(np.broadcast_to(np.zeros((), v.dtype), v.shape))
        n = _fold_elements(node, ins)
        if n * 8 > MAX_VALUE_BYTES:
            raise FrontendError(f"{self.where}: constant folding of node {node_label(node)!r} "
                                f"({node.op_type}) would make a tensor of {n} elements, more than "
                                f"{MAX_VALUE_BYTES} bytes; fix the shape it is given")
        try:
            outs = evaluate(node, self.opset, ins)
        except Exception as e:  # the reference implementation raises many types
            raise FrontendError(f"{self.where}: constant folding of node {node_label(node)!r} "
                                f"({node.op_type}, opset {self.opset}) failed: {_first_line(e)}") from None
        self.consts.update(zip([o for o in node.output if o], outs))

    def translate(self) -> None:
        """Walk the nodes in order: evaluate late constants, emit fusions and handled nodes."""
        for i, node in enumerate(self.nodes):
            if i in self.absorbed:
                continue
            if i in self.folded:
                if any(o and o not in self.consts for o in node.output):
                    self.fold(node)
                continue
            self.layer = node_label(node)
            fusion = self.fusions.get(i)
            try:
                outs = (FUSION_EMITTERS[fusion.op](self, fusion) if fusion is not None
                        else ONNX_HANDLERS[node.op_type](self, node, attributes(node)))
            except (FrontendError, IRError) as e:  # ShapeError is an IRError
                what = f"{fusion.op} pattern ending at node" if fusion is not None else "node"
                raise type(e)(f"{self.where}: {what} {self.layer!r} ({node.op_type}, opset "
                              f"{self.opset}): {e}") from None
            outs = [outs] if isinstance(outs, Value) else list(outs)
            for name, v in zip(node.output, outs + [None] * (len(node.output) - len(outs))):
                if name:
                    self.env[name] = v

    def set_outputs(self) -> None:
        """Name the graph outputs ``output`` (one) or ``output0``, ``output1``, ..."""
        outs = []
        for o in self.proto.graph.output:
            try:
                outs.append(self.value(o.name))
            except FrontendError as e:
                raise type(e)(f"{self.where}: graph output {o.name!r}: {e}") from None
        keys = ["output"] if len(outs) == 1 else [f"output{i}" for i in range(len(outs))]
        self.g.outputs = dict(zip(keys, outs))


def _fold_elements(node: onnx.NodeProto, ins: Sequence[np.ndarray]) -> int:
    """Elements the output of a folded op that sizes it from its inputs' values would hold (0
    for other ops, and for inputs the op itself refuses)."""
    try:
        if node.op_type == "ConstantOfShape":
            dims = [int(d) for d in ins[0].reshape(-1)]
        elif node.op_type == "Expand":
            a, b = list(ins[0].shape), [int(d) for d in ins[1].reshape(-1)]
            r = max(len(a), len(b))
            dims = [max(x, y) for x, y in zip([1] * (r - len(a)) + a, [1] * (r - len(b)) + b)]
        elif node.op_type == "Tile":
            dims = [s * int(k) for s, k in zip(ins[0].shape, ins[1].reshape(-1))]
        elif node.op_type == "Range":
            start, limit, delta = (float(v.reshape(-1)[0]) for v in ins)
            dims = [math.ceil((limit - start) / delta)]
        else:
            return 0
    except (ValueError, IndexError, OverflowError, ZeroDivisionError):
        return 0
    return math.prod(max(d, 0) for d in dims)


# ------------------------------------------------------------------ handlers
def _hw(a: dict, key: str) -> list[int]:
    """A 2-D window attribute (``kernel_shape``, ``strides``, ``dilations``): two integers >= 1."""
    vals = [int(v) for v in a.get(key, [1, 1])]
    if len(vals) != 2 or min(vals) < 1:
        raise ShapeError(f"{key} {vals}: give two integers >= 1 (satc takes 2-D windows only)")
    return vals


def _pads(a: dict, hw: Sequence[int], k: Sequence[int], stride: Sequence[int],
          dil: Sequence[int]) -> list[int]:
    """[top, left, bottom, right] from ``pads`` or ``auto_pad`` (ONNX orders pads the same way)."""
    mode = a.get("auto_pad", "NOTSET")
    if mode == "NOTSET":
        pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
        if len(pads) != 4:
            raise UnsupportedOpError(f"pads {pads}: only 2-D windows (4 pads) are supported")
        if min(pads) < 0:
            raise ShapeError(f"pads {pads}: negative padding is not supported; use pads >= 0")
        return pads
    if mode == "VALID":
        return [0, 0, 0, 0]
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        raise UnsupportedOpError(f"auto_pad={mode!r}")
    lo, hi = [], []
    for n, kk, s, d in zip(hw, k, stride, dil):
        total = max((-(-n // s) - 1) * s + (kk - 1) * d + 1 - n, 0)
        lo.append(total // 2 if mode == "SAME_UPPER" else total - total // 2)
        hi.append(total - lo[-1])
    return lo + hi


def _bias(im: _Importer, y: Value, node: onnx.NodeProto, index: int, axis: int) -> Value:
    if index < len(node.input) and node.input[index]:
        return im.emit("bias_add", [y, im.value(node.input[index])], {"axis": axis})
    return y


def _mm_flags(trans_a: bool, trans_b: bool) -> dict[str, bool]:
    return {k: True for k, on in (("trans_a", trans_a), ("trans_b", trans_b)) if on}


def _need_nchw(x: Value, what: str) -> None:
    if x.type.rank != 4:
        raise UnsupportedOpError(f"only 2-D {what} on NCHW inputs is supported, got shape {x.shape}")


def _conv(im, node, a):
    x, w = im.value(node.input[0]), im.value(node.input[1])
    _need_nchw(x, "convolution")
    stride, dil = _hw(a, "strides"), _hw(a, "dilations")
    attrs = {"stride": stride, "padding": _pads(a, x.shape[2:], w.shape[2:], stride, dil),
             "dilation": dil, "groups": int(a.get("group", 1))}
    return _bias(im, im.emit("conv2d", [x, w], attrs), node, 2, axis=1)


def _gemm(im, node, a):
    x, trans_a = im.weight(node.input[0], bool(a.get("transA", 0)))
    w, trans_b = im.weight(node.input[1], bool(a.get("transB", 0)))
    y = im.emit("matmul", [x, w], _mm_flags(trans_a, trans_b))
    alpha, beta = _f32(a.get("alpha", 1.0)), _f32(a.get("beta", 1.0))
    if alpha != 1.0:
        y = im.emit("scale", [y], {"factor": alpha})
    if len(node.input) < 3 or not node.input[2]:
        return y
    c = im.value(node.input[2])
    if beta != 1.0:
        c = im.emit("scale", [c], {"factor": beta})
    n = y.shape[-1]
    if c.shape not in ((n,), (1, n)):
        return im.emit("add", [y, c])
    if c.type.rank == 2:
        c = im.emit("reshape", [c], {"shape": [n]})
    return im.emit("bias_add", [y, c], {"axis": -1})


def _matmul(im, node, a):
    (x, trans_a), (w, trans_b) = im.weight(node.input[0], False), im.weight(node.input[1], False)
    if min(x.type.rank, w.type.rank) < 2:
        raise UnsupportedOpError(f"MatMul of shapes {x.shape} and {w.shape}: 1-D operands are "
                                 "not supported; reshape them to 2-D")
    return im.emit("matmul", [x, w], _mm_flags(trans_a, trans_b))


def _batchnorm(im, node, a):
    if not a.get("spatial", 1):
        raise UnsupportedOpError("spatial=0 (per-activation statistics) is not supported")
    x, gamma, beta = (im.value(n) for n in node.input[:3])
    mean, var = im.buffer(node, 3, "running_mean"), im.buffer(node, 4, "running_var")
    y = im.em.batchnorm(x, gamma, beta, mean, var, im.bn_training,
                        _torch_momentum(a.get("momentum", 0.9)), _f32(a.get("epsilon", 1e-5)), im.layer)
    # outputs 1, 2: updated running stats (all opsets); 3, 4 (opset < 14): saved stats, unsupported
    return [y, im.em.state_updates.get(mean.name), im.em.state_updates.get(var.name)]


def _layernorm(im, node, a):
    x = im.value(node.input[0])
    r = x.type.rank
    ndim = r - int(a.get("axis", -1)) % r
    beta = im.value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    y = im.em.layernorm(x, im.value(node.input[1]), beta, ndim, _f32(a.get("epsilon", 1e-5)), im.layer)
    return [y]  # Mean and InvStdDev outputs are not computed


def _softmax(im, node, a):
    """Softmax; before opset 13 the input is coerced to 2-D at ``axis`` (default 1) and the
    softmax runs over the flattened trailing axes, then the result takes the input's shape."""
    x = im.value(node.input[0])
    r = x.type.rank
    axis = int(a.get("axis", -1 if im.opset >= 13 else 1)) % r
    if im.opset >= 13 or axis == r - 1:
        return im.emit("softmax", [x], {"axis": axis})
    flat = [int(np.prod(x.shape[:axis], dtype=np.int64)), int(np.prod(x.shape[axis:], dtype=np.int64))]
    y = im.emit("softmax", [im.emit("reshape", [x], {"shape": flat})], {"axis": 1})
    return im.emit("reshape", [y], {"shape": list(x.shape)})


def _pool_attrs(a: dict, x: Value) -> dict[str, Any]:
    _need_nchw(x, "pooling")
    if "kernel_shape" not in a:
        raise ShapeError("the kernel_shape attribute is missing; give the 2-D window size")
    k, stride, dil = _hw(a, "kernel_shape"), _hw(a, "strides"), _hw(a, "dilations")
    return {"kernel": k, "stride": stride, "padding": _pads(a, x.shape[2:], k, stride, dil),
            "dilation": dil, "ceil_mode": bool(a.get("ceil_mode", 0))}


def _maxpool(im, node, a):
    if a.get("storage_order", 0) != 0:
        raise UnsupportedOpError("storage_order=1 (column-major indices) is not supported")
    x = im.value(node.input[0])
    return [im.emit("maxpool2d", [x], _pool_attrs(a, x))]  # the Indices output is not computed


def _avgpool(im, node, a):
    x = im.value(node.input[0])
    attrs = _pool_attrs(a, x)
    if attrs.pop("dilation") != [1, 1]:
        raise UnsupportedOpError("AveragePool with dilations is not supported")
    if attrs["ceil_mode"]:
        if pool_out_hw(x.shape, attrs) != pool_out_hw(x.shape, {**attrs, "ceil_mode": False}):
            raise UnsupportedOpError("AveragePool ceil_mode=1 that changes the output size is "
                                     "not supported; pad the input explicitly")
        attrs["ceil_mode"] = False
    attrs["count_include_pad"] = bool(a.get("count_include_pad", 0))
    return im.emit("avgpool2d", [x], attrs)


def _global_avgpool(im, node, a):
    x = im.value(node.input[0])
    _need_nchw(x, "global average pooling")
    return im.emit("global_avgpool", [x])


def _reduce_mean(im, node, a):
    x = im.value(node.input[0])
    im.optional_const(node, 1, "axes")  # opset 18+: the axes input must be constant
    axes = reduce_axes(node, im.consts)
    if axes is None and a.get("noop_with_empty_axes", 0):
        return x
    r = x.type.rank
    axes = sorted(ax % r for ax in (range(r) if axes is None else axes))
    keep = bool(a.get("keepdims", 1))
    if r == 4 and keep and axes == [2, 3]:
        return im.emit("global_avgpool", [x])
    return im.emit("reduce_mean", [x], {"axes": axes, "keepdims": keep})


def _add(im, node, a):
    split = im.view.split_const(node, "Add")
    if split is None:
        return im.emit("add", [im.value(n) for n in node.input])
    x, c = im.value(split[0]), im.value(split[1])
    if split[1] in im.params and c.type.rank == 1 and x.shape[-1:] == c.shape:
        return im.emit("bias_add", [x, c], {"axis": -1})
    return im.emit("add", [x, c])


def _sub(im, node, a):
    lhs, rhs = node.input
    c = im.const(rhs)
    if c is not None and rhs not in im.params:
        neg = im.g.add_constant(_ir_array(-c, rhs), f"{rhs}.neg")
        return im.emit("add", [im.value(lhs), neg])
    return im.emit("add", [im.value(lhs), im.emit("scale", [im.value(rhs)], {"factor": -1.0})])


def _mul(im, node, a):
    split = im.view.split_const(node, "Mul")
    if split is None:
        return im.emit("mul", [im.value(n) for n in node.input])
    x, s = im.value(split[0]), im.view.scalar(split[1])
    if s is not None and split[1] not in im.params and im.consts[split[1]].ndim <= x.type.rank:
        return im.emit("scale", [x], {"factor": s})
    return im.emit("mul", [x, im.value(split[1])])


def _div(im, node, a):
    x = im.value(node.input[0])
    c = im.need_const(node, 1, "divisor")
    if c.size == 1 and c.ndim <= x.type.rank:
        return im.emit("scale", [x], {"factor": 1.0 / float(c.reshape(-1)[0])})
    recip = im.g.add_constant(_ir_array(1.0 / c, node.input[1]), f"{node.input[1]}.reciprocal")
    return im.emit("mul", [x, recip])


def _sum(im, node, a):
    xs = [im.value(n) for n in node.input]
    if len(xs) == 1:
        return xs[0]
    if all(v.shape == xs[0].shape for v in xs):
        return im.emit("sum", xs)
    out = xs[0]
    for v in xs[1:]:
        out = im.emit("add", [out, v])
    return out


def _reshape_to(im: _Importer, x: Value, shape: Sequence[int]) -> Value:
    return im.emit("reshape", [x], {"shape": [int(s) for s in shape]})


def _flatten(im, node, a):
    x = im.value(node.input[0])
    r = x.type.rank
    axis = int(a.get("axis", 1))
    axis = axis + r if axis < 0 else axis
    return _reshape_to(im, x, [int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:]))])


def _reshape(im, node, a):
    x = im.value(node.input[0])
    spec = [int(s) for s in im.need_const(node, 1, "shape").reshape(-1)]
    copy_zero = not a.get("allowzero", 0)
    shape = [x.shape[i] if s == 0 and copy_zero else s for i, s in enumerate(spec)]
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        if known == 0 or x.type.numel % known:
            raise ShapeError(f"cannot reshape {x.shape} to {spec}")
        shape[shape.index(-1)] = x.type.numel // known
    return _reshape_to(im, x, shape)


def _transpose(im, node, a):
    x = im.value(node.input[0])
    perm = a.get("perm", range(x.type.rank - 1, -1, -1))
    return im.emit("transpose", [x], {"perm": [int(p) for p in perm]})


def _concat(im, node, a):
    xs = [im.value(n) for n in node.input]
    return xs[0] if len(xs) == 1 else im.emit("concat", xs, {"axis": int(a["axis"]) % xs[0].type.rank})


def _axes_input(im: _Importer, node: onnx.NodeProto, a: dict) -> list[int] | None:
    """Unsqueeze/Squeeze axes: an attribute before opset 13, an optional constant input after."""
    if im.opset < 13:
        return [int(v) for v in a["axes"]] if "axes" in a else None
    axes = im.optional_const(node, 1, "axes")
    return None if axes is None else [int(v) for v in axes.reshape(-1)]


def _unsqueeze(im, node, a):
    x = im.value(node.input[0])
    axes = _axes_input(im, node, a) or []
    rank = x.type.rank + len(axes)
    shape = list(x.shape)
    for ax in sorted(ax % rank for ax in axes):
        shape.insert(ax, 1)
    return _reshape_to(im, x, shape)


def _squeeze(im, node, a):
    x = im.value(node.input[0])
    r = x.type.rank
    axes = _axes_input(im, node, a)
    drop = {i for i, s in enumerate(x.shape) if s == 1} if axes is None else {ax % r for ax in axes}
    wide = [i for i in drop if x.shape[i] != 1]
    if wide:
        raise ShapeError(f"cannot squeeze axes {wide} of shape {x.shape}: they are not of size 1")
    return _reshape_to(im, x, [s for i, s in enumerate(x.shape) if i not in drop])


def _slice_axis(im: _Importer, x: Value, axis: int, start: int, end: int) -> Value:
    return x if (start, end) == (0, x.shape[axis]) else im.emit(
        "slice", [x], {"axis": axis, "start": start, "end": end})


def _gather(im, node, a):
    x = im.value(node.input[0])
    idx = im.need_const(node, 1, "indices")
    axis = int(a.get("axis", 0)) % x.type.rank
    n = x.shape[axis]
    flat = [int(i) % n for i in idx.reshape(-1)]
    if idx.ndim == 0:
        part = _slice_axis(im, x, axis, flat[0], flat[0] + 1)
        return _reshape_to(im, part, [s for i, s in enumerate(x.shape) if i != axis])
    if idx.ndim == 1 and flat and flat == list(range(flat[0], flat[0] + len(flat))):
        return _slice_axis(im, x, axis, flat[0], flat[0] + len(flat))
    raise UnsupportedOpError(f"Gather of a computed tensor with indices {idx.tolist()}: only a "
                             "scalar index or a contiguous range is supported")


def _slice(im, node, a):
    x = im.value(node.input[0])
    if im.opset < 10:
        starts, ends = a["starts"], a["ends"]
        axes, steps = a.get("axes", range(len(starts))), [1] * len(starts)
    else:
        starts = im.need_const(node, 1, "starts").tolist()
        ends = im.need_const(node, 2, "ends").tolist()
        axes, steps = im.optional_const(node, 3, "axes"), im.optional_const(node, 4, "steps")
        axes = range(len(starts)) if axes is None else axes.tolist()
        steps = [1] * len(starts) if steps is None else steps.tolist()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step != 1:
            raise UnsupportedOpError(f"Slice with step {step} is not supported")
        axis = int(axis) % x.type.rank
        n = x.shape[axis]
        lo, hi = (min(max(v + n if v < 0 else v, 0), n) for v in (int(start), int(end)))
        x = _slice_axis(im, x, axis, lo, max(lo, hi))
    return x


def _split(im, node, a):
    x = im.value(node.input[0])
    axis = int(a.get("axis", 0)) % x.type.rank
    n, k = x.shape[axis], len(node.output)
    if im.opset < 13:
        sizes = a.get("split")
    else:
        given = im.optional_const(node, 1, "split")
        sizes = None if given is None else given.tolist()
    if sizes is None:
        chunk = -(-n // k)
        sizes = [chunk] * (k - 1) + [n - chunk * (k - 1)]
    bounds = np.cumsum([0, *sizes]).tolist()
    if bounds[-1] != n:
        raise ShapeError(f"Split sizes {list(sizes)} do not add up to {n} (axis {axis} of {x.shape})")
    return [_slice_axis(im, x, axis, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _dropout(im, node, a):
    if im.opset < 12:
        ratio = a.get("ratio", 0.5)
    else:
        given = im.optional_const(node, 1, "ratio")
        ratio = 0.5 if given is None else given
    return [im.emit("dropout", [im.value(node.input[0])], {"p": _f32(float(ratio))})]  # no mask


def _cast(im, node, a):
    x = im.value(node.input[0])
    to = ONNX_DTYPES.get(int(a["to"]))
    if to != x.dtype:
        raise UnsupportedOpError(f"Cast of a computed {x.dtype} tensor to "
                                 f"{onnx.TensorProto.DataType.Name(int(a['to']))} is not supported")
    return x


F32_MAX = float(np.finfo(np.float32).max)


def _clip(im, node, a):
    """Clip (min / max: attributes before opset 11, constant inputs from 11): relu when only
    min = 0 is given, else hardtanh (a missing bound is the fp32 limit)."""
    x = im.value(node.input[0])
    if im.opset < 11:
        lo, hi = a.get("min"), a.get("max")
    else:
        bounds = [im.optional_const(node, i, what) for i, what in ((1, "min"), (2, "max"))]
        lo, hi = (None if b is None else float(np.asarray(b).reshape(-1)[0]) for b in bounds)
    if lo == 0.0 and hi is None:
        return im.emit("relu", [x])
    return im.emit("hardtanh", [x], {"min_val": -F32_MAX if lo is None else float(lo),
                                     "max_val": F32_MAX if hi is None else float(hi)})


def _hard_sigmoid(im, node, a):
    """HardSigmoid = clamp(alpha * x + beta, 0, 1) (torch's hardswish before opset 14)."""
    x = im.emit("scale", [im.value(node.input[0])], {"factor": _f32(a.get("alpha", 0.2))})
    beta = im.g.add_constant(np.asarray(_f32(a.get("beta", 0.5)), np.float32), f"{im.layer}.beta")
    return im.emit("hardtanh", [im.emit("add", [x, beta])], {"min_val": 0.0, "max_val": 1.0})


def _unary(op: str) -> Handler:
    return lambda im, node, a: im.emit(op, [im.value(node.input[0])])


def _min_max(op: str) -> Handler:
    """Min / Max of two inputs of one shape (the variadic, broadcasting forms are refused)."""
    def handler(im, node, a):
        xs = [im.value(i) for i in node.input]
        if len(xs) != 2 or xs[0].shape != xs[1].shape:
            raise UnsupportedOpError(f"{node.op_type} of {len(xs)} inputs of shapes "
                                     f"{[x.shape for x in xs]}: satc takes two of one shape "
                                     f"(expand or chain them first)")
        return im.emit(op, xs)
    return handler


# ONNX's default alpha per op of the ELU family (Selu's gamma: 1.05070102214813232421875).
ELU_ALPHA = {"Elu": 1.0, "Selu": 1.67326319217681884765625, "Celu": 1.0}


def _elu_family(im, node, a):
    """Elu (alpha), Selu (alpha, gamma: the scale) and Celu (alpha: elu(x, alpha, 1, 1 / alpha))
    as elu."""
    alpha, scale, input_scale = _f32(a.get("alpha", ELU_ALPHA[node.op_type])), 1.0, 1.0
    if node.op_type == "Selu":
        scale = _f32(a.get("gamma", 1.05070102214813232421875))
    elif node.op_type == "Celu":
        if alpha == 0:
            raise UnsupportedOpError(f"Celu node {node.name!r} with alpha=0 (it divides by alpha)")
        input_scale = 1.0 / alpha
    return im.emit("elu", [im.value(node.input[0])],
                   {"alpha": alpha, "scale": scale, "input_scale": input_scale})


def _softplus(im, node, a):
    """Softplus = log(exp(x) + 1): beta 1, no threshold (the fp32 limit)."""
    return im.emit("softplus", [im.value(node.input[0])], {"beta": 1.0, "threshold": F32_MAX})


def _lrn(im, node, a):
    """LRN across channels: the window [c - floor((size-1)/2), c + ceil((size-1)/2)]."""
    x = im.value(node.input[0])
    _need_nchw(x, "LRN")
    size = int(a["size"])
    return im.em.local_response_norm(x, size, _f32(a.get("alpha", 1e-4)), _f32(a.get("beta", 0.75)),
                                     _f32(a.get("bias", 1.0)), (size - 1) // 2, im.layer)


def _pow(im, node, a):
    """Pow outside the GELU / LayerNorm patterns: ``pow`` by a constant scalar exponent, else
    ``exp(y * log(x))`` (ONNX's value for a positive base)."""
    x = im.value(node.input[0])
    p = im.const(node.input[1])
    if p is not None and p.size == 1 and node.input[1] not in im.params:
        e = float(p.reshape(-1)[0])
        return x if e == 1.0 else im.emit("pow", [x], {"exponent": e})
    return im.em.tensor_power(x, im.value(node.input[1]), im.layer)


def _gelu(im, node, a):
    return im.emit("gelu", [im.value(node.input[0])], {"approximate": a.get("approximate", "none")})


ONNX_HANDLERS: dict[str, Handler] = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul,
    "BatchNormalization": _batchnorm, "LayerNormalization": _layernorm,
    "Relu": lambda im, node, a: im.emit("relu", [im.value(node.input[0])]),
    "Neg": lambda im, node, a: im.emit("scale", [im.value(node.input[0])], {"factor": -1.0}),
    "Gelu": _gelu, "Softmax": _softmax, "LRN": _lrn, "Pow": _pow,
    "Exp": _unary("exp"), "Log": _unary("log"), "Abs": _unary("abs"), "Sign": _unary("sign"),
    "Min": _min_max("minimum"), "Max": _min_max("maximum"),
    "Sigmoid": _unary("sigmoid"), "Tanh": _unary("tanh"), "HardSwish": _unary("hardswish"),
    "Clip": _clip, "HardSigmoid": _hard_sigmoid,
    "LeakyRelu": lambda im, node, a: im.emit("leaky_relu", [im.value(node.input[0])], {
        "negative_slope": _f32(a.get("alpha", 0.01))}),
    "Elu": _elu_family, "Selu": _elu_family, "Celu": _elu_family, "Softplus": _softplus,
    "MaxPool": _maxpool, "AveragePool": _avgpool, "GlobalAveragePool": _global_avgpool,
    "ReduceMean": _reduce_mean,
    "Add": _add, "Sub": _sub, "Mul": _mul, "Div": _div, "Sum": _sum,
    "Flatten": _flatten, "Reshape": _reshape, "Transpose": _transpose, "Concat": _concat,
    "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Gather": _gather, "Slice": _slice,
    "Split": _split, "Dropout": _dropout, "Cast": _cast,
    "Identity": lambda im, node, a: im.value(node.input[0]),
}


def _emit_layernorm(im: _Importer, f: Fusion) -> Value:
    x = im.value(f.x)
    r = x.type.rank
    axes = sorted(ax % r for ax in f.attrs["axes"])
    if axes != list(range(r - len(axes), r)):
        raise UnsupportedOpError(f"a LayerNorm pattern over axes {f.attrs['axes']} of a rank-{r} "
                                 "input: only trailing axes are supported")
    gamma, beta = (im.value(p) if p else None for p in f.params)
    return im.em.layernorm(x, gamma, beta, len(axes), _f32(f.attrs["eps"]), im.layer)


FUSION_EMITTERS: dict[str, Callable[[_Importer, Fusion], Value]] = {
    "gelu": lambda im, f: im.emit("gelu", [im.value(f.x)], f.attrs),
    "layernorm": _emit_layernorm,
}


def import_onnx(model: str | Path | onnx.ModelProto,
                input_shapes: Mapping[str, Sequence[int]] | None = None,
                name: str | None = None, bn_training: bool = True,
                input_names: Sequence[str] | None = None) -> Graph:
    """Import an ONNX model (a path or a ``ModelProto``) as a satc forward graph (stage FF).

    ``input_shapes`` binds graph inputs (by ONNX name or satc input name) to
    static shapes; it is required for inputs with symbolic dims and must
    agree with the static ones. A single graph input is named ``x`` unless
    ``input_names`` says otherwise; outputs are ``output`` (one) or
    ``output0``, ``output1``, ... ``bn_training`` selects training-mode
    BatchNormalization (batch statistics, running-stat updates; the default)
    or inference-mode. Raises FrontendError for unreadable or invalid models
    and unbound dims, UnsupportedOpError (listing every offending node) for
    ops or opsets satc does not take, ShapeError for shapes that do not fit.
    """
    proto, where, stem, consts = _load(model)
    opset = _default_opset(proto, where)
    im = _Importer(proto, consts, opset, where, name or stem or proto.graph.name or "onnx_model", bn_training)
    im.bind_inputs(input_shapes, input_names)
    im.analyse()
    im.translate()
    im.set_outputs()
    im.g.state_updates.update(im.em.state_updates)
    return verify(im.g)
