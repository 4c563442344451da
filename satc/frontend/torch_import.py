"""PyTorch frontend: ``torch.export`` (ATen training IR) to a satc forward graph.

The module is exported in train mode (BN uses batch statistics and updates
its running stats); its parameters become graph params and its buffers
graph buffers, keyed by their ``state_dict`` names (``num_batches_tracked``
is dropped: satc's BN uses a fixed momentum). ATen ops are translated by
the table ``ATEN_HANDLERS``. An op missing from it is

* folded at import time when it depends only on constants and shapes
  (``arange``, comparisons that build masks, dtype casts, ``ones`` /
  ``zeros`` / ``*_like``): torch evaluates it and satc keeps the tensor;
* otherwise replaced by its decomposition from torch's own core-ATen table
  (``torch.export.default_decompositions()`` less the ops satc translates
  itself), traced with ``make_fx`` and imported in its place, recursively;
* otherwise reported: every such op at once, in one ``UnsupportedOpError``.

Only the nodes satc does not translate are decomposed, so the graphs of
models satc already covers do not change.
"""

from __future__ import annotations

import functools
import logging
import math
import operator
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from satc.errors import FrontendError, UnsupportedOpError
from satc.ir.graph import Graph, Value
from satc.ir.types import TensorType
from satc.ir.verifier import verify
from satc.frontend.emitter import GraphEmitter

aten = torch.ops.aten
Handler = Callable[["_Importer", Sequence[Any], dict], Any]


def _repeat(v: Any, n: int) -> list[int]:
    """An int, or a one-element list, as ``n`` copies; a longer list as it is."""
    v = [v] if isinstance(v, int) else list(v)
    return v * n if len(v) == 1 else v


def _pair(v: Any) -> list[int]:
    return _repeat(v, 2)


class _Importer:
    """Walks an exported FX graph, emitting IR through a GraphEmitter."""

    def __init__(self, ep: torch.export.ExportedProgram, name: str):
        self.ep = ep
        self.em = GraphEmitter(Graph(name))
        self.layer = ""
        self.unsupported: list[tuple[str, str]] = []              # (op, 'op (node, layer)')
        self.folded: dict[int, tuple[torch.Tensor, Value]] = {}   # id -> (tensor kept alive, const)

    # -------------------------------------------------------------- helpers
    @property
    def g(self) -> Graph:
        return self.em.graph

    def emit(self, op: str, inputs: Sequence[Value], attrs: dict | None = None) -> Value:
        return self.g.add1(op, inputs, attrs, layer=self.layer)

    # -------------------------------------------------------------- walking FX graphs
    def run(self, graph: torch.fx.Graph, env: dict[str, Any], attrs: Any = None) -> Any:
        """Import the call_function nodes of ``graph`` with ``env`` (placeholders bound by the
        caller); returns the mapped output. ``attrs``: the module of get_attr nodes."""
        for node in graph.nodes:
            if node.op == "get_attr":
                env[node.name] = getattr(attrs, node.target)
            elif node.op == "call_function":
                env[node.name] = self.call(node, env)
            elif node.op == "output":
                return torch.fx.node.map_arg(node.args[0], lambda n: env[n.name])
        return None

    def call(self, node: torch.fx.Node, env: dict[str, Any]) -> Any:
        """The value of one call_function node: translated, folded, decomposed or _MISSING."""
        if node.target is operator.getitem:
            src = env[node.args[0].name]
            return _MISSING if src is _MISSING else src[node.args[1]]
        a = torch.fx.node.map_arg(node.args, lambda n: env[n.name])
        kw = torch.fx.node.map_arg(node.kwargs, lambda n: env[n.name])
        if _contains(a, kw, lambda v: v is _MISSING):
            if node.target not in ATEN_HANDLERS and _decomposition(node.target) is None:
                self.unsupported.append((str(node.target), self.describe(node)))
            return _MISSING
        if not _contains(a, kw, lambda v: isinstance(v, Value)) or node.target in SHAPE_ONLY:
            return _fold(node.target, a, kw)
        if node.target in ATEN_HANDLERS:
            self.layer = _fx_layer(node) or self.layer
            if node.target not in RAW_ARGS:
                a, kw = self.lift(a), self.lift(kw)
            try:
                return ATEN_HANDLERS[node.target](self, a, kw)
            except UnsupportedOpError as e:
                raise UnsupportedOpError(f"node {node.name!r} ({node.target}, layer "
                                         f"{self.layer or '-'}): {e}") from None
        sub = _decompose(node.target, a, kw)
        if sub is None:
            self.unsupported.append((str(node.target), self.describe(node)))
            return _MISSING
        layer = self.layer
        self.layer = _fx_layer(node) or layer
        flat = [v for v in _leaves((a, kw)) if isinstance(v, (Value, torch.Tensor))]  # as traced
        sub_env = {p.name: v for p, v in zip(sub.graph.find_nodes(op="placeholder"), flat)}
        out = self.run(sub.graph, sub_env, sub)
        self.layer = layer
        return out

    def lift(self, args: Any) -> Any:
        """Folded tensors in a handler's arguments as graph constants (0-d ones as scalars)."""
        def one(v: Any) -> Any:
            if not isinstance(v, torch.Tensor):
                return v
            if v.ndim == 0:
                return v.item()
            if id(v) not in self.folded:
                arr = v.detach().cpu().numpy()
                self.folded[id(v)] = (v, self.g.add_constant(
                    arr.astype(np.float32) if v.is_floating_point() else arr, "folded"))
            return self.folded[id(v)][1]
        return torch.utils._pytree.tree_map(one, args)

    def describe(self, node: torch.fx.Node) -> str:
        """'target (node 'name', layer L)' for the unsupported-op error."""
        return f"{node.target} (node {node.name!r}, layer {_fx_layer(node) or self.layer or '-'})"


_MISSING = object()   # the value of an unsupported node (import goes on to list them all)
# Ops whose result depends on their tensor inputs' shapes and dtypes only: always folded.
SHAPE_ONLY = {aten.zeros_like.default, aten.ones_like.default, aten.full_like.default,
              aten.empty_like.default, aten.new_zeros.default, aten.new_ones.default,
              aten.new_full.default, aten.new_empty.default, aten.sym_size.int}


def _leaves(tree: Any) -> list[Any]:
    return torch.utils._pytree.tree_leaves(tree)


def _contains(a: Any, kw: Any, pred: Callable[[Any], bool]) -> bool:
    return any(pred(v) for v in _leaves((a, kw)))


def _stand_in(v: Any) -> Any:
    """A zero tensor of a Value's type (shape-only ops and decomposition tracing read no data)."""
    if isinstance(v, Value):
        return torch.zeros(v.shape, dtype=getattr(torch, v.dtype))
    return v


def _fold(target: Any, a: Any, kw: Any) -> Any:
    """Evaluate a node whose result depends on constants and shapes only."""
    a, kw = torch.utils._pytree.tree_map(_stand_in, (a, kw))
    with torch.no_grad():
        return target(*a, **kw)


@functools.cache
def _decomp_table() -> dict:
    """torch's core-ATen decomposition table, less the ops satc translates itself."""
    table = torch.export.default_decompositions().materialize()
    for op in ATEN_HANDLERS:
        table.pop(op, None)
    return table


def _decomposition(target: Any) -> Callable | None:
    return _decomp_table().get(target)


def _decompose(target: Any, a: Any, kw: Any) -> torch.fx.GraphModule | None:
    """``target(*a, **kw)`` traced through torch's decompositions (placeholders: the tensor
    leaves of ``(a, kw)`` in order); None when torch has no decomposition for it."""
    if _decomposition(target) is None:
        return None
    leaves, spec = torch.utils._pytree.tree_flatten((a, kw))
    pos = [i for i, v in enumerate(leaves) if isinstance(v, (Value, torch.Tensor))]

    def fn(*tensors):
        vals = list(leaves)
        for i, t in zip(pos, tensors):
            vals[i] = t
        args, kwargs = torch.utils._pytree.tree_unflatten(vals, spec)
        return target(*args, **kwargs)

    with torch.no_grad():
        gm = make_fx(fn, decomposition_table=_decomp_table())(*[_stand_in(leaves[i]) for i in pos])
    if any(n.target is target for n in gm.graph.nodes):
        return None       # the decomposition defers to the op itself
    return gm


def _fx_layer(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


# ------------------------------------------------------------------ handlers
def _conv2d(im, a, kw):
    x, w = a[0], a[1]
    b = a[2] if len(a) > 2 else kw.get("bias")
    stride = _pair(a[3] if len(a) > 3 else kw.get("stride", 1))
    pad = a[4] if len(a) > 4 else kw.get("padding", 0)
    dil = _pair(a[5] if len(a) > 5 else kw.get("dilation", 1))
    groups = a[6] if len(a) > 6 else kw.get("groups", 1)
    padding = (_string_padding(pad, list(w.shape[2:]), stride, dil) if isinstance(pad, str)
               else _pair(pad) * 2)
    y = im.emit("conv2d", [x, w], {"stride": stride, "padding": padding,
                                   "dilation": dil, "groups": groups})
    return im.emit("bias_add", [y, b], {"axis": 1}) if b is not None else y


def _string_padding(mode: str, kernel: list[int], stride: list[int], dil: list[int]) -> list[int]:
    """[top, left, bottom, right] of torch's ``padding='valid'`` / ``'same'`` (stride 1; an odd
    total pads the extra row / column at the bottom / right, as torch does)."""
    if mode == "valid":
        return [0, 0, 0, 0]
    if mode != "same":
        raise UnsupportedOpError(f"conv2d padding={mode!r}; torch takes 'same' or 'valid'")
    if stride != [1, 1]:
        raise UnsupportedOpError(f"conv2d padding='same' with stride {stride}; torch requires "
                                 "stride 1")
    total = [d * (k - 1) for k, d in zip(kernel, dil)]
    lo = [t // 2 for t in total]
    return lo + [t - l for t, l in zip(total, lo)]


def _hardtanh(im, a, kw):
    lo = a[1] if len(a) > 1 else kw.get("min_val", -1.0)
    hi = a[2] if len(a) > 2 else kw.get("max_val", 1.0)
    return im.emit("hardtanh", [a[0]], {"min_val": float(lo), "max_val": float(hi)})


def _leaky_relu(im, a, kw):
    slope = a[1] if len(a) > 1 else kw.get("negative_slope", 0.01)
    return im.emit("leaky_relu", [a[0]], {"negative_slope": float(slope)})


def _elu(im, a, kw):
    """aten.elu(x, alpha, scale, input_scale) (torch's defaults 1, 1, 1)."""
    names, vals = ("alpha", "scale", "input_scale"), list(a[1:])
    attrs = {k: float(vals[i] if i < len(vals) else kw.get(k, 1.0)) for i, k in enumerate(names)}
    return im.emit("elu", [a[0]], attrs)


# torch's SELU constants (at::selu is at::elu(x, SELU_ALPHA, SELU_SCALE)).
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def _selu(im, a, kw):
    return _elu(im, [a[0], SELU_ALPHA, SELU_SCALE, 1.0], {})


def _celu(im, a, kw):
    """aten.celu(x, alpha) = elu(x, alpha, 1, 1 / alpha), as torch computes it."""
    alpha = float(a[1] if len(a) > 1 else kw.get("alpha", 1.0))     # torch refuses alpha = 0
    return _elu(im, [a[0], alpha, 1.0, 1.0 / alpha], {})


def _softplus(im, a, kw):
    beta = a[1] if len(a) > 1 else kw.get("beta", 1.0)
    threshold = a[2] if len(a) > 2 else kw.get("threshold", 20.0)
    return im.emit("softplus", [a[0]], {"beta": float(beta), "threshold": float(threshold)})


def _log_sigmoid(im, a, kw):
    """aten.log_sigmoid(x) = -softplus(-x), softplus with torch's default threshold 20 (past
    it softplus(z) = z: log1p(exp(-z)) is below fp32's resolution of z)."""
    neg = im.emit("scale", [a[0]], {"factor": -1.0})
    sp = im.emit("softplus", [neg], {"beta": 1.0, "threshold": 20.0})
    return im.emit("scale", [sp], {"factor": -1.0})


F32_MAX = float(np.finfo(np.float32).max)


def _clamp(im, a, kw):
    lo = a[1] if len(a) > 1 else kw.get("min")
    hi = a[2] if len(a) > 2 else kw.get("max")
    if isinstance(lo, Value) or isinstance(hi, Value):
        raise UnsupportedOpError("clamp with tensor bounds")
    if lo is None and hi is None:
        return a[0]
    if lo == 0 and hi is None:
        return im.emit("relu", [a[0]])
    return _hardtanh(im, [a[0], -F32_MAX if lo is None else lo, F32_MAX if hi is None else hi], {})


def _split_sizes(im, a, kw, sizes: list[int]) -> list[Value]:
    x, dim = a[0], (a[2] if len(a) > 2 else kw.get("dim", 0)) % a[0].type.rank
    out, start = [], 0
    for n in sizes:
        out.append(_slice(im, [x, dim, start, start + n], {}))
        start += n
    return out


def _split(im, a, kw):
    n, size = a[0].shape[(a[2] if len(a) > 2 else kw.get("dim", 0)) % a[0].type.rank], a[1]
    return _split_sizes(im, a, kw, [min(size, n - s) for s in range(0, n, size)])


def _chunk(im, a, kw):
    n = a[0].shape[(a[2] if len(a) > 2 else kw.get("dim", 0)) % a[0].type.rank]
    size = -(-n // a[1])
    return _split_sizes(im, a, kw, [min(size, n - s) for s in range(0, n, size)])


def _unary(op: str) -> Handler:
    return lambda im, a, kw: im.emit(op, [a[0]])


def _minmax(op: str) -> Handler:
    def handler(im, a, kw):
        x, y = a[0], a[1]
        if not (isinstance(x, Value) and isinstance(y, Value)) or x.shape != y.shape:
            shapes = [getattr(v, "shape", type(v).__name__) for v in (x, y)]
            raise UnsupportedOpError(f"{op} of {shapes[0]} and {shapes[1]}: satc takes two "
                                     f"tensors of one shape (expand the smaller one first, or "
                                     f"use clamp for a constant bound)")
        return im.emit(op, [x, y])
    return handler


def _convolution(im, a, kw):
    if a[6]:
        raise UnsupportedOpError("transposed convolution is not supported")
    return _conv2d(im, [a[0], a[1], a[2], a[3], a[4], a[5], a[8]], {})


def _linear(im, a, kw):
    return im.em.linear(a[0], a[1], a[2] if len(a) > 2 else kw.get("bias"), im.layer)


def _batch_norm(im, a, kw):
    x, w, b, rm, rv, training, momentum, eps = a[:8]
    if rm is None or rv is None:
        raise UnsupportedOpError("batch_norm without running stats (track_running_stats=False)")
    if momentum is None:
        raise UnsupportedOpError("batch_norm with momentum=None (cumulative average)")
    return im.em.batchnorm(x, w, b, rm, rv, bool(training), float(momentum), float(eps), im.layer)


def _layer_norm(im, a, kw):
    x, shape = a[0], list(a[1])
    w = a[2] if len(a) > 2 else None
    b = a[3] if len(a) > 3 else None
    eps = a[4] if len(a) > 4 else 1e-5
    return im.em.layernorm(x, w, b, len(shape), float(eps), im.layer)


def _pool_args(a):
    k = _pair(a[1])
    s = a[2] if len(a) > 2 and a[2] else k
    s = _pair(s)
    ph, pw = _pair(a[3] if len(a) > 3 else 0)
    return k, s, [ph, pw, ph, pw]


def _max_pool2d(im, a, kw):
    k, s, p = _pool_args(a)
    dil = _pair(a[4] if len(a) > 4 else 1)
    ceil = bool(a[5]) if len(a) > 5 else False
    return im.emit("maxpool2d", [a[0]], {"kernel": k, "stride": s, "padding": p,
                                         "dilation": dil, "ceil_mode": ceil})


def _avg_pool2d(im, a, kw):
    k, s, p = _pool_args(a)
    ceil = bool(a[4]) if len(a) > 4 else False
    include = bool(a[5]) if len(a) > 5 else True
    if len(a) > 6 and a[6] is not None:
        raise UnsupportedOpError("avg_pool2d divisor_override is not supported")
    return im.emit("avgpool2d", [a[0]], {"kernel": k, "stride": s, "padding": p,
                                         "ceil_mode": ceil, "count_include_pad": include})


def _avg_pool3d(im, a, kw):
    """A window mean along the depth axis only (kernel (kd, 1, 1), stride 1, no padding): the
    channel window of ``F.local_response_norm``, as slices, a sum and a scale."""
    x, k = a[0], _repeat(a[1], 3)
    s = _repeat(a[2], 3) if len(a) > 2 and a[2] not in (None, []) else k
    p = _repeat(a[3], 3) if len(a) > 3 else [0]
    if len(a) > 6 and a[6] is not None:
        raise UnsupportedOpError("avg_pool3d divisor_override is not supported")
    if k[1:] != [1, 1] or s != [1, 1, 1] or any(p):
        raise UnsupportedOpError(f"avg_pool3d with kernel {k}, stride {s}, padding {p}: only a "
                                 "depth window (kd, 1, 1) at stride 1 without padding (local "
                                 "response normalisation) is supported")
    return im.emit("scale", [im.em.window_sum(x, 2, k[0], im.layer)], {"factor": 1.0 / k[0]})


def _adaptive_avg_pool2d(im, a, kw):
    x, (oh, ow) = a[0], _pair(a[1])
    if (oh, ow) == (1, 1):
        return im.emit("global_avgpool", [x])
    h, w = x.shape[2], x.shape[3]
    if h % oh or w % ow:
        raise UnsupportedOpError(f"adaptive_avg_pool2d from {h}x{w} to {oh}x{ow} (not an even split)")
    k = [h // oh, w // ow]
    return im.emit("avgpool2d", [x], {"kernel": k, "stride": k, "padding": [0, 0, 0, 0]})


def _resolve_shape(numel: int, shape: Sequence[int]) -> list[int]:
    shape = [int(s) for s in shape]
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        shape[shape.index(-1)] = numel // max(known, 1)
    return shape


def _reshape(im, a, kw):
    return im.emit("reshape", [a[0]], {"shape": _resolve_shape(a[0].type.numel, a[1])})


def _flatten(im, a, kw):
    x = a[0]
    r = x.type.rank
    start = (a[1] if len(a) > 1 else 0) % max(r, 1)
    end = (a[2] if len(a) > 2 else -1) % max(r, 1)
    shape = list(x.shape[:start]) + [int(np.prod(x.shape[start:end + 1]))] + list(x.shape[end + 1:])
    return im.emit("reshape", [x], {"shape": shape})


def _unsqueeze(im, a, kw):
    x, d = a[0], a[1]
    shape = list(x.shape)
    shape.insert(d % (len(shape) + 1), 1)
    return im.emit("reshape", [x], {"shape": shape})


def _squeeze(im, a, kw):
    x = a[0]
    dims = a[1] if len(a) > 1 else [i for i, s in enumerate(x.shape) if s == 1]
    dims = {d % x.type.rank for d in ([dims] if isinstance(dims, int) else dims)}
    shape = [s for i, s in enumerate(x.shape) if not (i in dims and s == 1)]
    return im.emit("reshape", [x], {"shape": shape})


def _transpose(im, a, kw):
    x = a[0]
    r = x.type.rank
    perm = list(range(r))
    d0, d1 = a[1] % r, a[2] % r
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return im.emit("transpose", [x], {"perm": perm})


def _t(im, a, kw):
    return _transpose(im, [a[0], 0, 1], kw) if a[0].type.rank == 2 else a[0]


def _permute(im, a, kw):
    r = a[0].type.rank
    return im.emit("transpose", [a[0]], {"perm": [p % r for p in a[1]]})


def _cat(im, a, kw):
    """``cat``; like torch, 1-D empty inputs are skipped (an empty key / value cache that a
    decoder concatenates its first keys to)."""
    xs = [x for x in a[0] if tuple(x.shape) != (0,)]
    dim = a[1] if len(a) > 1 else kw.get("dim", 0)
    return xs[0] if len(xs) == 1 else im.emit("concat", xs, {"axis": dim % xs[0].type.rank})


def _add(im, a, kw):
    x, y = a[0], a[1]
    alpha = a[2] if len(a) > 2 else kw.get("alpha", 1)
    if alpha != 1:
        y = im.emit("scale", [y], {"factor": float(alpha)}) if isinstance(y, Value) else alpha * y
    if isinstance(y, Value) and isinstance(x, Value):
        return im.emit("add", [x, y])
    if not isinstance(x, Value):
        x, y = y, x
    c = im.g.add_constant(np.asarray(y, np.float32), "scalar")
    return im.emit("add", [x, c])


def _sub(im, a, kw):
    alpha = a[2] if len(a) > 2 else kw.get("alpha", 1)
    if not isinstance(a[0], Value):           # scalar - tensor: (-alpha) * y + scalar
        return _add(im, [im.emit("scale", [a[1]], {"factor": -float(alpha)}), a[0]], {})
    y = im.emit("scale", [a[1]], {"factor": -float(alpha)}) if isinstance(a[1], Value) else -float(alpha) * a[1]
    return _add(im, [a[0], y], {})


def _mul(im, a, kw):
    x, y = a[0], a[1]
    if not isinstance(x, Value):
        x, y = y, x
    if isinstance(y, Value):
        return im.emit("mul", [x, y])
    return im.emit("scale", [x], {"factor": float(y)})


def _div(im, a, kw):
    """``a / b``; a tensor divisor is ``a * pow(b, -1)`` (broadcasting as torch does)."""
    if kw.get("rounding_mode") is not None:
        raise UnsupportedOpError(f"div with rounding_mode={kw['rounding_mode']!r}")
    if not isinstance(a[1], Value):
        return im.emit("scale", [a[0]], {"factor": 1.0 / float(a[1])})
    inv = im.emit("pow", [a[1]], {"exponent": -1.0})
    return _mul(im, [a[0], inv], {})


def _pow(im, a, kw):
    """``x ** p``: ``pow`` for a constant exponent (1: x itself); a tensor exponent as
    ``exp(p * log(x))`` (torch's value for a positive base; a base <= 0 gives 0 / NaN, where
    torch's integral powers of negative bases do not); a constant base ``c ** p`` (c > 0) as
    ``exp(p * ln c)``."""
    x, p = a[0], a[1]
    if not isinstance(p, Value):
        return x if float(p) == 1.0 else im.emit("pow", [x], {"exponent": float(p)})
    if not isinstance(x, Value):
        if float(x) <= 0:
            raise UnsupportedOpError(f"pow of the constant base {float(x)} by a tensor; satc "
                                     "takes a positive base (it computes exp(p * ln base))")
        return im.emit("exp", [im.emit("scale", [p], {"factor": math.log(float(x))})])
    return im.em.tensor_power(x, p, im.layer)


def _var(im, a, kw, unbiased_arg: bool = False):
    """``var`` over ``dim`` (all axes when None): ``reduce_var`` dividing by n - correction
    (``var.dim`` passes ``unbiased`` where ``var.correction`` passes ``correction``)."""
    x = a[0]
    dims = a[1] if len(a) > 1 and a[1] is not None else kw.get("dim")
    dims = list(range(x.type.rank)) if dims is None else ([dims] if isinstance(dims, int)
                                                           else list(dims))
    if unbiased_arg:
        unbiased = a[2] if len(a) > 2 else kw.get("unbiased", True)
        correction, keep = int(bool(unbiased)), a[3] if len(a) > 3 else kw.get("keepdim", False)
    else:
        c = kw.get("correction")
        correction, keep = (1 if c is None else c), kw.get("keepdim", False)
    if float(correction) != int(correction):
        raise UnsupportedOpError(f"var with a fractional correction {correction}")
    return im.emit("reduce_var", [x], {"axes": [d % x.type.rank for d in dims],
                                       "correction": int(correction), "keepdims": bool(keep)})


def _var_mean(im, a, kw):
    """``var_mean.correction``: (reduce_var, reduce_mean) over the same axes."""
    var = _var(im, a, kw)
    return var, im.emit("reduce_mean", [a[0]], {"axes": var.producer.attrs["axes"],
                                                "keepdims": var.producer.attrs["keepdims"]})


def _to_dtype(im, a, kw):
    """A dtype cast of a graph value: the identity from float32 to float32 (LLaMA's
    ``x.float()`` / ``type_as``); any other conversion is refused."""
    x = a[0]
    dtype = kw.get("dtype", a[1] if len(a) > 1 and isinstance(a[1], torch.dtype) else None)
    if dtype not in (None, torch.float32) or x.dtype != "float32":
        raise UnsupportedOpError(f"cast of a {x.dtype} value to {dtype}; satc computes in float32 "
                                 "(cast constants and inputs before export)")
    return x


def _softmax(im, a, kw):
    return im.emit("softmax", [a[0]], {"axis": a[1] % a[0].type.rank})


def _matmul(im, a, kw):
    return im.emit("matmul", [a[0], a[1]])


def _addmm(im, a, kw):
    """``addmm(bias, x, w, beta, alpha)`` = beta * bias + alpha * (x @ w) for a 2-D ``x`` and a
    weight ``w`` of shape [in, out] (GPT-2's Conv1D): a matmul and a bias_add of the [out] row."""
    bias, x, w = a[0], a[1], a[2]
    beta, alpha = kw.get("beta", 1), kw.get("alpha", 1)
    if not isinstance(bias, Value) or bias.type.rank != 1:
        raise UnsupportedOpError(f"addmm with a {getattr(bias, 'shape', 'constant')} bias; satc "
                                 "takes a [out] bias row (write it as x @ w + b)")
    y = im.emit("matmul", [x, w])
    if alpha != 1:
        y = im.emit("scale", [y], {"factor": float(alpha)})
    if beta != 1:
        bias = im.emit("scale", [bias], {"factor": float(beta)})
    return im.emit("bias_add", [y, bias], {"axis": -1})


def _expand(im, a, kw):
    x, sizes = a[0], list(a[1])
    lead = len(sizes) - x.type.rank
    shape = [x.shape[i - lead] if s == -1 else int(s) for i, s in enumerate(sizes)]
    return x if tuple(shape) == x.shape else im.emit("broadcast_to", [x], {"shape": shape})


def _mean_dim(im, a, kw):
    x = a[0]
    dims = a[1] if a[1] is not None else list(range(x.type.rank))
    dims = [dims] if isinstance(dims, int) else list(dims)
    keep = bool(a[2]) if len(a) > 2 else False
    if x.type.rank == 4 and keep and sorted(d % 4 for d in dims) == [2, 3]:
        return im.emit("global_avgpool", [x])
    return im.emit("reduce_mean", [x], {"axes": [d % x.type.rank for d in dims], "keepdims": keep})


def _slice(im, a, kw):
    x = a[0]
    dim = (a[1] if len(a) > 1 else 0) % x.type.rank
    n = x.shape[dim]
    start = a[2] if len(a) > 2 and a[2] is not None else 0
    end = a[3] if len(a) > 3 and a[3] is not None else n
    step = a[4] if len(a) > 4 else 1
    if step != 1:
        raise UnsupportedOpError(f"slice with step {step}")
    start, end = max(0, start + n if start < 0 else start), min(n, end + n if end < 0 else end)
    if (start, end) == (0, n):
        return x
    return im.emit("slice", [x], {"axis": dim, "start": start, "end": end})


def _select(im, a, kw):
    x, dim, idx = a[0], a[1] % a[0].type.rank, a[2]
    idx = idx % x.shape[dim]
    s = im.emit("slice", [x], {"axis": dim, "start": idx, "end": idx + 1})
    return im.emit("reshape", [s], {"shape": [d for i, d in enumerate(x.shape) if i != dim]})


def _dropout(im, a, kw):
    return im.emit("dropout", [a[0]], {"p": float(a[1]) if len(a) > 1 else 0.5})


def _gelu(im, a, kw):
    approx = kw.get("approximate", a[1] if len(a) > 1 else "none")
    return im.emit("gelu", [a[0]], {"approximate": approx})


def _pad(im, a, kw):
    x, pads = a[0], list(a[1])
    mode = a[2] if len(a) > 2 else kw.get("mode", "constant")
    value = a[3] if len(a) > 3 else kw.get("value", None)
    if mode != "constant" or value not in (None, 0, 0.0):
        raise UnsupportedOpError(f"pad mode={mode!r} value={value!r}; only zero padding is supported")
    for i in range(0, len(pads), 2):  # torch lists (before, after) pairs from the last axis back
        axis = x.type.rank - 1 - i // 2
        if pads[i] or pads[i + 1]:
            if pads[i] < 0 or pads[i + 1] < 0:
                raise UnsupportedOpError("negative padding (cropping)")
            x = im.emit("pad", [x], {"axis": axis, "before": pads[i], "after": pads[i + 1]})
    return x


def _identity(im, a, kw):
    return a[0]


def _const(im, arr: np.ndarray, hint: str) -> Value:
    return im.g.add_constant(np.ascontiguousarray(arr, np.float32), hint)


def _select_const(im, cond: np.ndarray, x: Value, other: Any, where: str) -> Value:
    """``where(cond, x, other)`` for a constant ``cond`` and a graph value ``x``: ``x * cond +
    fill * (1 - cond)`` as mul / add (exact: one term is 0). An infinite fill (the -inf of an
    attention mask) is one additive mask ``x + where(cond, 0, fill)``."""
    cond = np.asarray(cond).astype(bool)
    if cond.all():
        return x
    if isinstance(other, Value):
        if other.name not in im.g.constants:
            keep = im.emit("mul", [x, _const(im, cond, "select_mask")])
            drop = im.emit("mul", [other, _const(im, ~cond, "select_mask")])
            return im.emit("add", [keep, drop])
        other = im.g.initializers[other.name]
    fill = np.asarray(other, np.float32)
    if fill.ndim and not np.all(fill == fill.flat[0]):
        raise UnsupportedOpError(f"{where} with a non-uniform constant fill tensor")
    fill = float(fill.flat[0]) if fill.ndim else float(fill)
    if not np.isinf(fill):
        x = im.emit("mul", [x, _const(im, cond, "select_mask")])
    return im.emit("add", [x, _const(im, np.where(cond, 0.0, fill), "select_fill")])


def _constant_array(im, v: Any, what: str) -> np.ndarray:
    """The data of a condition known at import time (a folded tensor or a graph constant)."""
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().numpy()
    if isinstance(v, Value) and v.name in im.g.constants:
        return np.asarray(im.g.initializers[v.name])
    raise UnsupportedOpError(f"{what} whose condition is computed from data (satc needs a mask "
                             "known at import time: build it from shapes, e.g. torch.tril(torch."
                             "ones(T, T)), or pass an additive float mask and add it)")


def _where(im, a, kw):
    cond, x, y = a[0], a[1], a[2]
    c = _constant_array(im, cond, "where")
    x, y = im.lift(x), im.lift(y)
    if isinstance(x, Value):
        return _select_const(im, c, x, y, "where")
    if isinstance(y, Value):
        return _select_const(im, ~c.astype(bool), y, x, "where")
    raise UnsupportedOpError("where without a tensor branch")


def _masked_fill(im, a, kw):
    c = _constant_array(im, a[1], "masked_fill")
    return _select_const(im, ~c.astype(bool), im.lift(a[0]), im.lift(a[2]), "masked_fill")


def _embedding(im, a, kw):
    w, ids = a[0], a[1]
    pad = a[2] if len(a) > 2 else kw.get("padding_idx", -1)
    if (a[3] if len(a) > 3 else kw.get("scale_grad_by_freq", False)):
        raise UnsupportedOpError("embedding with scale_grad_by_freq=True")
    return im.emit("embedding", [w, ids], {"padding_idx": int(pad)} if pad is not None and pad >= 0
                   else {})


def _smallest_broadcast(m: np.ndarray) -> np.ndarray:
    """``m`` cut to one slice along every axis it does not vary on, leading 1s dropped: the same
    values under broadcasting (a causal mask that a library expands over batch and heads is one
    [T, S] plane, which the SAT lowering broadcasts over the leading axes)."""
    for axis in range(m.ndim):
        first = np.take(m, [0], axis=axis)
        if m.shape[axis] > 1 and (m == first).all():
            m = first
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    return m


def _gather_rows(im, x: Value, axis: int, ids: Any) -> Value:
    """``x`` indexed along ``axis`` by int64 ``ids`` (torch's shape: x.shape[:axis] + ids.shape +
    x.shape[axis + 1:]) as an ``embedding`` of ``x`` viewed [x.shape[axis], rest]: a gather
    whose gradient is the scatter-add, and on SAT a one-hot GEMM (constant ids as a one-hot
    table, ids from an input as its one-hot rows)."""
    if not isinstance(ids, Value) or ids.dtype != "int64":
        raise UnsupportedOpError(f"indexing by {getattr(ids, 'dtype', type(ids).__name__)} "
                                 "indices; satc gathers by int64 indices only")
    if ids.name in im.g.constants:
        arr = np.asarray(im.g.initializers[ids.name])
        if arr.size and (arr.min() < 0 or arr.max() >= x.shape[axis]):
            raise UnsupportedOpError(f"index {arr.min()}..{arr.max()} into an axis of size "
                                     f"{x.shape[axis]} (negative or out of range)")
    r, n = x.type.rank, x.shape[axis]
    rest = [d for i, d in enumerate(x.shape) if i != axis]
    front = [axis] + [i for i in range(r) if i != axis]
    t = x if axis == 0 else im.emit("transpose", [x], {"perm": front})
    table = im.emit("reshape", [t], {"shape": [n, int(np.prod(rest))]})
    y = im.emit("embedding", [table, ids])
    y = im.emit("reshape", [y], {"shape": list(ids.shape) + rest})
    if axis == 0:
        return y
    k = len(ids.shape)                 # move the index dims from the front to ``axis``
    perm = list(range(k, k + axis)) + list(range(k)) + list(range(k + axis, k + r - 1))
    return im.emit("transpose", [y], {"perm": perm})


def _index(im, a, kw):
    """``x[..., ids, ...]`` (``aten.index.Tensor``) with one int64 index tensor: a gather."""
    x, idx = a[0], list(a[1])
    used = [i for i, v in enumerate(idx) if v is not None]
    if len(used) != 1:
        raise UnsupportedOpError(f"indexing with {len(used)} index tensors; satc gathers along "
                                 "one axis (index one axis at a time)")
    return _gather_rows(im, x, used[0], idx[used[0]])


def _index_select(im, a, kw):
    return _gather_rows(im, a[0], a[1] % a[0].type.rank, a[2])


def _sdpa(im, a, kw):
    """``scaled_dot_product_attention`` as torch's math backend computes it: ``softmax(q k^T *
    scale + mask) v`` with the causal or boolean mask an additive constant (0 / -inf)."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal")
    args = {**dict(zip(names, a)), **kw}
    q, k, v = (im.lift(args[n]) for n in names[:3])
    mask, causal = args.get("attn_mask"), bool(args.get("is_causal", False))
    p, scale = float(args.get("dropout_p", 0.0)), args.get("scale")
    if args.get("enable_gqa", False) or q.shape[:-2] != k.shape[:-2]:
        raise UnsupportedOpError(f"attention with query {q.shape} and key {k.shape} (grouped-query "
                                 "attention); repeat the key / value heads first")
    if causal and mask is not None:
        raise UnsupportedOpError("attention with both attn_mask and is_causal (torch refuses it)")
    t, s = q.shape[-2], k.shape[-2]
    scale = float(scale) if scale is not None else 1.0 / float(np.sqrt(q.shape[-1]))
    kt = _transpose(im, [k, -2, -1], {})
    scores = im.emit("matmul", [im.emit("scale", [q], {"factor": scale}), kt])
    if causal:
        mask = torch.ones(t, s, dtype=torch.bool).tril()
    if mask is not None:
        if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
            m = _smallest_broadcast(mask.cpu().numpy())
            if not np.broadcast_to(m, np.broadcast_shapes(m.shape, scores.shape)).any(-1).all():
                raise UnsupportedOpError("attention mask with a fully masked query row (torch "
                                         "returns zeros there, satc's softmax would not)")
            if not m.all():                   # an all-true mask (a library's default) adds 0
                scores = im.emit("add", [scores, _const(im, np.where(m, 0.0, -np.inf),
                                                        "attn_mask")])
        else:
            mask = im.lift(mask)
            if mask.dtype != "float32":
                raise UnsupportedOpError(f"attention mask of dtype {mask.dtype} computed from data; "
                                         "pass an additive float32 mask (0 keep, -inf drop)")
            scores = im.emit("add", [scores, mask])
    attn = im.emit("softmax", [scores], {"axis": scores.type.rank - 1})
    if p:
        attn = im.emit("dropout", [attn], {"p": p})
    return im.emit("matmul", [attn, v])


ATEN_HANDLERS: dict[Any, Handler] = {
    aten.conv2d.default: _conv2d, aten.convolution.default: _convolution,
    aten.linear.default: _linear,
    aten.batch_norm.default: _batch_norm, aten.layer_norm.default: _layer_norm,
    aten.relu.default: lambda im, a, kw: im.emit("relu", [a[0]]),
    aten.relu_.default: lambda im, a, kw: im.emit("relu", [a[0]]),
    aten.gelu.default: _gelu,
    aten.sigmoid.default: _unary("sigmoid"), aten.sigmoid_.default: _unary("sigmoid"),
    aten.tanh.default: _unary("tanh"), aten.tanh_.default: _unary("tanh"),
    aten.silu.default: _unary("silu"), aten.silu_.default: _unary("silu"),
    aten.hardswish.default: _unary("hardswish"), aten.hardswish_.default: _unary("hardswish"),
    aten.hardtanh.default: _hardtanh, aten.hardtanh_.default: _hardtanh,
    aten.relu6.default: lambda im, a, kw: _hardtanh(im, [a[0], 0.0, 6.0], {}),
    aten.leaky_relu.default: _leaky_relu, aten.leaky_relu_.default: _leaky_relu,
    aten.elu.default: _elu, aten.elu_.default: _elu,
    aten.selu.default: _selu, aten.selu_.default: _selu,
    aten.celu.default: _celu, aten.celu_.default: _celu,
    aten.softplus.default: _softplus, aten.log_sigmoid.default: _log_sigmoid,
    aten.conv2d.padding: _conv2d,
    aten.clamp.default: _clamp,
    aten.neg.default: lambda im, a, kw: im.emit("scale", [a[0]], {"factor": -1.0}),
    aten.split.Tensor: _split, aten.chunk.default: _chunk,
    aten.split_with_sizes.default: lambda im, a, kw: _split_sizes(im, a, kw, list(a[1])),
    aten.max_pool2d.default: _max_pool2d, aten.avg_pool2d.default: _avg_pool2d,
    aten.adaptive_avg_pool2d.default: _adaptive_avg_pool2d, aten.avg_pool3d.default: _avg_pool3d,
    aten.mean.dim: _mean_dim,
    aten.flatten.using_ints: _flatten, aten.view.default: _reshape,
    aten.reshape.default: _reshape, aten._unsafe_view.default: _reshape,
    aten.unsqueeze.default: _unsqueeze, aten.squeeze.dim: _squeeze, aten.squeeze.dims: _squeeze,
    aten.transpose.int: _transpose, aten.permute.default: _permute, aten.t.default: _t,
    aten.cat.default: _cat, aten.expand.default: _expand,
    aten.add.Tensor: _add, aten.add_.Tensor: _add, aten.sub.Tensor: _sub,
    aten.mul.Tensor: _mul, aten.mul_.Tensor: _mul, aten.div.Tensor: _div,
    aten.pow.Tensor_Scalar: _pow, aten.pow.Tensor_Tensor: _pow, aten.pow.Scalar: _pow,
    aten.exp.default: _unary("exp"), aten.log.default: _unary("log"),
    aten.abs.default: _unary("abs"), aten.sign.default: _unary("sign"),
    aten.log1p.default: _unary("log1p"),
    aten.minimum.default: _minmax("minimum"), aten.maximum.default: _minmax("maximum"),
    aten.rsqrt.default: _unary("rsqrt"),
    aten.sqrt.default: lambda im, a, kw: im.emit("pow", [a[0]], {"exponent": 0.5}),
    aten.reciprocal.default: lambda im, a, kw: im.emit("pow", [a[0]], {"exponent": -1.0}),
    aten.var.correction: _var, aten.var.dim: lambda im, a, kw: _var(im, a, kw, True),
    aten.var_mean.correction: _var_mean,
    aten.add.Scalar: _add, aten.add_.Scalar: _add,
    aten.to.dtype: _to_dtype, aten._to_copy.default: _to_dtype, aten.to.dtype_layout: _to_dtype,
    aten.softmax.int: _softmax, aten._softmax.default: _softmax,
    aten.matmul.default: _matmul, aten.mm.default: _matmul, aten.bmm.default: _matmul,
    aten.addmm.default: _addmm,
    aten.index.Tensor: _index, aten.index_select.default: _index_select,
    aten.dropout.default: _dropout, aten.dropout_.default: _dropout,
    aten.slice.Tensor: _slice, aten.select.int: _select,
    aten.pad.default: _pad, aten.constant_pad_nd.default: _pad,
    aten.where.self: _where, aten.masked_fill.Scalar: _masked_fill,
    aten.masked_fill.Tensor: _masked_fill,
    aten.scaled_dot_product_attention.default: _sdpa, aten.embedding.default: _embedding,
    aten.alias.default: _identity, aten.clone.default: _identity,
    aten.contiguous.default: _identity, aten.detach.default: _identity,
    aten.detach_.default: _identity, aten.lift_fresh_copy.default: _identity,
}
# Handlers that see folded tensors as torch tensors (masks), not lifted to graph constants.
RAW_ARGS = {aten.where.self, aten.masked_fill.Scalar, aten.masked_fill.Tensor,
            aten.scaled_dot_product_attention.default}
IGNORED = {aten._assert_tensor_metadata.default, aten._assert_async.msg}
INPLACE = {aten.add_.Tensor, aten.add_.Scalar, aten.mul_.Tensor, aten.relu_.default, aten.dropout_.default,
           aten.sigmoid_.default, aten.tanh_.default, aten.silu_.default, aten.hardswish_.default,
           aten.hardtanh_.default, aten.leaky_relu_.default, aten.elu_.default,
           aten.selu_.default, aten.celu_.default}


def _export(module: torch.nn.Module, args: tuple, train: bool) -> torch.export.ExportedProgram:
    was_training = module.training
    module.train(train)
    fake_log = logging.getLogger("torch._subclasses.fake_tensor")
    level = fake_log.level
    fake_log.setLevel(logging.CRITICAL)  # torch logs a traceback before raising; we report it
    try:
        return torch.export.export(module, args)
    except Exception as e:  # torch raises many types; report one clear error
        shapes = [tuple(a.shape) if hasattr(a, "shape") else type(a).__name__ for a in args]
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FrontendError(f"torch.export of {type(module).__name__} with inputs {shapes} "
                            f"failed: {first}. Check that the example inputs match the model "
                            "(channels, image size) and that forward() is traceable.") from None
    finally:
        fake_log.setLevel(level)
        module.train(was_training)


def _check_float32(module: torch.nn.Module, args: tuple) -> None:
    """Refuse floating-point parameters, buffers or example inputs other than float32."""
    tensors = [(f"parameter {k!r}", t) for k, t in module.named_parameters()]
    tensors += [(f"buffer {k!r}", t) for k, t in module.named_buffers()]
    tensors += [(f"example input {i}", t) for i, t in enumerate(args) if isinstance(t, torch.Tensor)]
    for what, t in tensors:
        if t.is_floating_point() and t.dtype != torch.float32:
            raise FrontendError(f"{what} is {str(t.dtype).replace('torch.', '')}; satc trains in "
                                "float32 (fp16 multiplies under mixed precision): convert the model "
                                "with model.float() and pass float32 inputs")


def _canonical_names(module: torch.nn.Module) -> dict[str, str]:
    """Each parameter / buffer name -> the name torch itself reports for that tensor (the
    first of its names: ``named_parameters()`` drops the later names of a tied weight, such
    as an LM head sharing the token embedding's table)."""
    canon: dict[str, str] = {}
    for named in (module.named_parameters, module.named_buffers):
        first: dict[int, str] = {}
        for k, t in named(remove_duplicate=False):
            canon[k] = first.setdefault(id(t), k)
    return canon


def import_torch(module: torch.nn.Module, example_args: Any, input_names: Sequence[str] | None = None,
                 name: str | None = None, train: bool = True) -> Graph:
    """Import ``module`` applied to ``example_args`` as a satc forward graph (stage FF).

    A single user input is named ``x`` unless ``input_names`` says otherwise. A tensor with
    several names (tied weights) is one graph param under torch's name for it, the first.
    """
    args = tuple(example_args) if isinstance(example_args, (tuple, list)) else (example_args,)
    _check_float32(module, args)
    ep = _export(module, args, train)
    gm = ep.graph_module
    im = _Importer(ep, name or type(module).__name__.lower())
    g = im.g
    specs = {s.arg.name: s for s in ep.graph_signature.input_specs}
    user = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    names = list(input_names) if input_names is not None else (["x"] if len(user) == 1 else user)
    if len(names) != len(user):
        raise FrontendError(f"input_names {names} do not match the model's {len(user)} inputs {user}")
    env: dict[str, Any] = {}
    skipped: set[str] = set()
    state = {**ep.state_dict, **ep.constants}
    mutated = {s.target for s in ep.graph_signature.output_specs if s.kind.name == "BUFFER_MUTATION"}
    canon = _canonical_names(module)
    params: dict[str, Value] = {}       # canonical name -> its one graph param
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            spec = specs[node.name]
            kind = spec.kind.name
            if kind == "USER_INPUT":
                t = node.meta["val"]
                env[node.name] = g.add_input(names[user.index(node.name)],
                                             TensorType(tuple(t.shape), str(t.dtype).replace("torch.", "")))
            elif spec.target.endswith("num_batches_tracked"):
                skipped.add(node.name)
            elif kind == "CONSTANT_TENSOR" or (kind == "BUFFER" and spec.target not in mutated and (
                    not state[spec.target].is_floating_point() or spec.persistent is False)):
                # folded like any constant: integer / bool buffers (BERT's position ids, mask
                # tables) and non-persistent ones (LLaMA's rotary inv_freq) that the forward
                # does not write are not training state
                env[node.name] = state[spec.target].detach()
            else:
                key = canon.get(spec.target, spec.target)
                if key not in params:
                    arr = state[spec.target].detach().cpu().numpy().astype(np.float32)
                    params[key] = g.add_param(key, arr, trainable=kind == "PARAMETER")
                env[node.name] = params[key]
        elif node.op == "call_function":
            if node.target in IGNORED or any(getattr(a, "name", None) in skipped for a in node.args):
                continue
            im.layer = _fx_layer(node)
            env[node.name] = im.call(node, env)
            if node.target in INPLACE and isinstance(node.args[0], torch.fx.Node):
                env[node.args[0].name] = env[node.name]
        elif node.op == "output":
            outs = [env[n.name] for n in node.args[0]]
            keys = ["output"] if len(outs) == 1 else [f"output{i}" for i in range(len(outs))]
            g.outputs = dict(zip(keys, outs))
    if im.unsupported:
        bad = sorted(set(im.unsupported))
        err = UnsupportedOpError(
            "unsupported ops in the exported model (no satc translation and no core-ATen "
            "decomposition to ops satc translates):\n  " + "\n  ".join(w for _, w in bad)
            + "\nrewrite them with supported ops (`satc ops MODEL --coverage` lists each op)")
        err.unsupported = bad                 # (op, where) per node, for satc.coverage
        raise err
    g.state_updates.update(im.em.state_updates)
    return verify(g)
