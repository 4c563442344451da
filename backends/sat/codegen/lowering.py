"""The lowering table and the context lowerings emit through.

Each IR op the SAT backend supports has one :class:`Lowering` in
:data:`LOWERINGS`, registered with :func:`lowering` (like the op table of
the IR): its ``emit`` function turns one node into instructions through a
:class:`LowerCtx`; optional hooks tell the memory planner the zero halo an
input needs (``pads``), whether an output may share its input's DRAM
storage (``alias``) and which DRAM scratch tensors the node reads or makes
(``derived``: key -> shape, e.g. the stride phases of a conv input, shared
by every node that names the same key and made by the first of them).
Supporting a new op means adding a table entry, not touching the driver.

Lowerings emit instructions without dependency tokens: every node loads
its operands from DRAM, computes on chip and stores its results back, and
the token pass (:mod:`.tokens`) orders whatever overlaps in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.codegen.memory import Arena, Dense, Storage, TapMajor, View3
from satc.backends.sat.codegen.tiling import TilePlan
from satc.backends.sat.config import HardwareConfig
from satc.backends.sat.isa import field_max
from satc.backends.sat.program import Region
from satc.ir.graph import Node, Value

from satc.errors import CompileError

Pads = tuple[int, int, int, int]
MAX_ROWS = field_max("load", "rows")        # rows / cols / 16-bit stride fields
MAX_PLANES = field_max("load", "planes")    # DMA planes


@dataclass(frozen=True)
class Lowering:
    """One op's lowering: ``emit`` plus optional planner hooks."""

    emit: Callable[["LowerCtx", Node], None]
    pads: Callable[[Node], dict[int, Pads]] | None = None
    alias: Callable[[Node, Storage], Storage | None] | None = None
    derived: Callable[[Node], dict[str, tuple[int, ...]]] | None = None


LOWERINGS: dict[str, Lowering] = {}


def lowering(*ops: str, pads: Callable | None = None, alias: Callable | None = None,
             derived: Callable | None = None):
    """Decorator registering ``emit`` as the lowering of ``ops``."""
    def deco(fn: Callable[["LowerCtx", Node], None]):
        for op in ops:
            if op in LOWERINGS:
                raise CompileError(f"op {op!r} has two SAT lowerings")
            LOWERINGS[op] = Lowering(fn, pads, alias, derived)
        return fn
    return deco


class LowerCtx:
    """What a lowering sees: config, builder, storages, the tile plan, the node's arena and
    constants; ``interleave``: GEMMs outside the tile plan use interleave mapping too, and
    ``dataflow`` (WS when the config has it, else its first dataflow)."""

    def __init__(self, cfg: HardwareConfig, builder: ProgramBuilder,
                 storage: dict[str, Storage], tiles: TilePlan, interleave: bool = True) -> None:
        self.cfg = cfg
        self.tiles = tiles
        self.interleave = interleave
        self.dataflow = "ws" if "ws" in cfg.dataflows else cfg.dataflows[0]
        self.b = builder
        self.storage = storage
        self.graph_constants: dict[str, np.ndarray] = {}
        self.conv_stats: frozenset[str] = frozenset()    # see codegen.norm.conv_stats_values
        self.node: Node | None = None
        self.arena: Arena | None = None
        self._consts: dict[str, Region] = {}
        self._made: set[str] = set()

    # ---- per node
    def begin(self, node: Node, index: int, update: bool = False) -> None:
        """Start lowering ``node`` (the ``index``-th node): a fresh arena, in the weight-update
        slice of the buffers when ``update`` (:func:`satc.backends.sat.codegen.partition.buffer_windows`)."""
        self.node = node
        self.arena = Arena(self.cfg, self.where, from_top=index % 2 == 1, update=update)

    def fresh_arena(self) -> None:
        """Free every on-chip tile of the current node (its earlier work is done; the
        token pass orders the reuse)."""
        self.arena = Arena(self.cfg, self.where, from_top=self.arena.from_top, update=self.arena.update)

    @property
    def where(self) -> str:
        """'layer X (node, op, stage)' for error messages."""
        n = self.node
        return f"layer {n.layer!r} ({n.name}, {n.op}, {n.stage})"

    def fail(self, problem: str, fix: str) -> CompileError:
        """A CompileError naming the current node, the problem and the fix."""
        return CompileError(f"{self.where}: {problem}; fix: {fix}")

    def st(self, v: Value) -> Storage:
        """The DRAM storage of value ``v``."""
        return self.storage[v.name]

    def dense(self, v: Value) -> Dense | TapMajor:
        """The storage of ``v``, which must be uncompressed float data."""
        s = self.st(v)
        if not isinstance(s, (Dense, TapMajor)):
            raise self.fail(f"%{v.name} is stored as {type(s).__name__}, this op reads dense data",
                            "only N:M GEMMs may read a pruned weight; check the sparsify pass")
        return s

    def first_use(self, key: str) -> bool:
        """True the first time a node asks for derived tensor ``key`` (that node makes it)."""
        if key in self._made:
            return False
        self._made.add(key)
        return True

    def alloc(self, buf: str, nbytes: int, what: str) -> int:
        """A fresh on-chip tile of the current node."""
        return self.arena.alloc(buf, nbytes, what)

    def const(self, name: str, arr: np.ndarray, dtype: str = "fp32") -> Region:
        """A read-only DRAM region (created once per name)."""
        if name not in self._consts:
            self._consts[name] = self.b.alloc(name, np.asarray(arr).shape, dtype, init=arr)
        return self._consts[name]

    def zeros(self, width: int) -> Region:
        """A read-only DRAM row of ``width`` fp32 zeros (created once per width)."""
        return self.const(f"zeros/{width}", np.zeros(width, np.float32))

    # ---- DMA of View3 chunks (planes p0..p1, packed on chip as [(p1-p0)*rows, cols])
    def dma3(self, op: str, v: View3, p0: int, p1: int, buf: str, addr: int,
             dtype: str = "fp32") -> None:
        """Load or store planes ``p0..p1`` of ``v`` to / from a packed tile at ``buf:addr``."""
        fn = self.b.load if op == "load" else self.b.store
        base = v.addr + p0 * v.plane_stride * 4
        if v.rows == 1:
            fn(buf, addr, base, p1 - p0, v.cols, dtype=dtype, dram_row_stride=v.plane_stride)
        else:
            fn(buf, addr, base, v.rows, v.cols, dtype=dtype, planes=p1 - p0,
               dram_plane_stride=v.plane_stride, dram_row_stride=v.row_stride,
               buf_plane_stride=v.rows * v.cols)

    def chunking(self, v: View3, tiles: int) -> tuple[int, int]:
        """(planes per chunk, slots): two slots per tile (double buffering) when that fits and
        the tensor needs more than one chunk, else one."""
        try:
            step = self.plane_chunk(v, 2 * tiles)
        except CompileError:
            return self.plane_chunk(v, tiles), 1
        return (v.planes, 1) if step >= v.planes else (step, 2)

    def plane_chunk(self, v: View3, tiles: int, budget: int | None = None, buf: str = "vec") -> int:
        """Planes per chunk so that ``tiles`` packed chunks fit the free part of ``buf``."""
        per_plane = v.rows * v.cols * 4
        free = self.arena.free_bytes(buf) if budget is None else budget
        fit = free // (tiles * per_plane + tiles * 64)
        limit = MAX_ROWS // v.rows if v.rows > 1 else MAX_ROWS
        if v.rows > 1:
            limit = min(limit, MAX_PLANES)
        p = min(v.planes, fit, limit)
        if p < 1:
            need = tiles * (per_plane + 64)
            raise self.fail(f"{tiles} tiles of one {v.rows}x{v.cols} plane need {need} bytes of the "
                            f"{buf} buffer, {self.arena.free_bytes(buf)} are free",
                            f"raise {buf}_buffer_bytes in the hardware config")
        return p


def same_views(ctx: LowerCtx, views: list[View3]) -> None:
    """Refuse elementwise work over tensors that do not share one element order."""
    ref = views[0]
    for v in views[1:]:
        if (v.planes, v.rows, v.cols, v.order) != (ref.planes, ref.rows, ref.cols, ref.order):
            raise ctx.fail(f"elementwise operands are laid out differently ({ref} vs {v})",
                           "this layout combination is not supported by the SAT lowering yet")


def chunks(total: int, step: int):
    """(start, end) pairs covering ``range(total)`` in steps of ``step``."""
    for s in range(0, total, step):
        yield s, min(total, s + step)


def lcm(a: int, b: int) -> int:
    """Least common multiple."""
    return a * b // math.gcd(a, b)


def view_alias(node: Node, src: Storage) -> Storage | None:
    """The output as a view of an unpadded dense input's region (reshape, dropout), else None."""
    if isinstance(src, Dense) and not src.padded:
        return Dense(src.region, tuple(node.outputs[0].shape))
    return None
