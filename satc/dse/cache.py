"""Sweep results on disk, keyed by a content hash of everything that decides them.

The key is the SHA-256 of (model graph text, sparsity, hardware config,
compiler version, measurement settings). The compiler version is satc's
version plus a digest of its source files (satc, ir, passes, backends, models),
so a code change invalidates every entry and a re-run recomputes only points
whose inputs changed. One JSON file per entry; writes are atomic (temp file
plus rename), so a killed sweep never leaves a torn entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import satc
from satc.atomic import write_text
from satc.backends.sat.config import HardwareConfig

#: package folders whose sources make up the compiler version
_SOURCE_DIRS = ("satc", "ir", "passes", "backends", "models")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/satc/results`` (``~/.cache/satc/results`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "satc" / "results"


@lru_cache(maxsize=1)
def compiler_version() -> str:
    """``<version>+<digest of the compiler's .py and .toml sources>``."""
    root = Path(satc.__file__).resolve().parent.parent
    h = hashlib.sha256()
    for d in _SOURCE_DIRS:
        for p in sorted((root / d).rglob("*")):
            if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts:
                h.update(p.relative_to(root).as_posix().encode())
                h.update(p.read_bytes())
    return f"{satc.__version__}+{h.hexdigest()[:16]}"


def graph_digest(model: str, batch: int) -> str:
    """SHA-256 of the printed forward graph of ``model`` at ``batch`` (ops, attributes, shapes)."""
    from satc.ir.printer import format_graph
    from satc.pipeline import load_model

    return hashlib.sha256(format_graph(load_model(model, batch=batch).graph).encode()).hexdigest()


def result_key(graph: str, sparsity: str, cfg: HardwareConfig, settings: Mapping[str, Any]) -> str:
    """The cache key of one measurement."""
    blob = json.dumps({"graph": graph, "sparsity": sparsity, "hw": cfg.to_dict(),
                       "compiler": compiler_version(), "settings": dict(settings)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResultCache:
    """JSON results in ``root``, one file per key (``None`` root: a cache that keeps nothing)."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored result of ``key``, or None."""
        if self.root is None:
            return None
        path = self.root / f"{key}.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, result: Mapping[str, Any]) -> None:
        """Store ``result`` under ``key`` (atomically)."""
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        write_text(self.root / f"{key}.json", json.dumps(result, sort_keys=True))
