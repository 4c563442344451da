"""Exact fp16 conversions for the emulator's mixed-precision GEMM operands.

numpy's float16 casts are scalar loops (about 5 ms per million elements on
this project's machines); torch's use the CPU's F16C conversion instructions
(about 0.15 ms), so both readers below convert through torch tensors that
share memory with the emulator's numpy views. Results equal numpy's exact
conversions bit for bit (round to nearest even, fp16 subnormals, overflow to
infinity, NaN kept, signed zeros).

* :func:`fp16_rounder`: reader of an fp32 view rounded to fp16 values (as fp32).
* :func:`fp16_widener`: reader of an fp16 view widened to fp32.

The conversions run on torch's intra-op thread pool; :func:`single_threaded`
pins it to one thread while the emulator runs (tiles are small, and BLAS
keeps its own threads busy between them).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np
import torch

Reader = Callable[[], np.ndarray]


def _shared(x: np.ndarray) -> torch.Tensor:
    """A torch tensor over ``x``'s memory (any non-negative strides)."""
    return torch.from_numpy(x)


def fp16_rounder(x: np.ndarray) -> Reader:
    """Reader returning fp32 view ``x``'s current contents rounded to fp16 precision and range."""
    src = _shared(x)
    half = torch.empty(x.shape, dtype=torch.float16)
    out = torch.empty(x.shape, dtype=torch.float32)
    out_np = out.numpy()

    def read() -> np.ndarray:
        half.copy_(src)
        out.copy_(half)
        return out_np
    return read


def fp16_widener(x: np.ndarray) -> Reader:
    """Reader returning fp16 view ``x``'s current contents as fp32."""
    src = _shared(x)
    out = torch.empty(x.shape, dtype=torch.float32)
    out_np = out.numpy()

    def read() -> np.ndarray:
        out.copy_(src)
        return out_np
    return read


def round_to_fp16(x: np.ndarray) -> np.ndarray:
    """fp32 ``x`` rounded to fp16 precision and range, as a new fp32 array."""
    return fp16_rounder(np.ascontiguousarray(x, np.float32))().copy()


def widen_fp16(x: np.ndarray) -> np.ndarray:
    """fp16 ``x`` as a new fp32 array."""
    return fp16_widener(np.ascontiguousarray(x, np.float16))().copy()


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with torch's intra-op pool at one thread, restoring it after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
