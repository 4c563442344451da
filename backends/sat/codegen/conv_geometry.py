"""Convolution geometry shared by the tile plan and the conv lowerings.

:func:`bp_phases` splits the input gradient of a strided convolution into
stride-1 correlations, one per output phase; the tile plan needs the tap
counts of the phases (the taps one C tile accumulates) and the lowering the
taps and window shifts themselves.
"""

from __future__ import annotations

from satc.ir.graph import Node


def bp_phases(node: Node) -> tuple[int, int, list[tuple[int, int, list[tuple[int, int, int]]]]]:
    """The input gradient of a stride-(sh, sw) conv as sh*sw stride-1 correlations.

    Output phase (rho, sig) holds ``dX[sh*I + rho, sw*J + sig]`` for I < Hm = ceil(H/sh),
    J < Wm = ceil(W/sw) (rows past H are computed and dropped). It sums, over the taps
    (u, v) with u = rho + pt (mod sh) and v = sig + pl (mod sw),
    ``W_uv^T dY[I + di, J + dj]`` with di = (rho + pt - u) / sh, dj = (sig + pl - v) / sw.
    Returns (Hm, Wm, [(rho, sig, [(tap, di, dj)])]); stride 1 is the single phase (0, 0)
    with every tap, the flipped-kernel correlation.
    """
    sh, sw = node.attrs["stride"]
    pt, pl = node.attrs["padding"][:2]
    kh, kw = node.inputs[1].shape[2:]
    xs = node.attrs["input_shape"]
    out = []
    for rho in range(sh):
        for sig in range(sw):
            taps = [(u * kw + v, (rho + pt - u) // sh, (sig + pl - v) // sw)
                    for u in range(kh) for v in range(kw)
                    if (rho + pt - u) % sh == 0 and (sig + pl - v) % sw == 0]
            if taps:
                out.append((rho, sig, taps))
    return -(-xs[2] // sh), -(-xs[3] // sw), out
