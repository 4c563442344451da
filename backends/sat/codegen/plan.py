"""The DRAM plan: one storage per tensor of the training step.

Decisions, in order:

1. zero halos: each lowering's ``pads`` hook says which inputs it reads
   as padded conv windows; a tensor gets the largest halo any reader asks;
2. pruned weights: a state read as the N:M operand of a GEMM
   (``attrs['nm']``) is stored only compressed (:class:`Compressed`);
3. labels: int64 inputs read by the loss are stored one-hot;
4. rank-4 weight-side tensors (state, and values made in WU / OPT / SORE)
   are tap-major; other rank-4 tensors are NCHW;
5. aliasing: a state update is written in place into the state's storage
   (checked: no node reads the old state after the update), and a
   lowering's ``alias`` hook may reuse its input's storage (reshape);
6. regions are allocated in a fixed order -- inputs, state, constants,
   node outputs in node order -- so the same graph always gives the same
   layout. Every intermediate keeps its own region (no reuse yet).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.codegen.lowering import LOWERINGS
from satc.backends.sat.codegen.memory import Compressed, Dense, OneHot, Storage, TapMajor
from satc.errors import CompileError
from satc.ir.graph import Graph, Value
from satc.ir.types import Stage

WEIGHT_STAGES = (Stage.WU, Stage.OPT, Stage.SORE)


@dataclass
class MemoryPlan:
    """Storage of every value (by name), of the state, the inputs and the outputs."""

    storage: dict[str, Storage]
    state: dict[str, Storage]
    inputs: dict[str, Storage]
    outputs: dict[str, Storage]

    def table(self) -> str:
        """A text table of the DRAM regions: name, address, bytes, dtype."""
        seen, rows = set(), []
        for s in self.storage.values():
            for r in s.regions:
                if r.name not in seen:
                    seen.add(r.name)
                    rows.append(r)
        rows.sort(key=lambda r: r.addr)
        lines = [f"{'region':<48} {'addr':>10} {'bytes':>10} dtype"]
        lines += [f"{r.name:<48} {r.addr:>10} {r.nbytes:>10} {r.dtype}" for r in rows]
        return "\n".join(lines)


def _max_pads(a, b):
    return tuple(max(x, y) for x, y in zip(a, b))


def plan_memory(graph: Graph, b: ProgramBuilder, state: dict[str, np.ndarray]) -> MemoryPlan:
    """Allocate DRAM for ``graph`` in ``b`` with ``state`` as the initial state contents."""
    cfg = b.config
    mixed = cfg.mixed_precision
    pads: dict[str, tuple] = {}
    nm_state: dict[str, tuple[int, int, int]] = {}
    classes: dict[str, int] = {}
    for node in graph.nodes:
        low = LOWERINGS.get(node.op)
        if low is None:
            raise CompileError(f"layer {node.layer!r} ({node.name}, {node.op}, {node.stage}): op "
                               f"{node.op!r} has no SAT lowering yet; supported: "
                               f"{', '.join(sorted(LOWERINGS))}")
        if low.pads is not None:
            for i, p in low.pads(node).items():
                v = node.inputs[i]
                pads[v.name] = _max_pads(pads.get(v.name, (0, 0, 0, 0)), tuple(max(x, 0) for x in p))
        if "nm" in node.attrs:
            w = node.inputs[1]
            if w.name not in graph.state:
                raise CompileError(f"layer {node.layer!r} ({node.name}): the N:M operand %{w.name} "
                                   "is not a state tensor; SAT reads pruned weights pre-generated "
                                   "by SORE, run the sparsify pass")
            spec = tuple(node.attrs["nm"])
            if nm_state.setdefault(w.name, spec) != spec:
                raise CompileError(f"state {w.name!r} is read with two N:M patterns")
        if node.op in ("cross_entropy", "cross_entropy_grad"):
            classes[node.inputs[1].name] = node.inputs[0].shape[1]

    position = {id(n): i for i, n in enumerate(graph.nodes)}
    last_read: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            last_read[v.name] = i
    update_of: dict[int, str] = {}
    for k, v in graph.state_updates.items():
        if v.producer is None:
            raise CompileError(f"state update {k!r} <- %{v.name} is not computed by a node; "
                               "the SAT lowering writes state in place from the updating node")
        if id(v) in update_of:
            raise CompileError(f"%{v.name} updates both {update_of[id(v)]!r} and {k!r}")
        if last_read.get(k, -1) > position[id(v.producer)]:
            raise CompileError(f"state {k!r} is read after its update by {v.producer.name!r}; "
                               "an in-place update is impossible: reorder the graph")
        update_of[id(v)] = k

    storage: dict[str, Storage] = {}

    def fresh(v: Value, weight_side: bool, init: np.ndarray | None = None) -> Storage:
        if v.dtype != "float32":
            raise CompileError(f"%{v.name} has dtype {v.dtype}; SAT tensors are float32 "
                               "(int64 is supported for loss labels only)")
        shape = tuple(v.shape)
        if v.name in nm_state:
            n, m, axis = nm_state[v.name]
            probe = Compressed(None, None, shape, n, m, axis)      # sizes only
            dt = "fp16" if mixed else "fp32"
            s: Storage = Compressed(
                b.alloc(f"{v.name}#val", (probe.taps * probe.outer, probe.val_cols), dt),
                b.alloc(f"{v.name}#idx", (probe.taps * probe.outer, probe.idx_cols), "u8"),
                shape, n, m, axis)
        elif len(shape) == 4 and weight_side:
            co, ci, kh, kw = shape
            s = TapMajor(b.alloc(v.name, (kh * kw, co, ci)), shape)
        else:
            p = pads.get(v.name, (0, 0, 0, 0))
            if any(p) and len(shape) != 4:
                raise CompileError(f"%{v.name} of shape {shape} is read as a conv window")
            if any(p):
                n, c, h, w = shape
                padded = (n, c, h + p[0] + p[2], w + p[1] + p[3])
                s = Dense(b.alloc(v.name, padded, init=np.zeros(padded, np.float32)), shape, p)
            else:
                s = Dense(b.alloc(v.name, shape if shape else (1,)), shape)
        if init is not None:
            _set_init(b, s, init)
        return s

    inputs = {}
    for v in graph.inputs:
        if v.dtype == "int64":
            if v.name not in classes:
                raise CompileError(f"int64 input %{v.name} is not read by the loss; SAT supports "
                                   "integer inputs as cross-entropy labels only")
            shape = (v.shape[0], classes[v.name])
            s = OneHot(b.alloc(v.name, shape, init=np.zeros(shape, np.float32)), classes[v.name])
        else:
            s = fresh(v, False, np.zeros(v.shape, np.float32))
        inputs[v.name] = storage[v.name] = s
    states = {}
    for k, v in graph.state.items():
        states[k] = storage[k] = fresh(v, True, state[k])
    for k, v in graph.constants.items():
        if v.dtype == "float32":
            storage[k] = fresh(v, False, graph.initializers[k])
    for node in graph.nodes:
        low = LOWERINGS[node.op]
        for j, v in enumerate(node.outputs):
            if id(v) in update_of:
                storage[v.name] = states[update_of[id(v)]]
                continue
            if j == 0 and low.alias is not None and v.name not in pads:
                s = low.alias(node, storage[node.inputs[0].name])
                if s is not None:
                    storage[v.name] = s
                    continue
            storage[v.name] = fresh(v, len(v.shape) == 4 and node.stage in WEIGHT_STAGES)
    outputs = {k: storage[v.name] for k, v in graph.outputs.items()}
    return MemoryPlan(storage, states, inputs, outputs)


def _set_init(b: ProgramBuilder, s: Storage, value: np.ndarray) -> None:
    """Replace the initial contents of ``s``'s regions in the builder with ``value`` encoded."""
    for region, arr in s.encode(value):
        b.set_init(region.name, arr)
