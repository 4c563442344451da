"""The DRAM plan: one storage per tensor of the training step.

Decisions, in order:

1. zero halos: each lowering's ``pads`` hook says which inputs it reads
   as padded conv windows; a tensor gets the largest halo any reader asks;
2. pruned weights: a state read as the N:M operand of a GEMM
   (``attrs['nm']``) is stored only compressed (:class:`Compressed`);
3. labels and token ids: int64 inputs and constants read by the loss or an
   embedding are stored one-hot (constants with their one-hot image: a
   position or token-type id table); an int64 reshape is a view of them;
4. rank-4 weight-side tensors (state, and values made in WU / OPT / SORE)
   are tap-major; other rank-4 tensors are NCHW;
5. aliasing: a state update is written in place into the state's storage
   (checked: no node reads the old state after the update), and a
   lowering's ``alias`` hook may reuse its input's storage (reshape);
6. permanent regions are allocated in a fixed order -- inputs, state,
   constants, graph outputs in node order -- so the same graph always
   gives the same layout;
7. liveness-based reuse: every other node output, and every scratch tensor
   a lowering's ``derived`` hook names, lives in one DRAM pool from the
   node that makes it to its last reader (aliases extend the range). Offsets
   are assigned in node order by best fit over the free blocks (lowest
   offset on ties, so the layout is deterministic); a block is released
   after the node of its last read, so a node's outputs never share bytes
   with its inputs. The token pass orders the new tenant's writes after the
   old tenant's reads. The pool is a zero region and no halo is ever
   written: a padded tensor lies only where its halo is still zero
   (:class:`_Pool`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.codegen.lowering import LOWERINGS
from satc.backends.sat.codegen.memory import (
    Compressed,
    Dense,
    OneHot,
    Storage,
    TapMajor,
)
from satc.backends.sat.codegen.partition import align
from satc.backends.sat.program import Region
from satc.ir.graph import Graph, Value
from satc.ir.types import Stage

from satc.errors import CompileError

WEIGHT_STAGES = (Stage.WU, Stage.OPT, Stage.SORE)


@dataclass
class MemoryPlan:
    """Storage of every value (by name), of the state, the inputs and the outputs."""

    storage: dict[str, Storage]
    state: dict[str, Storage]
    inputs: dict[str, Storage]
    outputs: dict[str, Storage]
    pool_bytes: int = 0

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


class _Pool:
    """Best-fit offsets in the intermediate pool (bytes, 64-byte aligned).

    The pool starts all zero (a zero region) and the node that makes a padded tensor writes
    only its interior, so a padded tensor's halo is zero wherever only tensors of its halo
    layout (``halo``: its padded shape and pads) lay before it at its offset. A padded tensor
    takes such a block where one is free, else fresh bytes at the top of the pool: no halo is
    ever written. Other tensors take the best fit."""

    def __init__(self) -> None:
        self.free: list[tuple[int, int]] = []     # (offset, size), sorted by offset
        self.top = 0
        self.tenants: list[tuple[int, int, object]] = []    # (offset, size, halo key) so far
        self._by_halo: dict[object, list[int]] = {}          # halo key -> offsets it took

    def alloc(self, size: int, halo: object = None) -> int:
        """The offset of a block of ``size`` bytes; with ``halo``, one whose halo is zero."""
        size = align(size)
        if halo is None:
            off = self._best_fit(size)
        else:
            off = self._same_halo_block(size, halo)
            if off is None:
                off, self.top = self.top, self.top + size
            else:
                self._take(off, size)
            self._by_halo.setdefault(halo, []).append(off)
        self.tenants.append((off, size, halo))
        return off

    def _same_halo_block(self, size: int, halo: object) -> int | None:
        """The lowest free offset where only tensors of ``halo``'s layout and size lay."""
        for off in sorted(set(self._by_halo.get(halo, ()))):
            if any(fo <= off and off + size <= fo + fs for fo, fs in self.free) and all(
                    t == (off, size, halo) for t in self.tenants
                    if t[0] < off + size and off < t[0] + t[1]):
                return off
        return None

    def _take(self, off: int, size: int) -> None:
        i = next(i for i, (fo, fs) in enumerate(self.free) if fo <= off and off + size <= fo + fs)
        fo, fs = self.free.pop(i)
        self.free[i:i] = [(o, sz) for o, sz in ((fo, off - fo), (off + size, fo + fs - off - size))
                          if sz]

    def _best_fit(self, size: int) -> int:
        fits = [(sz, off, i) for i, (off, sz) in enumerate(self.free) if sz >= size]
        if not fits:
            if self.free and self.free[-1][0] + self.free[-1][1] == self.top:
                off = self.free.pop()[0]             # grow the last free block
            else:
                off = self.top
            self.top = off + size
            return off
        sz, off, i = min(fits)
        if sz == size:
            del self.free[i]
        else:
            self.free[i] = (off + size, sz - size)
        return off

    def release(self, off: int, size: int) -> None:
        size = align(size)
        blocks = sorted(self.free + [(off, size)])
        merged: list[tuple[int, int]] = []
        for o, sz in blocks:
            if merged and merged[-1][0] + merged[-1][1] == o:
                merged[-1] = (merged[-1][0], merged[-1][1] + sz)
            else:
                merged.append((o, sz))
        self.free = merged


def plan_memory(graph: Graph, b: ProgramBuilder, state: dict[str, np.ndarray],
                conv_stats: frozenset[str] = frozenset()) -> MemoryPlan:
    """Allocate DRAM for ``graph`` in ``b`` with ``state`` as the initial state contents;
    ``conv_stats``: conv outputs whose batchnorm statistics the conv computes
    (:func:`~satc.backends.sat.codegen.norm.conv_stats_values`), each with a [3, C] scratch
    ``<name>#stats`` live from the conv to the batchnorm."""
    cfg = b.config
    mixed = cfg.mixed_precision
    pads: dict[str, tuple] = {}
    nm_state: dict[str, tuple[int, int, int]] = {}
    classes: dict[str, int] = {}
    ignore_index: dict[str, int] = {}
    derived: dict[str, tuple[int, ...]] = {}
    derived_span: dict[str, list[int]] = {}
    id_root: dict[str, str] = {}                   # int64 reshape output -> the ids it views
    for i, node in enumerate(graph.nodes):
        low = LOWERINGS.get(node.op)
        if low is None:
            raise CompileError(f"layer {node.layer!r} ({node.name}, {node.op}, {node.stage}): op "
                               f"{node.op!r} has no SAT lowering yet; supported: "
                               f"{', '.join(sorted(LOWERINGS))}")
        if low.pads is not None:
            for j, p in low.pads(node).items():
                v = node.inputs[j]
                pads[v.name] = _max_pads(pads.get(v.name, (0, 0, 0, 0)), tuple(max(x, 0) for x in p))
        if low.derived is not None:
            for key, shape in low.derived(node).items():
                derived.setdefault(key, tuple(shape))
                derived_span.setdefault(key, [i, i])[1] = i
        if "nm" in node.attrs:
            w = node.inputs[1]
            pruned_here = w.producer is not None and w.producer.op == "nm_prune"
            if w.name not in graph.state and not pruned_here:
                raise CompileError(f"layer {node.layer!r} ({node.name}): the N:M operand %{w.name} "
                                   "is neither a state tensor nor made by nm_prune; SAT reads "
                                   "pruned weights made by SORE, run the sparsify pass")
            spec = tuple(node.attrs["nm"])
            if nm_state.setdefault(w.name, spec) != spec:
                raise CompileError(f"state {w.name!r} is read with two N:M patterns")
        if node.op == "reshape" and node.inputs[0].dtype == "int64":
            src = node.inputs[0].name
            id_root[node.outputs[0].name] = id_root.get(src, src)
        if node.op in ("cross_entropy", "cross_entropy_grad"):
            ids = id_root.get(node.inputs[1].name, node.inputs[1].name)
            classes[ids] = node.inputs[0].shape[1]
            if node.attrs.get("ignore_index") is not None:   # stored as zero one-hot rows
                ignore_index[ids] = int(node.attrs["ignore_index"])
        if node.op in ("embedding", "embedding_grad"):     # ids stored one-hot [R, vocab]
            vocab = node.inputs[0].shape[0] if node.op == "embedding" else node.outputs[0].shape[0]
            ids = id_root.get(node.inputs[1].name, node.inputs[1].name)
            if classes.setdefault(ids, vocab) != vocab:
                raise CompileError(f"int64 input %{ids} is read with two class counts (a loss "
                                   "and an embedding of different sizes)")

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
    Alloc = Callable[[str, tuple[int, ...], str, np.ndarray | None], Region]

    def permanent(name: str, shape: tuple[int, ...], dtype: str, init: np.ndarray | None) -> Region:
        return b.alloc(name, shape, dtype, init=init)

    pooled: dict[str, list[int]] = {}          # region name -> [first node, last node]

    def make(v: Value, weight_side: bool, alloc: Alloc, init: np.ndarray | None = None) -> Storage:
        if v.dtype != "float32":
            raise CompileError(f"%{v.name} has dtype {v.dtype}; SAT tensors are float32 "
                               "(int64 is supported for labels and token ids only)")
        shape = tuple(v.shape)
        if v.name in nm_state:
            n, m, axis = nm_state[v.name]
            probe = Compressed(None, None, shape, n, m, axis)      # sizes only
            dt = "fp16" if mixed else "fp32"
            s: Storage = Compressed(
                alloc(f"{v.name}#val", (probe.taps * probe.outer, probe.val_cols), dt, None),
                alloc(f"{v.name}#idx", (probe.taps * probe.outer, probe.idx_cols), "u8", None),
                shape, n, m, axis)
        elif len(shape) == 4 and weight_side:
            co, ci, kh, kw = shape
            s = TapMajor(alloc(v.name, (kh * kw, co, ci), "fp32", None), shape)
        else:
            p = pads.get(v.name, (0, 0, 0, 0))
            if any(p) and len(shape) != 4:
                raise CompileError(f"%{v.name} of shape {shape} is read as a conv window")
            if any(p):
                n, c, h, w = shape
                padded = (n, c, h + p[0] + p[2], w + p[1] + p[3])
                zeros = np.zeros(padded, np.float32) if alloc is permanent else None
                s = Dense(alloc(v.name, padded, "fp32", zeros), shape, p)
            else:
                s = Dense(alloc(v.name, shape if shape else (1,), "fp32", None), shape)
        if init is not None:
            _set_init(b, s, init)
        return s

    placeholders: set[str] = set()

    def in_pool(name: str, shape: tuple[int, ...], dtype: str, init: np.ndarray | None) -> Region:
        placeholders.add(name)
        return Region(name, 0, shape, dtype)       # placeholder address, rebased below

    inputs = {}
    for v in graph.inputs:
        if v.dtype == "int64":
            if v.name not in classes:
                raise CompileError(f"int64 input %{v.name} is not read by the loss or an "
                                   "embedding; SAT supports integer inputs as labels and token "
                                   "ids only")
            shape = (int(np.prod(v.shape)), classes[v.name])
            s = OneHot(b.alloc(v.name, shape, init=np.zeros(shape, np.float32)), classes[v.name],
                       ignore_index.get(v.name))
        else:
            s = make(v, False, permanent, np.zeros(v.shape, np.float32))
        inputs[v.name] = storage[v.name] = s
    states = {}
    for k, v in graph.state.items():
        states[k] = storage[k] = make(v, True, permanent, state[k])
    for k, v in graph.constants.items():
        if v.dtype == "float32":
            storage[k] = make(v, False, permanent, graph.initializers[k])
        elif k in classes:                             # constant token ids: a one-hot table
            ids = np.asarray(graph.initializers[k]).reshape(-1)
            if ids.size and (ids.min() < 0 or ids.max() >= classes[k]):
                raise CompileError(f"constant ids %{k} lie in [{ids.min()}, {ids.max()}], outside "
                                   f"the embedding's [0, {classes[k]})")
            image = np.eye(classes[k], dtype=np.float32)[ids]
            storage[k] = OneHot(b.alloc(k, image.shape, init=image), classes[k])
    out_names = {v.name for v in graph.outputs.values()}
    padded: set[str] = set()                       # pooled tensors with a zero halo
    for i, node in enumerate(graph.nodes):
        low = LOWERINGS[node.op]
        for j, v in enumerate(node.outputs):
            if v.name in id_root:                      # int64 reshape: the same one-hot rows
                storage[v.name] = storage[id_root[v.name]]
                continue
            if id(v) in update_of:
                storage[v.name] = states[update_of[id(v)]]
                continue
            if j == 0 and low.alias is not None and v.name not in pads and v.name not in out_names:
                s = low.alias(node, storage[node.inputs[0].name])
                if s is not None:
                    storage[v.name] = s
                    continue
            weight_side = len(v.shape) == 4 and node.stage in WEIGHT_STAGES
            if v.name in out_names or v.name in nm_state:  # compressed (two regions): not pooled
                storage[v.name] = make(v, weight_side, permanent)
            else:
                storage[v.name] = make(v, weight_side, in_pool)
                pooled[v.name] = [i, i]
                if isinstance(storage[v.name], Dense) and storage[v.name].padded:
                    padded.add(v.name)
    for node in graph.nodes:
        if node.op in ("batchnorm", "batchnorm_relu") and node.inputs[0].name in conv_stats:
            x = node.inputs[0]
            key = stats_key(x.name)
            derived[key] = (3, x.shape[1])
            derived_span[key] = [position[id(x.producer)], position[id(node)]]
    for key, shape in derived.items():
        storage[key] = Dense(Region(key, 0, shape, "fp32"), shape)
        pooled[key] = list(derived_span[key])
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            s = storage.get(v.name)
            if s is not None:
                name = s.regions[0].name
                if name in pooled:
                    pooled[name][1] = max(pooled[name][1], i)
    halo_keys = {name: (storage[name].region.shape, storage[name].pads) for name in padded}
    base, size, offsets = _place(b, pooled, storage, halo_keys)
    unplaced = placeholders - set(offsets)
    if unplaced:
        raise CompileError(f"internal: pooled regions {sorted(unplaced)} got no pool offset")

    def rebase(s: Storage) -> Storage:
        if isinstance(s, (Dense, TapMajor)) and s.region.name in offsets:
            return dataclasses.replace(s, region=dataclasses.replace(
                s.region, addr=base + offsets[s.region.name]))
        return s
    storage = {k: rebase(s) for k, s in storage.items()}
    outputs = {k: storage[v.name] for k, v in graph.outputs.items()}
    return MemoryPlan(storage, states, inputs, outputs, size)


def stats_key(name: str) -> str:
    """The DRAM scratch of the channel statistics a conv computes for its output ``name``:
    rows sum(y), sum((y - k)^2), k (the shift)."""
    return f"{name}#stats"


def _place(b: ProgramBuilder, pooled: dict[str, list[int]], storage: dict[str, Storage],
           halo_keys: dict[str, object]) -> tuple[int, int, dict[str, int]]:
    """Offsets of the pooled regions by liveness; allocates the zero pool region in ``b``.
    ``halo_keys``: the padded regions, each with the key of its halo's layout.

    Returns (pool base address, pool bytes, region name -> offset)."""
    sizes = {name: storage[name].regions[0].nbytes for name in pooled}
    starts: dict[int, list[str]] = {}
    ends: dict[int, list[str]] = {}
    for name, (first, last) in pooled.items():
        starts.setdefault(first, []).append(name)
        ends.setdefault(last, []).append(name)
    pool = _Pool()
    offsets: dict[str, int] = {}
    for i in sorted(set(starts) | set(ends)):
        for name in starts.get(i, []):
            offsets[name] = pool.alloc(sizes[name], halo_keys.get(name))
        for name in ends.get(i, []):
            pool.release(offsets[name], sizes[name])
    if pool.top == 0:
        return 0, 0, offsets
    region = b.alloc("#pool", (pool.top,), "u8", zero=True)
    return region.addr, pool.top, offsets


def _set_init(b: ProgramBuilder, s: Storage, value: np.ndarray) -> None:
    """Replace the initial contents of ``s``'s regions in the builder with ``value`` encoded."""
    for region, arr in s.encode(value):
        b.set_init(region.name, arr)
