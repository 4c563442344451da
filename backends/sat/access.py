"""What each instruction reads and writes, and the static checks on its fields.

:func:`accesses` turns one instruction into a list of :class:`Access` (memory
space, byte offset, shape, byte strides, dtype, read/write) -- the single
description the emulator uses for bounds and alignment checks, for tracking
which bytes hold produced data, and for building numpy views. :func:`check`
returns the reason an instruction cannot run on a config, or None.
"""

from __future__ import annotations

from operator import itemgetter

import numpy as np

from satc.backends.sat.config import HardwareConfig
from satc.backends.sat.isa import NP_DTYPES, Instruction
from satc.backends.sat.nmformat import groups, row_bytes
from satc.backends.sat.vecfuncs import VEC_FUNC_BY_NAME, pooled_shape
from satc.backends.sat.wuve import HP_WORDS

FLOATS = ("fp32", "fp16")
FP32 = NP_DTYPES["fp32"]
U8 = NP_DTYPES["u8"]


class Access(tuple):
    """One strided tile an instruction touches: ``space`` is 'dram' or a buffer name.

    Immutable (a tuple of its fields and its extent); ``Access(role, space, offset, shape,
    strides, dtype, write)`` with byte strides. The extent is computed once, when it is made
    (every consumer reads it; a frozen dataclass with a cached extent took three times as
    long to build, some 10^5 per compiled step).
    """

    __slots__ = ()

    def __new__(cls, role: str, space: str, offset: int, shape: tuple[int, ...],
                strides: tuple[int, ...], dtype: np.dtype, write: bool) -> "Access":
        hi = offset + dtype.itemsize
        for d, st in zip(shape, strides):
            hi += (d - 1) * st
        return tuple.__new__(cls, (role, space, offset, shape, strides, dtype, write, (offset, hi)))

    def __getnewargs__(self) -> tuple:
        return tuple(self[:7])

    role = property(itemgetter(0), doc="What the tile is to its instruction ('a', 'dram', 'd', ...).")
    space = property(itemgetter(1), doc="'dram' or a buffer name.")
    offset = property(itemgetter(2), doc="Byte offset of the first element.")
    shape = property(itemgetter(3), doc="Elements per dimension.")
    strides = property(itemgetter(4), doc="Byte stride per dimension.")
    dtype = property(itemgetter(5), doc="Element type (numpy).")
    write = property(itemgetter(6), doc="Whether the instruction writes the tile.")
    extent = property(itemgetter(7), doc="Half-open byte range [lo, hi) covering every element.")

    @property
    def bytes_key(self) -> tuple:
        """What identifies the bytes it touches: equal keys, equal bytes (dtype aside)."""
        return self[1], self[2], self[3], self[4], self[5].itemsize

    def __repr__(self) -> str:
        return (f"Access(role={self.role!r}, space={self.space!r}, offset={self.offset}, "
                f"shape={self.shape}, strides={self.strides}, dtype={self.dtype}, "
                f"write={self.write})")


def _tile(role: str, space: str, addr: int, shape: tuple[int, ...], row_stride: int, dtype: np.dtype,
          write: bool = False) -> Access:
    """A 2-D tile (or 1-D vector) with row stride in elements."""
    s = dtype.itemsize
    strides = (row_stride * s, s) if len(shape) == 2 else (s,)
    return Access(role, space, addr, shape, strides, dtype, write)


def compressed_shape(ins: Instruction, length: int) -> tuple[int, int]:
    """(values per row, index bytes per row) of an N:M compressed operand."""
    return groups(length, ins.m) * ins.n, row_bytes(length, ins.n, ins.m)


def check(ins: Instruction, cfg: HardwareConfig) -> str | None:
    """The reason ``ins`` is invalid on ``cfg`` (beyond memory bounds), or None."""
    op = ins.op
    if op in ("load", "store"):
        if min(ins.planes, ins.rows, ins.cols) < 1:
            return "empty tile: planes, rows and cols must be >= 1"
    elif op == "gemm":
        if min(ins.mt, ins.nt, ins.k) < 1:
            return "empty GEMM: mt, nt and k must be >= 1"
        if ins.dataflow not in cfg.dataflows:
            return f"dataflow {ins.dataflow} is not supported by {cfg.name} ({cfg.dataflows})"
        if ins.a_dtype not in FLOATS or ins.b_dtype not in FLOATS:
            return "GEMM operands must be fp32 or fp16"
        if ins.n == 0 and ins.m != 0:
            return f"dense GEMM (n=0) must have m=0, got m={ins.m}"
        if ins.n > 0:
            if (ins.n, ins.m) not in cfg.nm_patterns:
                return (f"unsupported N:M {ins.n}:{ins.m} for {cfg.name}; "
                        f"supported: {', '.join(f'{n}:{m}' for n, m in cfg.nm_patterns)}")
            if (ins.trans_a and not ins.sparse_b) or (ins.trans_b and ins.sparse_b):
                return "the compressed operand cannot be transposed (its groups lie along k)"
    elif op == "vec":
        f = VEC_FUNC_BY_NAME[ins.func]
        if min(ins.rows, ins.cols) < 1:
            return "empty tile: rows and cols must be >= 1"
        if "u8" in (ins.s0_dtype, ins.s1_dtype, ins.d_dtype):
            return "vector operands must be fp32 or fp16"
        if "pooled" in (f.out_shape, f.s1_shape):
            if min(ins.kh, ins.kw, ins.sh, ins.sw) < 1 or ins.kh > ins.rows or ins.kw > ins.cols:
                return (f"{ins.func} needs 1 <= kh <= rows, 1 <= kw <= cols and strides >= 1, "
                        f"got kh={ins.kh} kw={ins.kw} sh={ins.sh} sw={ins.sw}")
            if ins.bcast != "none":
                return f"{ins.func} takes no broadcast"
        if f.out_shape == "transposed" and (ins.axis != 1 or ins.accumulate):
            return f"{ins.func} works along axis 1 without accumulate"
        if f.s1_shape == "pair" and (ins.bcast not in ("row", "col") or ins.axis != 1):
            return f"{ins.func} reads a pair per row (bcast col) or per column (bcast row), axis 1"
    elif op == "wuve":
        if ins.length < 1:
            return "empty update: length must be >= 1"
        if ins.g_dtype not in FLOATS:
            return "the gradient must be fp32 or fp16"
    elif op == "sore":
        if min(ins.rows, ins.cols) < 1:
            return "empty tile: rows and cols must be >= 1"
        if (ins.n, ins.m) not in cfg.nm_patterns:
            return (f"unsupported N:M {ins.n}:{ins.m} for {cfg.name}; "
                    f"supported: {', '.join(f'{n}:{m}' for n, m in cfg.nm_patterns)}")
        if ins.src_dtype not in FLOATS or ins.val_dtype not in FLOATS:
            return "SORE source and values must be fp32 or fp16"
    return None


def accesses(ins: Instruction) -> list[Access]:
    """Every tile ``ins`` touches, reads before writes (computed once per instruction object)."""
    known = ins.__dict__.get(_KNOWN)
    if known is None:
        known = ins.__dict__[_KNOWN] = tuple(_ACCESS[ins.op](ins))
    return list(known)


_KNOWN = "_accesses"       # where an instruction object keeps its accesses (fields never start with _)


def _dma(ins: Instruction) -> list[Access]:
    dt = NP_DTYPES[ins.dtype]
    s = dt.itemsize
    shape = (ins.planes, ins.rows, ins.cols)
    dram_strides = (ins.dram_plane_stride * s, ins.dram_row_stride * s, s)
    buf_strides = (ins.buf_plane_stride * s, ins.buf_row_stride * s, s)
    if ins.planes == 1:     # a 2-D view: numpy copies those much faster than (1, r, c)
        shape, dram_strides, buf_strides = shape[1:], dram_strides[1:], buf_strides[1:]
    dram = Access("dram", "dram", ins.dram_addr, shape, dram_strides, dt, ins.op == "store")
    buf = Access("buf", ins.buf, ins.buf_addr, shape, buf_strides, dt, ins.op == "load")
    return [dram, buf] if ins.op == "load" else [buf, dram]


def _operand(ins: Instruction, name: str, rows: int, cols: int, trans: int, sparse: bool) -> list[Access]:
    buf, addr, stride = getattr(ins, f"{name}_buf"), getattr(ins, f"{name}_addr"), getattr(ins, f"{name}_stride")
    dt = NP_DTYPES[getattr(ins, f"{name}_dtype")]
    if not sparse:
        shape = (cols, rows) if trans else (rows, cols)
        return [_tile(name, buf, addr, shape, stride, dt)]
    outer = rows if name == "a" else cols
    vals, nbytes = compressed_shape(ins, ins.k)
    return [_tile(name, buf, addr, (outer, vals), stride, dt),
            _tile("idx", ins.idx_buf, ins.idx_addr, (outer, nbytes), ins.idx_stride, U8)]


def _gemm(ins: Instruction) -> list[Access]:
    sparse = ins.n > 0
    out = _operand(ins, "a", ins.mt, ins.k, ins.trans_a, sparse and not ins.sparse_b)
    out += _operand(ins, "b", ins.k, ins.nt, ins.trans_b, sparse and bool(ins.sparse_b))
    c = _tile("c", "acc", ins.c_addr, (ins.mt, ins.nt), ins.c_stride, FP32)
    if ins.accumulate:
        out.append(c)
    out.append(Access(c.role, c.space, c.offset, c.shape, c.strides, c.dtype, True))
    return out


def vec_shapes(ins: Instruction) -> tuple[tuple[int, int], tuple[int, int]]:
    """(s1 shape, destination shape) of a vec instruction."""
    f = VEC_FUNC_BY_NAME[ins.func]
    r, c = ins.rows, ins.cols
    pooled = pooled_shape(r, c, ins.kh, ins.kw, ins.sh, ins.sw) if "pooled" in (f.out_shape, f.s1_shape) \
        else None
    if f.s1_shape == "pair":
        s1 = (2, c) if ins.bcast == "row" else (r, 2)
    else:
        s1 = pooled if f.s1_shape == "pooled" else {"none": (r, c), "row": (1, c), "col": (r, 1),
                                                      "scalar": (1, 1)}[ins.bcast]
    d = {"same": (r, c), "pooled": pooled, "reduce": (r, 1) if ins.axis == 1 else (1, c),
         "reduce_pair": (r, 2) if ins.axis == 1 else (2, c),
         "transposed": (c, r)}[f.out_shape]
    return s1, d


def _vec(ins: Instruction) -> list[Access]:
    f = VEC_FUNC_BY_NAME[ins.func]
    s1_shape, d_shape = vec_shapes(ins)
    out = []
    if "s0" in f.sources:
        out.append(_tile("s0", ins.s0_buf, ins.s0_addr, (ins.rows, ins.cols), ins.s0_stride,
                         NP_DTYPES[ins.s0_dtype]))
    if "s1" in f.sources:
        out.append(_tile("s1", ins.s1_buf, ins.s1_addr, s1_shape, ins.s1_stride, NP_DTYPES[ins.s1_dtype]))
    d = _tile("d", ins.d_buf, ins.d_addr, d_shape, ins.d_stride, NP_DTYPES[ins.d_dtype])
    if ins.accumulate:
        out.append(d)
    out.append(Access(d.role, d.space, d.offset, d.shape, d.strides, d.dtype, True))
    return out


def _wuve(ins: Instruction) -> list[Access]:
    n = (ins.length,)
    state = ["w", "m"] + (["v"] if ins.func == "adamw" else [])
    out = [_tile(s, getattr(ins, f"{s}_buf"), getattr(ins, f"{s}_addr"), n, 1, FP32) for s in state]
    out.append(_tile("g", ins.g_buf, ins.g_addr, n, 1, NP_DTYPES[ins.g_dtype]))
    out.append(_tile("hp", ins.hp_buf, ins.hp_addr, (HP_WORDS,), 1, FP32))
    out += [Access(a.role, a.space, a.offset, a.shape, a.strides, a.dtype, True) for a in out[:len(state)]]
    if ins.w16:
        out.append(_tile("w16", ins.w16_buf, ins.w16_addr, n, 1, NP_DTYPES["fp16"], True))
    return out


def _sore(ins: Instruction) -> list[Access]:
    outer, length = (ins.rows, ins.cols) if ins.axis == 1 else (ins.cols, ins.rows)
    vals, nbytes = compressed_shape(ins, length)
    return [_tile("src", ins.src_buf, ins.src_addr, (ins.rows, ins.cols), ins.src_stride,
                  NP_DTYPES[ins.src_dtype]),
            _tile("val", ins.val_buf, ins.val_addr, (outer, vals), ins.val_stride,
                  NP_DTYPES[ins.val_dtype], True),
            _tile("idx", ins.idx_buf, ins.idx_addr, (outer, nbytes), ins.idx_stride, U8, True)]


_ACCESS = {"load": _dma, "store": _dma, "gemm": _gemm, "vec": _vec, "wuve": _wuve, "sore": _sore,
           "nop": lambda ins: []}
