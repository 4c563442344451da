"""Atomic file writes: a reader (or a crash) sees the old file or the whole new one, never a part.

Every file satc writes goes through :func:`atomic_write` (or its helpers):
the bytes go to a temporary file in the same folder, are flushed to disk,
then renamed over the target (``os.replace`` is atomic on POSIX and
Windows). An exception or Ctrl-C before the rename removes the temporary
file and leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from pathlib import Path
from typing import IO, Iterator

from satc.errors import SatcError


class _Target:
    """Where an atomic write goes: the final path and the folder it must already exist in."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.folder = self.path.resolve().parent
        if not self.folder.is_dir():
            raise SatcError(f"cannot write {self.path}: folder {self.folder} does not exist; "
                            "fix: create it or write elsewhere")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file to write instead of ``path`` (``mode`` 'wb' or 'w', text in UTF-8
    with ``newline`` as in :func:`open`, e.g. ``''`` for csv); on a clean exit it replaces
    ``path``, on any exception (KeyboardInterrupt included) it is removed."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    target = _Target(path)
    tmp = None
    try:
        with _signals_held():         # Ctrl-C between creating and owning the temp file
            fd, tmp = tempfile.mkstemp(prefix=f".{target.path.name}.", suffix=".tmp",
                                       dir=target.folder)
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": newline}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target.path)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT / SIGTERM (delivered on exit) where a signal would leak a temp file."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_write(path, "w") as f:
        f.write(text)


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    """Atomically save a matplotlib figure, its format from the suffix of ``path`` (png if none)."""
    with atomic_write(path) as f:
        fig.savefig(f, dpi=dpi, format=Path(path).suffix[1:] or "png")
