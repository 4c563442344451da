"""How the emulator's GEMM kernels get their operands as fp32 matrices BLAS can multiply.

An operand is used as stored (an fp32 view into a buffer) or must be
converted first: an N:M tile rebuilt from values + packed indices, an fp16
tile widened, an fp32 tile rounded to fp16 in mixed precision.
:func:`conversions` lists a GEMM's conversions with the key that identifies
how it reads memory (for :mod:`~satc.backends.sat.operand_cache`);
:func:`dense_converter` and :func:`nm_converter` build one conversion into
arrays from an :class:`Arrays` allocator, returning ``(convert, result)``:
``convert()`` rewrites ``result`` (always the same array) from memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from satc.backends.sat.access import Access
from satc.backends.sat.fp16 import fp16_rounder, fp16_widener
from satc.backends.sat.isa import Instruction
from satc.backends.sat.nmformat import IndexOffsets, groups
from satc.backends.sat.operand_cache import access_key

F16, F32 = np.dtype(np.float16), np.dtype(np.float32)
Convert = Callable[[], None]


class Arrays(Protocol):
    """Allocator of a conversion's arrays: ``out`` holds its result, ``scratch`` is transient."""

    def out(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The array the conversion's result lives in."""
        ...

    def scratch(self, tag: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A work array used only while the conversion runs (``tag`` names its use)."""
        ...


@dataclass(frozen=True)
class Conversion:
    """One GEMM operand that is converted before the multiply."""

    name: str                       # 'a' or 'b'
    key: tuple                      # how the bytes are read (equal keys: equal results)
    reads: tuple[Access, ...]       # the accesses whose bytes it reads


def compressed_operand(ins: Instruction) -> str | None:
    """'a' or 'b': the GEMM's N:M operand, or None for a dense GEMM."""
    if ins.n == 0:
        return None
    return "b" if ins.sparse_b else "a"


def conversions(ins: Instruction, reads: dict[str, Access], mixed: bool) -> list[Conversion]:
    """The operands of GEMM ``ins`` (accesses ``reads`` by role) that need converting."""
    out = []
    for name, trans in (("a", ins.trans_a), ("b", ins.trans_b)):
        a = reads[name]
        if compressed_operand(ins) == name:
            key = ("nm", name, ins.n, ins.m, ins.k, mixed, access_key(a), access_key(reads["idx"]))
            out.append(Conversion(name, key, (a, reads["idx"])))
        elif a.dtype == F16 or mixed:
            out.append(Conversion(name, ("dense", trans, mixed, access_key(a)), (a,)))
    return out


def dense_converter(x: np.ndarray, mixed: bool, arrays: Arrays, tag: str
                    ) -> tuple[Convert, np.ndarray]:
    """fp16 storage widened exactly; fp32 rounded to fp16 values (mixed precision).

    A transposed view (unit stride along its first axis) is converted in
    storage order and the result transposed, so conversions walk memory linearly.
    """
    if x.ndim == 2 and x.strides[0] == x.itemsize and x.strides[1] != x.itemsize:
        convert, result = dense_converter(x.T, mixed, arrays, tag)
        return convert, result.T
    out = arrays.out(x.shape, F32)
    if x.dtype == F16:
        return fp16_widener(x, out), out
    return fp16_rounder(x, out, arrays.scratch(f"{tag}:half", x.shape, F16)), out


def nm_converter(ins: Instruction, vals: np.ndarray, idx: Access, memory: np.ndarray, mixed: bool,
                 transpose: bool, arrays: Arrays, tag: str) -> tuple[Convert, np.ndarray]:
    """Dense tile rebuilt from compressed values ``vals`` and the packed indices at ``idx``.

    The result is (outer, k), or (k, outer) C-ordered when ``transpose`` (the
    layout BLAS wants for a compressed B).
    """
    outer, count = vals.shape
    n, m, k = ins.n, ins.m, ins.k
    g = groups(k, m)
    group_start = np.arange(count, dtype=np.intp) // n * m
    rows = np.arange(outer, dtype=np.intp)
    # flat position of in-group index 0 of each value, and the flat step of one index
    if transpose:
        base, step = group_start[None, :] * outer + rows[:, None], outer
        dense = arrays.out((g * m, outer), F32)
    else:
        base, step = rows[:, None] * (g * m) + group_start[None, :], 1
        dense = arrays.out((outer, g * m), F32)
    offsets = IndexOffsets(memory, idx.offset, idx.strides[0], outer, count, m, step,
                           out=arrays.scratch(f"{tag}:offsets", (outer, count), np.dtype(np.intp)))
    dense_flat = dense.reshape(-1)
    convert_vals, values = _values(vals, mixed, arrays, tag)

    def convert() -> None:
        flat = np.add(offsets(), base, out=offsets.out)
        convert_vals()
        dense.fill(0)
        dense_flat[flat] = values
    return convert, (dense[:k] if transpose else dense[:, :k])


def _values(vals: np.ndarray, mixed: bool, arrays: Arrays, tag: str) -> tuple[Convert, np.ndarray]:
    """The compressed values as contiguous fp32 (numpy scatters from contiguous arrays 2x faster)."""
    if vals.dtype != F16 and not mixed and vals.flags.c_contiguous:
        return (lambda: None), vals
    out = arrays.scratch(f"{tag}:values", vals.shape, F32)
    if vals.dtype == F16:
        return fp16_widener(vals, out), out
    if mixed:
        return fp16_rounder(vals, out, arrays.scratch(f"{tag}:values-half", vals.shape, F16)), out

    def copy() -> None:
        np.copyto(out, vals)
    return copy, out
