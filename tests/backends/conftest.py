"""Shared helpers for the SAT backend tests."""

from __future__ import annotations

import numpy as np
import pytest

from satc.backends.sat.config import load_hardware
from satc.backends.sat.isa import assemble, decode_all
from satc.backends.sat.program import Program, Region


@pytest.fixture(scope="session")
def small():
    """The tiny fp32 test config."""
    return load_hardware("sat-small")


@pytest.fixture(scope="session")
def asm_program():
    """The :func:`build_asm_program` helper, as a fixture."""
    return build_asm_program


def build_asm_program(cfg, text: str, regions: dict, dram_size: int = 1 << 16) -> Program:
    """A Program from assembly text and {name: (addr, ndarray | (shape, dtype))} regions."""
    regs = []
    for name, (addr, data) in regions.items():
        if isinstance(data, np.ndarray):
            dtype = {np.float32: "fp32", np.float16: "fp16", np.uint8: "u8"}[data.dtype.type]
            regs.append(Region(name, addr, data.shape, dtype, data.tobytes()))
        else:
            shape, dtype = data
            regs.append(Region(name, addr, shape, dtype))
    return Program(cfg, tuple(decode_all(assemble(text))), tuple(regs), dram_size)
