"""Zero halos of pooled padded tensors: the pool starts zero and no halo byte is ever written.

The unit test walks :class:`_Pool` by hand; the program test follows every write of a
compiled ResNet-18 (CIFAR, width 8) in issue order and proves that no instruction writes a
byte of a padded tensor's halo before that tensor's last reader has run (so every halo a
conv window reads is the pool's initial zero). test_compile_cnns checks the same programs
train like the reference interpreter.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import pytest
import torch

import satc
from satc.backends.sat.access import accesses
from satc.backends.sat.checker import check_program
from satc.backends.sat.codegen.memory import Dense
from satc.backends.sat.codegen.plan import _Pool
from satc.backends.sat.config import load_hardware
from satc.errors import CompileError
from satc.models import get_model


def test_pool_places_padded_tensors_where_their_halo_is_zero():
    """A padded tensor takes a free block an earlier tensor of its halo key held alone, else
    fresh bytes at the top; unpadded tensors take the best fit, and dirty the block."""
    pool = _Pool()
    key, other = ((4, 8, 10, 10), (1, 1, 1, 1)), ((4, 8, 12, 12), (2, 2, 2, 2))
    assert pool.alloc(3200, key) == 0
    assert pool.alloc(640) == 3200                     # an unpadded tensor
    assert pool.alloc(1280, other) == 3840
    pool.release(0, 3200)
    pool.release(3840, 1280)
    assert pool.alloc(3200, key) == 0                  # its own block: halo still zero
    assert pool.alloc(1280, key) == 5120               # other key's free block: top instead
    pool.release(0, 3200)
    assert pool.alloc(960) == 3840                     # best fit: 1280 B free at 3840
    assert pool.alloc(2880) == 0                       # unpadded tensor writes block 0
    pool.release(0, 2880)
    assert pool.alloc(3200, key) == 6400               # block 0 is dirty: the top
    assert pool.top == 9600


@lru_cache(maxsize=None)
def _resnet(sparsity: str):
    torch.manual_seed(0)
    return satc.compile(get_model("resnet18_cifar", width=8), example_inputs=(torch.randn(2, 3, 16, 16),),
                        sparsity=sparsity, hw="sat-small")


def _halo_mask(s: Dense, size: int) -> np.ndarray:
    """Bytes of DRAM (of ``size``) that hold the halo of ``s``."""
    n, c, h, w = s.shape
    pt, pl, _, _ = s.pads
    inside = np.ones((n, c) + s.hw_padded + (4,), bool)
    inside[:, :, pt:pt + h, pl:pl + w] = False
    mask = np.zeros(size, bool)
    mask[s.region.addr:s.region.addr + s.region.nbytes] = inside.reshape(-1)
    return mask


def test_no_instruction_writes_a_live_halo():
    prog = _resnet("bdwp:2:8")
    program = prog.program
    pool = program.region("#pool")
    assert pool.zero and pool.init is None
    last_reader: dict[str, int] = {}
    for sp in prog.spans:
        for v in sp.node.inputs:
            last_reader[v.name] = sp.end - 1
    padded = {k: s for k, s in prog.plan.storage.items() if isinstance(s, Dense) and s.padded
              and pool.addr <= s.region.addr < pool.addr + pool.nbytes}
    assert len({s.region.addr for s in padded.values()}) < len(padded)   # blocks are reused
    order = check_program(program).order
    position = {i: p for p, i in enumerate(order)}
    ends: dict[int, list[str]] = {}
    for k in padded:
        ends.setdefault(position[last_reader[k]], []).append(k)
    written = np.zeros(program.dram_size, np.uint8)
    checked = 0
    for p, i in enumerate(order):
        for a in accesses(program.instructions[i]):
            if a.write and a.space == "dram":
                np.ndarray(a.shape + (a.dtype.itemsize,), np.uint8, written, a.offset,
                           a.strides + (1,))[...] = 1
        for k in ends.get(p, ()):
            assert not written[_halo_mask(padded[k], program.dram_size)].any(), k
            checked += 1
    assert checked == len(padded) > 10


def test_a_step_larger_than_dram_is_refused_with_the_fix():
    cfg = load_hardware("sat-small")
    pool = _resnet("bdwp:2:8").program.region("#pool")
    small = dataclasses.replace(cfg, dram_bytes=pool.addr + pool.nbytes // 2)
    torch.manual_seed(0)
    with pytest.raises(CompileError, match=r"needs [\d.]+ MiB of DRAM .* more than dram_bytes .* "
                                           r"of sat-small; fix: a smaller batch"):
        satc.compile(get_model("resnet18_cifar", width=8), example_inputs=(torch.randn(2, 3, 16, 16),),
                     sparsity="bdwp:2:8", hw=small)
