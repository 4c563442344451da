"""Exact fp16 conversions for the emulator's mixed-precision GEMM operands.

numpy's float16 casts are scalar loops (about 5 ms per million elements on
this project's machines); torch's use the CPU's F16C conversion instructions
(about 0.15 ms), so both converters below go through torch tensors that
share memory with the emulator's numpy arrays. Results equal numpy's exact
conversions bit for bit (round to nearest even, fp16 subnormals, overflow to
infinity, NaN kept, signed zeros).

* :func:`fp16_rounder`: converter of an fp32 view to its fp16 values (as fp32).
* :func:`fp16_widener`: converter of an fp16 view to fp32.

Each returns a function that converts the view's current contents into the
caller's ``out`` array. The conversions run on torch's intra-op thread pool;
:func:`single_threaded` pins it to one thread while the emulator runs (tiles
are small, and BLAS keeps its own threads busy between them).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np
import torch

Convert = Callable[[], None]


def fp16_rounder(x: np.ndarray, out: np.ndarray, half: np.ndarray) -> Convert:
    """Converter writing fp32 view ``x`` rounded to fp16 into ``out`` (fp32; ``half``: fp16 scratch)."""
    src, half_t, out_t = torch.from_numpy(x), torch.from_numpy(half), torch.from_numpy(out)

    def convert() -> None:
        half_t.copy_(src)
        out_t.copy_(half_t)
    return convert


def fp16_widener(x: np.ndarray, out: np.ndarray) -> Convert:
    """Converter writing fp16 view ``x`` as fp32 into ``out``."""
    src, out_t = torch.from_numpy(x), torch.from_numpy(out)

    def convert() -> None:
        out_t.copy_(src)
    return convert


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with torch's intra-op pool at one thread, restoring it after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
