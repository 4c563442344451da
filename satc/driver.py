"""The driver: model name or file in, forward / training graph out, as one list of passes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from satc.errors import FrontendError
from satc.ir.graph import Graph
from satc.ir.verifier import verify

DEFAULT_MODEL = "cnn"  # the default model `satc demo` compiles and trains
DEFAULT_BATCH = 16


@dataclass
class ModelSource:
    """Where a forward graph came from: a zoo model or an ONNX file."""

    graph: Graph
    num_classes: int


def load_forward_graph(model: str, batch: int = 2,
                       input_shapes: Mapping[str, Sequence[int]] | None = None,
                       model_kwargs: Mapping[str, object] | None = None) -> ModelSource:
    """Import a zoo model (by name) or an ONNX file (by path) as a forward graph."""
    if model.endswith(".onnx") or Path(model).is_file():
        from satc.frontend.onnx_import import import_onnx

        g = import_onnx(model, input_shapes=input_shapes)
        return ModelSource(g, int(next(iter(g.outputs.values())).shape[-1]))
    import torch

    from satc.frontend.torch_import import import_torch
    from satc.models import ZOO

    if model not in ZOO:
        raise FrontendError(f"{model!r} is neither an ONNX file nor a zoo model; zoo: {', '.join(ZOO)}")
    spec = ZOO[model]
    shape = (batch, *spec.input_shape)
    if input_shapes:
        if len(input_shapes) != 1:
            raise FrontendError(f"zoo models take one input; got shapes for {list(input_shapes)}")
        shape = tuple(next(iter(input_shapes.values())))
    torch.manual_seed(0)
    module = spec.build(**dict(model_kwargs or {}))
    g = import_torch(module, (torch.zeros(shape),), name=model)
    return ModelSource(g, spec.num_classes)


def training_pipeline(forward: Graph, sparsity: str = "dense", optimizer=None,
                      exclude: Sequence[str] = (), print_after: bool = False,
                      pregenerate: bool = True) -> Graph:
    """forward graph -> build_training_graph -> sparsify, verifying after each pass
    (``pregenerate=False``: the SORE ablation, see :func:`satc.passes.sparsify.sparsify`)."""
    from satc.ir.printer import format_graph
    from satc.passes.autodiff import build_training_graph
    from satc.passes.sparsify import sparsify

    passes = [
        ("build_training_graph", lambda g: build_training_graph(g, optimizer=optimizer)),
        ("sparsify", lambda g: sparsify(g, sparsity, exclude=exclude, pregenerate=pregenerate)),
    ]
    g = forward
    for name, run in passes:
        g = verify(run(g), after_pass=name)
        if print_after:
            print(f"// ----- IR after {name} -----\n{format_graph(g)}")
    return g


def random_batch(graph: Graph, num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic inputs for every graph input (normal images, uniform labels)."""
    rng = np.random.default_rng(seed)
    out = {}
    for v in graph.inputs:
        if v.dtype == "int64":
            out[v.name] = rng.integers(0, num_classes, v.shape).astype(np.int64)
        else:
            out[v.name] = rng.standard_normal(v.shape).astype(v.dtype)
    return out
