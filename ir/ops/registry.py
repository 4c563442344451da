"""The op table: each op's shape rule, interpreter kernel, gradient rule and MAC count.

An op is registered once with :func:`register`; everything else (the graph
builder, the verifier, the interpreter, autodiff, op accounting) looks it up
here. Gradient rules receive a :class:`GradContext`, which emits backward
nodes and tags them BP or WU by what they differentiate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from satc.errors import IRError
from satc.ir.types import TensorType

Attrs = dict[str, Any]
InferFn = Callable[[list[TensorType], Attrs], list[TensorType]]
KernelFn = Callable[[list[np.ndarray], Attrs], list[np.ndarray]]
MacsFn = Callable[[list[TensorType], list[TensorType], Attrs], int]


class GradContext(Protocol):
    """What a gradient rule may call: emit a backward node for input ``wrt``."""

    def emit(self, op: str, inputs: Sequence[Any], attrs: Attrs | None = None,
             wrt: int = 0) -> Any:
        """Append a single-output backward op for input ``wrt``; None if it needs no gradient."""

    def emit_multi(self, op: str, inputs: Sequence[Any], attrs: Attrs | None = None,
                   wrt: int = 0) -> tuple[Any, ...]:
        """Like :meth:`emit` for an op with several outputs."""


GradFn = Callable[[GradContext, Any, list[Any]], list[Any]]


@dataclass(frozen=True)
class OpDef:
    """One op: ``infer`` types, ``kernel`` (numpy), optional ``grad`` and ``macs``."""

    name: str
    infer: InferFn
    kernel: KernelFn
    grad: GradFn | None = None
    macs: MacsFn | None = None
    doc: str = ""


OPS: dict[str, OpDef] = {}


def register(name: str, *, infer: InferFn, kernel: KernelFn, grad: GradFn | None = None,
             macs: MacsFn | None = None, doc: str = "") -> OpDef:
    """Add an op to the table (each name once)."""
    if name in OPS:
        raise IRError(f"op {name!r} registered twice")
    OPS[name] = OpDef(name, infer, kernel, grad, macs, doc)
    return OPS[name]


def get_op(name: str) -> OpDef:
    """The definition of ``name``; IRError naming the op if it is unknown."""
    try:
        return OPS[name]
    except KeyError:
        raise IRError(f"unknown op {name!r}; known ops: {', '.join(sorted(OPS))}") from None


def expect(cond: bool, msg: str) -> None:
    """Raise a ShapeError with ``msg`` unless ``cond``."""
    if not cond:
        from satc.errors import ShapeError
        raise ShapeError(msg)
