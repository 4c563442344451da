"""Zero halos of pooled padded activations: few, long contiguous runs."""

from __future__ import annotations

import pytest

from satc.backends.sat.codegen.memory import Dense
from satc.backends.sat.codegen.plan import _halo_runs, _zero_whole_planes
from satc.backends.sat.program import Region


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
