"""How the compiler partitions the on-chip buffers between nodes.

Weight-update nodes (the optimizer, the next step's N:M pre-generation) get
the top 1/:data:`UPDATE_SHARE` of every buffer to themselves; every other
node allocates below it (the GEMM tiling budget, :func:`main_buffer_bytes`).
"""

from __future__ import annotations

from satc.backends.sat.config import BUFFER_ALIGN_BYTES, HardwareConfig

#: The weight-update slice is 1/UPDATE_SHARE of each buffer.
UPDATE_SHARE = 8
ALIGN = BUFFER_ALIGN_BYTES  # allocation alignment (bytes) of on-chip tiles and DRAM regions


def align(nbytes: int) -> int:
    """``nbytes`` rounded up to a multiple of :data:`ALIGN`."""
    return -(-nbytes // ALIGN) * ALIGN


def buffer_windows(cfg: HardwareConfig, update: bool) -> dict[str, tuple[int, int]]:
    """The ``[lo, hi)`` byte window of each buffer a node's arena allocates from.

    The weight updates of a layer need only its gradient, which BP finishes
    long before the step ends; in their own slice of the buffers they share
    no address with the forward and backward nodes, so no buffer hazard ties
    them to the end of the program and the scheduler can overlap them with
    the rest of BP."""
    out = {}
    for b, size in cfg.buffer_bytes.items():
        cut = _window_bytes(size, update=False)
        out[b] = (cut, size) if update else (0, cut)
    return out


def main_buffer_bytes(cfg: HardwareConfig) -> dict[str, int]:
    """Bytes of each buffer the nodes other than weight updates may use (the tiling budget)."""
    return {b: hi - lo for b, (lo, hi) in buffer_windows(cfg, update=False).items()}


def buffer_bytes_to_fit(cfg: HardwareConfig, buf: str, nbytes: int, update: bool = False) -> int:
    """The smallest ``<buf>_buffer_bytes`` (a multiple of :data:`ALIGN`, as the config requires)
    whose window (:func:`buffer_windows`) holds ``nbytes`` (for the fix of an out-of-room error)."""
    lo, hi = buffer_windows(cfg, update)[buf]
    size = max(ALIGN, align(nbytes * cfg.buffer_bytes[buf] // (hi - lo)) - UPDATE_SHARE * ALIGN)
    while _window_bytes(size, update) < nbytes:
        size += ALIGN
    return size


def _window_bytes(size: int, update: bool) -> int:
    """Bytes of a ``size``-byte buffer in the weight-update slice (``update``) or below it."""
    share = size // UPDATE_SHARE // ALIGN * ALIGN
    return share if update else size - share
