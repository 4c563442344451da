"""satc: compiler, scheduler and emulator for SAT, the N:M sparse DNN-training accelerator.

Public API (see README.md)::

    g   = satc.import_torch(module, example_args)   # or satc.import_onnx("model.onnx")
    tg  = satc.build_training_graph(g, loss="cross_entropy", optimizer=satc.SGD(lr=0.1))
    stg = satc.sparsify(tg, "bdwp:2:8")
    out = satc.interpret(stg, inputs={"x": x, "y": y}, state=stg.initial_state())
    satc.count_ops(stg).format()

Names load lazily, so ``import satc`` stays cheap (torch and onnx are only
imported by the frontends that need them).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "import_torch": "satc.frontend.torch_import",
    "import_onnx": "satc.frontend.onnx_import",
    "build_training_graph": "satc.passes.autodiff",
    "SGD": "satc.passes.optimizer",
    "AdamW": "satc.passes.optimizer",
    "sparsify": "satc.passes.sparsify",
    "count_ops": "satc.passes.op_count",
    "interpret": "satc.ir.interpreter",
    "verify": "satc.ir.verifier",
    "format_graph": "satc.ir.printer",
    "parse_sparsity": "satc.ir.nm",
    "Graph": "satc.ir.graph",
    "Stage": "satc.ir.types",
    "compile": "satc.compiler",
    "CompiledProgram": "satc.compiler",
    "StepResult": "satc.compiler",
}

__all__ = sorted(_EXPORTS) + ["errors", "sparsity"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in ("errors", "sparsity", "models"):
        return importlib.import_module(f"satc.{name}")
    raise AttributeError(f"module 'satc' has no attribute {name!r}")
