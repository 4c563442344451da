"""Memory planning: how every tensor of a training step lives in DRAM and on chip.

DRAM storages (one or two :class:`~satc.backends.sat.program.Region` each):

* :class:`Dense` -- row-major; a rank-4 activation (NCHW) may carry a zero
  halo ``pads = (top, left, bottom, right)`` so that conv windows can be
  loaded by DMA (implicit GEMM). The halo is zero in the region's initial
  image and never written.
* :class:`TapMajor` -- a conv weight ``[Co, Ci, kh, kw]`` (and its gradient,
  momentum, ...) stored as ``[kh*kw, Co, Ci]``: one contiguous ``Co x Ci``
  matrix per kernel tap, the A operand of that tap's GEMM, with the N:M
  groups (along Ci or Co) inside one matrix.
* :class:`Compressed` -- a pruned weight (``<w>.ff`` / ``<w>.bp``) stored
  only in the SAT N:M format: per tap, values ``[outer, G*N]`` and packed
  indices ``[outer, row_bytes]``, groups along the reduction axis (Ci for
  FF, Co for BP). Written by SORE, read by the sparse GEMMs.
* :class:`OneHot` -- int64 class labels, stored as fp32 one-hot rows (the
  target probabilities the vector unit's ``xent`` reads); labels of a loss
  with ``ignore_index`` store ignored rows as zero rows.

Every storage converts between the interpreter's numpy form and its DRAM
bytes (:meth:`encode` / :meth:`decode`), so ``CompiledProgram.state`` has
exactly the interpreter's keys and layouts.

On chip, each node's lowering allocates its tiles from an :class:`Arena`:
a bump allocator over a window of the four buffers (weight-update nodes
have the top 1/8 of each to themselves, :func:`buffer_windows`) that starts
at the bottom of the window for even nodes and at the top for odd ones, so
consecutive nodes use disjoint addresses when both fit (and may overlap in
time); the token pass orders any reuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
from satc.backends.sat.codegen.partition import (
    align,
    buffer_bytes_to_fit,
    buffer_windows,
)
from satc.backends.sat.config import HardwareConfig
from satc.backends.sat.isa import BUFFERS
from satc.backends.sat.nmformat import compress_rows, decompress_rows, groups, row_bytes
from satc.backends.sat.program import Region

from satc.errors import CompileError, ProgramFileError

Reader = Callable[[str], np.ndarray]
RegionOf = Callable[[str], Region]          # region by name, for reading a storage back from JSON


@dataclass(frozen=True)
class View3:
    """A tensor as ``planes x rows x cols`` (element strides), cols contiguous in DRAM."""

    planes: int
    rows: int
    cols: int
    addr: int
    plane_stride: int
    row_stride: int
    order: str          # 'logical' (row-major of the logical shape) or 'taps'


@dataclass(frozen=True)
class Dense:
    """Row-major storage of ``shape``; rank 4 may be padded (a zero halo around H, W)."""

    region: Region
    shape: tuple[int, ...]
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    KIND: ClassVar[str] = "dense"

    def to_json(self) -> dict[str, Any]:
        """The storage as JSON (regions by name), for a program file's manifest."""
        return {"kind": self.KIND, "region": self.region.name, "shape": list(self.shape),
                "pads": list(self.pads)}

    @classmethod
    def from_json(cls, d: dict[str, Any], region_of: RegionOf) -> "Dense":
        """The storage written by :meth:`to_json`; ``region_of`` looks regions up by name."""
        return cls(region_of(d["region"]), tuple(d["shape"]), tuple(d["pads"]))

    @property
    def regions(self) -> tuple[Region, ...]:
        """The DRAM regions of this storage."""
        return (self.region,)

    @property
    def padded(self) -> bool:
        """True when a halo surrounds H and W."""
        return any(self.pads)

    @property
    def hw_padded(self) -> tuple[int, int]:
        """(Hp, Wp) of a rank-4 storage."""
        pt, pl, pb, pr = self.pads
        return self.shape[2] + pt + pb, self.shape[3] + pl + pr

    def addr_of(self, n: int, c: int, h: int, w: int) -> int:
        """Byte address of element (n, c, h, w) in padded coordinates (h, w from the halo's corner)."""
        hp, wp = self.hw_padded
        return self.region.addr + (((n * self.shape[1] + c) * hp + h) * wp + w) * 4

    def view3(self) -> View3:
        """The tensor as planes x rows x cols for elementwise work."""
        if len(self.shape) == 4:
            n, c, h, w = self.shape
            hp, wp = self.hw_padded
            return View3(n * c, h, w, self.addr_of(0, 0, self.pads[0], self.pads[1]), hp * wp, wp,
                         "logical")
        cols = self.shape[-1] if self.shape else 1
        planes = int(np.prod(self.shape[:-1])) if len(self.shape) > 1 else 1
        return View3(planes, 1, cols, self.region.addr, cols, cols, "logical")

    def matrix(self) -> tuple[int, int, int]:
        """(addr, rows, cols) of an unpadded rank-2 (or rank-1) storage."""
        if self.padded or len(self.shape) > 2:
            raise CompileError(f"tensor {self.region.name!r} of shape {self.shape} is not a matrix")
        rows, cols = {0: (1, 1), 1: (1, self.shape[0] if self.shape else 1)}.get(
            len(self.shape), self.shape[:2])
        return self.region.addr, rows, cols

    def encode(self, arr: np.ndarray) -> list[tuple[Region, np.ndarray]]:
        """DRAM image(s) of the numpy value ``arr``."""
        arr = np.asarray(arr, np.float32).reshape(self.shape)
        if self.padded:
            pt, pl, pb, pr = self.pads
            arr = np.pad(arr, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        return [(self.region, arr.reshape(self.region.shape))]

    def decode(self, read: Reader) -> np.ndarray:
        """The numpy value from the region contents ``read(name)``."""
        raw = read(self.region.name).astype(np.float32)
        if self.padded:
            pt, pl, _, _ = self.pads
            n, c, h, w = self.shape
            return raw.reshape(n, c, *self.hw_padded)[:, :, pt:pt + h, pl:pl + w].copy()
        return raw.reshape(self.shape)


@dataclass(frozen=True)
class TapMajor:
    """A conv weight-shaped tensor ``[Co, Ci, kh, kw]`` stored as ``[kh*kw, Co, Ci]``."""

    region: Region
    shape: tuple[int, int, int, int]

    KIND: ClassVar[str] = "tap_major"

    def to_json(self) -> dict[str, Any]:
        """The storage as JSON (regions by name), for a program file's manifest."""
        return {"kind": self.KIND, "region": self.region.name, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: dict[str, Any], region_of: RegionOf) -> "TapMajor":
        """The storage written by :meth:`to_json`; ``region_of`` looks regions up by name."""
        return cls(region_of(d["region"]), tuple(d["shape"]))

    @property
    def regions(self) -> tuple[Region, ...]:
        """The DRAM regions of this storage."""
        return (self.region,)

    @property
    def taps(self) -> int:
        """kh * kw."""
        return self.shape[2] * self.shape[3]

    def tap_addr(self, tap: int) -> int:
        """Byte address of tap ``tap``'s ``Co x Ci`` matrix."""
        return self.region.addr + tap * self.shape[0] * self.shape[1] * 4

    def view3(self) -> View3:
        """The tensor as (taps*Co) x 1 x Ci, in tap order."""
        co, ci = self.shape[:2]
        return View3(self.taps * co, 1, ci, self.region.addr, ci, ci, "taps")

    def encode(self, arr: np.ndarray) -> list[tuple[Region, np.ndarray]]:
        """DRAM image of the numpy value ``arr`` (shape ``[Co, Ci, kh, kw]``)."""
        co, ci = self.shape[:2]
        t = np.asarray(arr, np.float32).transpose(2, 3, 0, 1).reshape(self.taps, co, ci)
        return [(self.region, t)]

    def decode(self, read: Reader) -> np.ndarray:
        """The ``[Co, Ci, kh, kw]`` value from the region contents."""
        co, ci, kh, kw = self.shape
        return read(self.region.name).reshape(kh, kw, co, ci).transpose(2, 3, 0, 1).copy()


@dataclass(frozen=True)
class Compressed:
    """A weight pruned N:M along ``axis`` (1: Ci, 0: Co), stored per tap in the SAT format."""

    values: Region
    indices: Region
    shape: tuple[int, ...]
    n: int
    m: int
    axis: int

    KIND: ClassVar[str] = "compressed"

    def to_json(self) -> dict[str, Any]:
        """The storage as JSON (regions by name), for a program file's manifest."""
        return {"kind": self.KIND, "values": self.values.name, "indices": self.indices.name,
                "shape": list(self.shape), "n": self.n, "m": self.m, "axis": self.axis}

    @classmethod
    def from_json(cls, d: dict[str, Any], region_of: RegionOf) -> "Compressed":
        """The storage written by :meth:`to_json`; ``region_of`` looks regions up by name."""
        return cls(region_of(d["values"]), region_of(d["indices"]), tuple(d["shape"]),
                   int(d["n"]), int(d["m"]), int(d["axis"]))

    @property
    def regions(self) -> tuple[Region, ...]:
        """The DRAM regions of this storage."""
        return (self.values, self.indices)

    @property
    def taps(self) -> int:
        """kh * kw (1 for a linear weight)."""
        return int(np.prod(self.shape[2:])) if len(self.shape) > 2 else 1

    @property
    def outer(self) -> int:
        """Compressed rows per tap: Co when grouped along Ci, Ci when grouped along Co."""
        return self.shape[0] if self.axis == 1 else self.shape[1]

    @property
    def length(self) -> int:
        """The grouped (reduction) axis length."""
        return self.shape[1] if self.axis == 1 else self.shape[0]

    @property
    def val_cols(self) -> int:
        """Values per compressed row."""
        return groups(self.length, self.m) * self.n

    @property
    def idx_cols(self) -> int:
        """Index bytes per compressed row."""
        return row_bytes(self.length, self.n, self.m)

    @property
    def val_dtype(self) -> str:
        """Element type of the values region."""
        return self.values.dtype

    def tap_matrices(self, arr: np.ndarray) -> np.ndarray:
        """``[taps, Co, Ci]`` tap matrices of a dense weight of :attr:`shape`."""
        co, ci = self.shape[:2]
        a = np.asarray(arr, np.float32).reshape(co, ci, self.taps)
        return a.transpose(2, 0, 1)

    def encode(self, arr: np.ndarray) -> list[tuple[Region, np.ndarray]]:
        """Compress (prune) the dense numpy value ``arr`` as SORE would."""
        vals, idx = [], []
        for t in self.tap_matrices(arr):
            v, i = compress_rows(t, self.n, self.m, self.axis, self.val_dtype)
            vals.append(v)
            idx.append(i)
        return [(self.values, np.concatenate(vals)), (self.indices, np.concatenate(idx))]

    def decode(self, read: Reader) -> np.ndarray:
        """The dense (pruned) value rebuilt from values and indices."""
        vals = read(self.values.name).astype(np.float32).reshape(self.taps, self.outer, -1)
        idx = read(self.indices.name).reshape(self.taps, self.outer, -1)
        taps = [decompress_rows(v, i, self.length, self.n, self.m) for v, i in zip(vals, idx)]
        t = np.stack([x if self.axis == 1 else x.T for x in taps])       # [taps, Co, Ci]
        return t.transpose(1, 2, 0).reshape(self.shape).copy()


@dataclass(frozen=True)
class OneHot:
    """int64 labels ``[B]`` stored as fp32 one-hot rows ``[B, classes]``; a label equal to
    ``ignore_index`` (a loss's, outside ``[0, classes)``) is stored as a row of zeros."""

    region: Region
    classes: int
    ignore_index: int | None = None

    KIND: ClassVar[str] = "one_hot"

    def to_json(self) -> dict[str, Any]:
        """The storage as JSON (regions by name), for a program file's manifest."""
        d = {"kind": self.KIND, "region": self.region.name, "classes": self.classes}
        return d if self.ignore_index is None else {**d, "ignore_index": self.ignore_index}

    @classmethod
    def from_json(cls, d: dict[str, Any], region_of: RegionOf) -> "OneHot":
        """The storage written by :meth:`to_json`; ``region_of`` looks regions up by name."""
        ignore = d.get("ignore_index")
        return cls(region_of(d["region"]), int(d["classes"]), None if ignore is None else int(ignore))

    @property
    def regions(self) -> tuple[Region, ...]:
        """The DRAM regions of this storage."""
        return (self.region,)

    def kept(self, y: np.ndarray) -> np.ndarray:
        """Mask of the flat labels ``y`` that are not ``ignore_index``."""
        return y != self.ignore_index if self.ignore_index is not None else np.ones(y.shape, bool)

    def encode(self, arr: np.ndarray) -> list[tuple[Region, np.ndarray]]:
        """One-hot rows of the labels ``arr`` (zero rows for ignored labels)."""
        y = np.asarray(arr).astype(np.int64).reshape(-1)
        rows = np.flatnonzero(self.kept(y))
        if rows.size and (y[rows].min() < 0 or y[rows].max() >= self.classes):
            also = "" if self.ignore_index is None else f" or the ignore index {self.ignore_index}"
            raise CompileError(f"labels must lie in [0, {self.classes}){also}, got range "
                               f"[{y[rows].min()}, {y[rows].max()}]")
        out = np.zeros(self.region.shape, np.float32)
        out[rows, y[rows]] = 1.0
        return [(self.region, out)]

    def decode(self, read: Reader) -> np.ndarray:
        """The labels back from the one-hot rows (zero rows: ``ignore_index``)."""
        hot = read(self.region.name)
        y = hot.argmax(axis=1).astype(np.int64)
        if self.ignore_index is not None:
            y[hot.max(axis=1) == 0] = self.ignore_index
        return y


Storage = Dense | TapMajor | Compressed | OneHot

STORAGE_KINDS: dict[str, type[Storage]] = {c.KIND: c for c in (Dense, TapMajor, Compressed, OneHot)}


def storage_from_json(d: dict[str, Any], region_of: RegionOf) -> Storage:
    """The storage of a manifest entry, by its ``"kind"`` tag (:data:`STORAGE_KINDS`)."""
    kind = d.get("kind")
    cls = STORAGE_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProgramFileError(f"program manifest names unknown storage kind {kind!r}; known kinds: "
                               f"{sorted(STORAGE_KINDS)}; fix: recompile with `satc compile`")
    return cls.from_json(d, region_of)


class Arena:
    """Per-node bump allocator over a window of each on-chip buffer (:func:`buffer_windows`).

    ``from_top`` allocates downwards from the end of the window (odd nodes),
    so the tiles of consecutive nodes occupy different addresses when both
    fit. Lowerings that stream a tensor through chunk tiles size the chunks
    by :meth:`free_bytes`, which keeps them within the node's half of the
    window: the next node then loads its first tiles while this one still
    runs, instead of waiting for its last chunk to be read (a WAR hazard on
    shared addresses). Overflow raises CompileError naming the node and the fix.
    """

    def __init__(self, cfg: HardwareConfig, where: str, from_top: bool, update: bool = False) -> None:
        self.cfg = cfg
        self.where = where
        self.from_top = from_top
        self.update = update
        self.window = buffer_windows(cfg, update)
        self.used = {b: 0 for b in BUFFERS}

    def alloc(self, buf: str, nbytes: int, what: str) -> int:
        """Byte address of a fresh ``nbytes`` tile in ``buf``."""
        size = align(max(nbytes, 1))
        lo, hi = self.window[buf]
        cap = hi - lo
        if self.used[buf] + size > cap:
            need = buffer_bytes_to_fit(self.cfg, buf, self.used[buf] + size, self.update)
            raise CompileError(
                f"{self.where}: {what} needs {size} more bytes of the {buf} buffer "
                f"({self.used[buf]} in use of the {cap} this node may use, "
                f"{self.cfg.buffer_bytes[buf]} in {self.cfg.name}); fix: raise "
                f"{buf}_buffer_bytes to at least {need} in the hardware config, or reduce the batch size")
        addr = hi - self.used[buf] - size if self.from_top else lo + self.used[buf]
        self.used[buf] += size
        return addr

    def free_bytes(self, buf: str) -> int:
        """Bytes of ``buf`` this node should size streaming tiles to: what is left of its
        half of the window, or, once it holds half or more, all that is left."""
        lo, hi = self.window[buf]
        left = hi - lo - self.used[buf]
        share = (hi - lo) // 2 - self.used[buf]
        return share if share > 0 else left
