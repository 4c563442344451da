"""Sharing of converted GEMM operands between instructions (an emulator-only speed-up).

A GEMM operand that must be converted before the multiply -- an N:M tile
rebuilt from values + packed indices, an fp16 tile widened to fp32, an fp32
tile rounded to fp16 in mixed precision -- is the same array every time the
same bytes are read the same way. Programs that keep a tile on chip and use
it for several GEMMs (weight-stationary loops over activation tiles, a tile
of A reused across the columns of C) would otherwise rebuild it on every
instruction.

The emulator runs instructions in one static issue order, so which reads see
unchanged bytes is known before running: :class:`OperandCache` walks that
order, recording each instruction's buffer writes (at 64-byte granularity:
a write near, not onto, an operand only costs a recomputation), and gives a
GEMM the result of an earlier GEMM's conversion when the operand key (how
the bytes are read) matches and no write touched those bytes since. Correctness does not depend on the contents; only the first
reader of each run of unchanged bytes converts, at run time, every run.
Results that are reused get arrays of their own; the others share pooled
arrays, so preparation memory does not grow with the program.
"""

from __future__ import annotations

from typing import Hashable, Iterable, Mapping

import numpy as np

from satc.backends.sat.access import Access

CHUNK = 64                       # bytes per write-tracking cell


def access_key(a: Access) -> tuple:
    """What identifies how an access reads memory: its bytes and their element type."""
    return a.bytes_key, a.dtype.str


class OperandCache:
    """Plans, in issue order, which GEMM operand conversions run and which reuse an earlier one.

    Walk the issue order once calling :meth:`visit` for each conversion of an
    instruction and :meth:`advance` after the instruction; then
    :meth:`source` names the conversion whose result each one uses (itself
    when it converts) and :meth:`reused` says whether a result is used again
    later (so it needs an array of its own rather than a pooled one).
    """

    def __init__(self, buffer_bytes: Mapping[str, int]) -> None:
        self._last_write = {b: np.full(-(-size // CHUNK), -1, np.int64)
                            for b, size in buffer_bytes.items()}
        self._entries: dict[Hashable, tuple[int, int]] = {}     # key -> (position, ticket)
        self._source: list[int] = []
        self._reused: set[int] = set()
        self._position = 0

    def visit(self, key: Hashable, reads: Iterable[Access]) -> int:
        """Ticket of a conversion ``key`` reading ``reads`` at the current issue position."""
        ticket = len(self._source)
        hit = self._entries.get(key)
        if hit is not None and all(self._unwritten_since(a, hit[0]) for a in reads):
            self._source.append(hit[1])
            self._reused.add(hit[1])
        else:
            self._entries[key] = (self._position, ticket)
            self._source.append(ticket)
        return ticket

    def advance(self, accesses: Iterable[Access]) -> None:
        """Record the current instruction's buffer writes and move to the next issue position."""
        for a in accesses:
            if a.write and a.space in self._last_write:
                lo, hi = a.extent
                self._last_write[a.space][lo // CHUNK:-(-hi // CHUNK)] = self._position
        self._position += 1

    def source(self, ticket: int) -> int:
        """The ticket whose conversion result ``ticket`` uses (``ticket`` itself if it converts)."""
        return self._source[ticket]

    def reused(self, ticket: int) -> bool:
        """True when later conversions use this one's result."""
        return ticket in self._reused

    @property
    def shared(self) -> int:
        """Conversions served by an earlier one's result."""
        return sum(1 for t, s in enumerate(self._source) if s != t)

    def _unwritten_since(self, a: Access, position: int) -> bool:
        lo, hi = a.extent
        cells = self._last_write[a.space][lo // CHUNK:-(-hi // CHUNK)]
        return cells.size == 0 or int(cells.max()) < position
