"""Zero halos of pooled padded activations: few, long contiguous runs."""

from __future__ import annotations

import pytest

import numpy as np

from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.codegen.memory import Dense
from satc.backends.sat.codegen.plan import (
    HALO_DMA_BYTES,
    _halo_runs,
    _plane_halo_bytes,
    _zero_whole_planes,
    zero_halos,
)
from satc.backends.sat.config import DEFAULT_HARDWARE, load_hardware
from satc.backends.sat.program import Region


class _Ctx:
    """The part of LowerCtx that zero_halos uses: config, builder, a zero row, a vec tile."""

    def __init__(self, b: ProgramBuilder, cfg) -> None:
        self.b, self.cfg = b, cfg

    def zeros(self, width: int) -> Region:
        return self.b.alloc(f"zeros/{width}", width, init=np.zeros(width, np.float32))

    def alloc(self, buf: str, nbytes: int, what: str) -> int:
        return 0


@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (2, 0, 1, 3), (0, 2, 0, 2), (3, 1, 0, 0)])
def test_halo_runs_cover_exactly_the_padding_of_a_plane(pads):
    h, w = 4, 5
    s = Dense(Region("x", 0, (2, 3, h, w), "fp32"), (2, 3, h, w), pads)
    pt, pl, pb, pr = pads
    hp, wp = s.hw_padded
    halo = {r * wp + c for r in range(hp) for c in range(wp)
            if not (pt <= r < pt + h and pl <= c < pl + w)}
    (_, _, width), *runs = _halo_runs(s)
    covered = [off + r * wp + c for off, rows, cols in runs for r in range(rows) for c in range(cols)]
    assert sorted(covered) == sorted(halo)            # every halo element once, nothing else
    assert width == max(cols for _, _, cols in runs)


def test_halo_of_a_3x3_pad_1_plane_is_h_plus_1_runs():
    # 32x32 padded to 34x34: the top row and the first left pad (35 elements), 31 runs of
    # a right pad with the next left pad (2 elements), the last right pad and the bottom row
    s = Dense(Region("x", 0, (1, 1, 32, 32), "fp32"), (1, 1, 32, 32), (1, 1, 1, 1))
    assert _halo_runs(s)[1:] == [(0, 1, 35), (32 * 34 + 33, 1, 35), (34 + 33, 31, 2)]


def test_small_maps_zero_whole_planes():
    # 64 B bursts. 4x4 padded to 6x6: the halo runs are the top row + left pad (7 fp32, one
    # burst), the bottom (one burst) and 3 runs of 2 fp32 (a burst each) = 5 bursts, while
    # the whole plane is 36 fp32 = 144 B = 3 bursts: zero the plane
    small = Dense(Region("x", 0, (1, 1, 4, 4), "fp32"), (1, 1, 4, 4), (1, 1, 1, 1))
    assert not _zero_whole_planes(small, 16)          # 16 B bursts: 2 + 2 + 3 runs < 9 plane
    assert _zero_whole_planes(small, 64)
    # 8x8 -> 10x10: 1 + 1 + 7 = 9 bursts against 400 B = 7 bursts: the plane
    mid = Dense(Region("x", 0, (1, 1, 8, 8), "fp32"), (1, 1, 8, 8), (1, 1, 1, 1))
    assert _zero_whole_planes(mid, 64)
    # 16x16 -> 18x18: 1 + 1 + 15 = 17 bursts against 1296 B = 21 bursts: the halo runs
    big = Dense(Region("x", 0, (1, 1, 16, 16), "fp32"), (1, 1, 16, 16), (1, 1, 1, 1))
    assert not _zero_whole_planes(big, 64)


def test_plane_halo_bytes_count_whole_bursts():
    # 32x32 -> 34x34, 64 B bursts: top row + left pad 35 fp32 = 140 B -> 3 bursts, the same
    # at the bottom, 31 runs of 2 fp32 -> 1 burst each: (3 + 3 + 31) * 64 = 2368 B
    s = Dense(Region("x", 0, (2, 64, 32, 32), "fp32"), (2, 64, 32, 32), (1, 1, 1, 1))
    assert _plane_halo_bytes(s, False, 64) == 2368
    # whole planes: 34 * 34 fp32 = 4624 B -> 73 bursts
    assert _plane_halo_bytes(s, True, 64) == 73 * 64


def test_halo_stores_are_split_into_bounded_dmas():
    # 128 planes of 2368 B: HALO_DMA_BYTES // 2368 planes per DMA, 3 runs per plane chunk
    cfg = load_hardware(DEFAULT_HARDWARE)
    b = ProgramBuilder(cfg)
    s = Dense(b.alloc("x", (2, 64, 34, 34)), (2, 64, 32, 32), (1, 1, 1, 1))
    zero_halos(_Ctx(b, cfg), [s])
    stores = [i for i in b.instructions if i.op == "store"]
    step = HALO_DMA_BYTES // 2368
    assert step == 27
    assert len(stores) == 3 * -(-128 // step)                 # 5 plane chunks x 3 runs
    assert sorted({i.planes for i in stores}) == [128 - 4 * step, step]
    assert max(i.planes * 2368 for i in stores) <= HALO_DMA_BYTES
