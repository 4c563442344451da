"""Exact fp16 conversions for the emulator's mixed-precision GEMM operands.

numpy's float16 casts are scalar loops (about 5 ms per million elements on
this project's machines); torch's use the CPU's F16C conversion instructions
(about 0.15 ms), so :func:`fp16_rounder` and :func:`fp16_widener` go through
torch tensors that share memory with the emulator's numpy arrays when torch
can be imported, and fall back to numpy's casts when it cannot (torch is
imported on first use, so importing the backend never needs it). Both give
the same bits: round to nearest even, fp16 subnormals, overflow to infinity,
NaN kept, signed zeros.

* :func:`fp16_rounder`: converter of an fp32 view to its fp16 values (as fp32).
* :func:`fp16_widener`: converter of an fp16 view to fp32.

Each returns a function that converts the view's current contents into the
caller's ``out`` array. The torch conversions run on torch's intra-op thread
pool; :func:`single_threaded` pins it to one thread while the emulator runs
(tiles are small, and BLAS keeps its own threads busy between them).
"""

from __future__ import annotations

import contextlib
import functools
from types import ModuleType
from typing import Callable, Iterator

import numpy as np

Convert = Callable[[], None]


@functools.cache
def _torch() -> ModuleType | None:
    """torch, or None where it cannot be imported."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_fp16_rounder(x: np.ndarray, out: np.ndarray, half: np.ndarray) -> Convert:
    """:func:`fp16_rounder` through torch (needs torch)."""
    torch = _torch()
    src, half_t, out_t = torch.from_numpy(x), torch.from_numpy(half), torch.from_numpy(out)

    def convert() -> None:
        half_t.copy_(src)
        out_t.copy_(half_t)
    return convert


def torch_fp16_widener(x: np.ndarray, out: np.ndarray) -> Convert:
    """:func:`fp16_widener` through torch (needs torch)."""
    torch = _torch()
    src, out_t = torch.from_numpy(x), torch.from_numpy(out)

    def convert() -> None:
        out_t.copy_(src)
    return convert


def numpy_fp16_rounder(x: np.ndarray, out: np.ndarray, half: np.ndarray) -> Convert:
    """:func:`fp16_rounder` with numpy's casts (the fallback without torch)."""
    def convert() -> None:
        with np.errstate(over="ignore", invalid="ignore"):
            np.copyto(half, x, casting="unsafe")
        np.copyto(out, half)
    return convert


def numpy_fp16_widener(x: np.ndarray, out: np.ndarray) -> Convert:
    """:func:`fp16_widener` with numpy's casts (the fallback without torch)."""
    def convert() -> None:
        np.copyto(out, x)
    return convert


def fp16_rounder(x: np.ndarray, out: np.ndarray, half: np.ndarray) -> Convert:
    """Converter writing fp32 view ``x`` rounded to fp16 into ``out`` (fp32; ``half``: fp16 scratch)."""
    return (torch_fp16_rounder if _torch() else numpy_fp16_rounder)(x, out, half)


def fp16_widener(x: np.ndarray, out: np.ndarray) -> Convert:
    """Converter writing fp16 view ``x`` as fp32 into ``out``."""
    return (torch_fp16_widener if _torch() else numpy_fp16_widener)(x, out)


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with torch's intra-op pool at one thread, restoring it after (no-op without torch)."""
    torch = _torch()
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
