"""Data flows one way: frontend -> IR -> passes -> backend -> emulator (docs/architecture.md).

Checked on the import statements of every module: a layer never imports one above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# folder -> import prefixes its modules must not use
FORBIDDEN = {
    "ir": ("satc.passes", "satc.backends", "satc.frontend", "satc.pipeline", "satc.compiler",
           "satc.runtime"),
    "passes": ("satc.frontend", "satc.pipeline", "satc.compiler", "satc.runtime",
               "satc.backends.sat.codegen"),
    "backends": ("satc.passes", "satc.frontend", "satc.pipeline", "satc.compiler", "satc.runtime",
                 "satc.models"),
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(folder):
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in _modules(folder) for m in _imports(p)
           if m.startswith(FORBIDDEN[folder])]
    assert not bad, "\n".join(bad)


def test_passes_other_than_the_scheduler_do_not_import_the_backend():
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in _modules("passes")
           if "schedule" not in p.parts for m in _imports(p) if m.startswith("satc.backends")]
    assert not bad, "\n".join(bad)


def test_the_layering_check_sees_imports():
    assert "satc.backends.sat.codegen.tiling" in _imports(ROOT / "backends/sat/codegen/lowering.py")
