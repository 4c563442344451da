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
   old tenant's reads. A pooled tensor with a zero halo gets its halo
   written by the node that makes it (:attr:`MemoryPlan.halos`), since the
   pool has no initial image.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.codegen.lowering import LOWERINGS, MAX_PLANES, LowerCtx
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
    halos: dict[int, list[Dense]] = field(default_factory=dict)
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
    """Best-fit offsets in the intermediate pool (bytes, 64-byte aligned)."""

    def __init__(self) -> None:
        self.free: list[tuple[int, int]] = []     # (offset, size), sorted by offset
        self.top = 0

    def alloc(self, size: int) -> int:
        size = align(size)
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
    halo_owner: dict[str, int] = {}
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
                    halo_owner[v.name] = i
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
    base, size, offsets = _place(b, pooled, storage)
    unplaced = placeholders - set(offsets)
    if unplaced:
        raise CompileError(f"internal: pooled regions {sorted(unplaced)} got no pool offset")

    def rebase(s: Storage) -> Storage:
        if isinstance(s, (Dense, TapMajor)) and s.region.name in offsets:
            return dataclasses.replace(s, region=dataclasses.replace(
                s.region, addr=base + offsets[s.region.name]))
        return s
    storage = {k: rebase(s) for k, s in storage.items()}
    halos: dict[int, list[Dense]] = {}
    for name, i in halo_owner.items():
        halos.setdefault(i, []).append(storage[name])
    outputs = {k: storage[v.name] for k, v in graph.outputs.items()}
    return MemoryPlan(storage, states, inputs, outputs, halos, size)


def stats_key(name: str) -> str:
    """The DRAM scratch of the channel statistics a conv computes for its output ``name``:
    rows sum(y), sum((y - k)^2), k (the shift)."""
    return f"{name}#stats"


def _place(b: ProgramBuilder, pooled: dict[str, list[int]], storage: dict[str, Storage]
           ) -> tuple[int, int, dict[str, int]]:
    """Offsets of the pooled regions by liveness; allocates the pool region in ``b``.

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
            offsets[name] = pool.alloc(sizes[name])
        for name in ends.get(i, []):
            pool.release(offsets[name], sizes[name])
    if pool.top == 0:
        return 0, 0, offsets
    region = b.alloc("#pool", (pool.top,), "u8")
    return region.addr, pool.top, offsets


def _set_init(b: ProgramBuilder, s: Storage, value: np.ndarray) -> None:
    """Replace the initial contents of ``s``'s regions in the builder with ``value`` encoded."""
    for region, arr in s.encode(value):
        b.set_init(region.name, arr)


def _halo_runs(s: Dense) -> list[tuple[int, int, int]]:
    """The zero halo of one padded plane as (offset, rows, cols) stores of contiguous runs,
    first the widest run: the top rows with the first row's left pad, the last row's right
    pad with the bottom rows, and between data rows the right pad of one row with the left
    pad of the next (one run per row instead of two short ones)."""
    h, w = s.shape[2:]
    pt, pl, pb, pr = s.pads
    wp = s.hw_padded[1]
    runs = [(0, 1, pt * wp + pl), ((pt + h - 1) * wp + pl + w, 1, pr + pb * wp),
            (pt * wp + pl + w, h - 1, pr + pl)]
    return [(0, 0, max(r[2] for r in runs))] + runs


def _zero_whole_planes(s: Dense, burst: int) -> bool:
    """Whether zeroing ``s``'s whole padded planes (one contiguous run, the data written over
    it after) moves fewer DRAM bursts than its halo runs (:func:`_halo_runs`): true for small
    maps, whose halo is mostly runs shorter than a burst."""
    return _plane_halo_bytes(s, True, burst) < _plane_halo_bytes(s, False, burst)


#: Burst bytes one halo-zeroing DMA moves at most: a halo store is many short runs that
#: hold the shared DRAM channel, and a long one blocks the next layer's loads (the list
#: scheduler does not preempt); split, the channel can serve urgent transfers between pieces.
HALO_DMA_BYTES = 1 << 16


def _plane_halo_bytes(s: Dense, whole: bool, burst: int) -> int:
    """DRAM burst bytes zeroing one padded plane of ``s`` moves."""
    hp, wp = s.hw_padded
    if whole:
        return -(-hp * wp * 4 // burst) * burst
    return sum(rows * -(-cols * 4 // burst) * burst for _, rows, cols in _halo_runs(s)[1:] if rows and cols)


def zero_halos(ctx: LowerCtx, tensors: list[Dense]) -> None:
    """Write the zero halo of pooled padded tensors (DMA stores from one zero row on chip,
    buffer strides 0: the same zeros are stored to every row of every plane); small maps get
    their whole planes zeroed instead (:func:`_zero_whole_planes`), the data stored over them."""
    burst = ctx.cfg.dram_burst_bytes
    whole = {id(s): _zero_whole_planes(s, burst) for s in tensors}
    width = max(s.hw_padded[0] * s.hw_padded[1] if whole[id(s)] else _halo_runs(s)[0][2]
                for s in tensors)
    zeros = ctx.zeros(width)
    z = ctx.alloc("vec", width * 4, "zero row")
    ctx.b.load("vec", z, zeros.addr, 1, width)
    for s in tensors:
        n, c = s.shape[:2]
        hp, wp = s.hw_padded
        step = min(MAX_PLANES, max(1, HALO_DMA_BYTES // _plane_halo_bytes(s, whole[id(s)], burst)))
        for p0 in range(0, n * c, step):
            planes = min(step, n * c - p0)
            base = s.region.addr + p0 * hp * wp * 4
            if whole[id(s)]:
                ctx.b.store("vec", z, base, planes, hp * wp, dram_row_stride=hp * wp,
                            buf_row_stride=0)
                continue
            for off, rows, cols in _halo_runs(s)[1:]:
                if rows and cols:
                    ctx.b.store("vec", z, base + off * 4, rows, cols, planes=planes,
                                dram_plane_stride=hp * wp, dram_row_stride=wp,
                                buf_plane_stride=0, buf_row_stride=0)
