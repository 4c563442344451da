"""The compiler pipeline: one model loader and the whole named pass list, import to codegen.

    source = load_model(model, example_inputs=(x,))          # zoo name, nn.Module, .onnx, Graph
    graph  = run_passes(source.graph, CompileOptions(sparsity="bdwp:2:8"))
    code   = codegen(graph, options)                          # tile plan, memory plan, program

Passes (:data:`IR_PASSES`) are functions IR -> IR with a name; the verifier runs
after every pass here, in one place, and names the pass that broke the IR.
``CompileOptions.print_after`` prints the IR after every pass and the tile plan
before lowering. A ready training graph (one with an optimizer) starts at the
first pass after the training-graph passes; asking it for a sparsity or an
optimizer is an error, since those were fixed when it was built.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from satc.backends.sat.config import DEFAULT_HARDWARE, HardwareConfig, load_hardware
from satc.errors import CompileError, FrontendError
from satc.ir.graph import Graph
from satc.ir.types import Stage
from satc.ir.verifier import size_problem, verify


@dataclass(frozen=True)
class CompileOptions:
    """Everything that selects what ``satc.compile`` builds besides the model itself.

    ``sparsity``: dense | ff:N:M | bdwp:N:M | bdwp-nested:N:M (None: dense, and no
    objection when the model is a ready training graph); ``optimizer``: ``satc.SGD`` /
    ``satc.AdamW`` (None: SGD defaults); ``exclude``: layers kept dense;
    ``pregenerate=False``: the SORE pre-generation ablation; ``interleave=False``: the
    interleave-mapping ablation; ``hw``: preset name, TOML path or HardwareConfig;
    ``print_after``: print the IR after every pass (and the tile plan)."""

    sparsity: str | None = None
    optimizer: Any = None
    exclude: tuple[str, ...] = ()
    pregenerate: bool = True
    interleave: bool = True
    hw: str | Path | HardwareConfig = DEFAULT_HARDWARE
    print_after: bool = False

    def hardware(self) -> HardwareConfig:
        """The hardware config these options name."""
        return self.hw if isinstance(self.hw, HardwareConfig) else load_hardware(self.hw)


@dataclass(frozen=True)
class Pass:
    """A named IR -> IR pass; ``training`` passes build the training graph from a forward one."""

    name: str
    run: Callable[[Graph, CompileOptions], Graph]
    training: bool = False


def _build_training_graph(g: Graph, o: CompileOptions) -> Graph:
    from satc.passes.autodiff import build_training_graph
    return build_training_graph(g, optimizer=o.optimizer)


def _sparsify(g: Graph, o: CompileOptions) -> Graph:
    from satc.passes.sparsify import sparsify
    return sparsify(g, o.sparsity or "dense", exclude=o.exclude, pregenerate=o.pregenerate)


def _fuse_batchnorm(g: Graph, o: CompileOptions) -> Graph:
    from satc.passes.fusion import fuse_batchnorm
    return fuse_batchnorm(g)


def _fuse_batchnorm_grad_stats(g: Graph, o: CompileOptions) -> Graph:
    from satc.passes.fusion import fuse_batchnorm_grad_stats
    return fuse_batchnorm_grad_stats(g, o.hardware().vec_buffer_bytes)


def _fuse_layernorm(g: Graph, o: CompileOptions) -> Graph:
    from satc.passes.fusion import fuse_layernorm
    return fuse_layernorm(g)


def _fuse_matmul_bias(g: Graph, o: CompileOptions) -> Graph:
    from satc.passes.fusion import fuse_matmul_bias
    return fuse_matmul_bias(g)


def _fold_transposes(g: Graph, o: CompileOptions) -> Graph:
    from satc.passes.layout import fold_transposes
    return fold_transposes(g)


def _fold_scales(g: Graph, o: CompileOptions) -> Graph:
    from satc.passes.fusion import fold_matmul_scales
    return fold_matmul_scales(g)


def _hoist_updates(g: Graph, o: CompileOptions) -> Graph:
    from satc.passes.ordering import hoist_updates
    return hoist_updates(g)


#: The IR passes of ``satc.compile``, in order (codegen follows, see :func:`codegen`).
IR_PASSES: tuple[Pass, ...] = (
    Pass("build_training_graph", _build_training_graph, training=True),
    Pass("sparsify", _sparsify, training=True),
    Pass("fuse_batchnorm", _fuse_batchnorm),
    Pass("fuse_batchnorm_grad_stats", _fuse_batchnorm_grad_stats),
    Pass("fuse_layernorm", _fuse_layernorm),
    Pass("fuse_matmul_bias", _fuse_matmul_bias),
    Pass("fold_transposes", _fold_transposes),
    Pass("fold_scales", _fold_scales),
    Pass("hoist_updates", _hoist_updates),
)


def is_training_graph(g: Graph) -> bool:
    """True when ``g`` already holds a training step (it has optimizer nodes)."""
    return any(n.stage == Stage.OPT for n in g.nodes)


def run_passes(graph: Graph, options: CompileOptions, until: str | None = None) -> Graph:
    """Run :data:`IR_PASSES` (through the pass named ``until``) on a forward or training
    graph, verifying the input and every pass's output."""
    from satc.ir.printer import format_graph

    names = [p.name for p in IR_PASSES]
    if until is not None and until not in names:
        raise CompileError(f"no pass named {until!r}; passes: {', '.join(names)}")
    g = verify(graph)
    ready = is_training_graph(g)
    if ready and (options.sparsity is not None or options.optimizer is not None):
        raise CompileError("the model is already a training graph, so its sparsity and optimizer "
                           "are fixed; pass the forward graph to apply sparsity= / optimizer=, "
                           "or leave them unset")
    for p in IR_PASSES:
        if not (ready and p.training):
            g = verify(p.run(g, options), after_pass=p.name)
            if options.print_after:
                print(f"// ----- IR after {p.name} -----\n{format_graph(g)}")
        if p.name == until:
            break
    return g


def codegen(graph: Graph, options: CompileOptions, state: Mapping[str, np.ndarray] | None = None):
    """Lower a training graph (after :func:`run_passes`) to a SAT program: the tile plan, then
    memory plan, lowering and tokens (:func:`satc.backends.sat.codegen.generate`), checked by
    the independent program checker (:func:`satc.backends.sat.checker.check_program`)."""
    from satc.backends.sat.checker import check_program
    from satc.backends.sat.codegen import generate
    from satc.backends.sat.codegen.tiling import format_tile_plan, plan_tiles

    cfg = options.hardware()
    with cyclic_gc_paused():
        tiles = plan_tiles(graph, cfg, options.interleave)
        if options.print_after:
            print(f"// ----- tile plan -----\n{format_tile_plan(graph, tiles)}")
        code = generate(graph, cfg, state, options.interleave, tiles)
        check_program(code.program)     # refuse a racy or out-of-bounds program before any run (cached)
    return code


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (reference counting still frees everything
    compilation drops): codegen allocates some 10^5 long-lived instructions and accesses, and
    the collector's repeated scans of them (and of a previous program still alive) took about
    a quarter of a ResNet-18 compile. The previous state is restored on exit, where pending
    cycles are collected as usual; nested pauses restore only at the outermost."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class ModelSource:
    """A loaded model: its forward (or training) graph and the number of classes of its labels."""

    graph: Graph
    num_classes: int


def load_model(model: Any, example_inputs: Sequence[Any] | None = None,
               input_shapes: Mapping[str, Sequence[int]] | None = None, batch: int | None = None,
               model_kwargs: Mapping[str, object] | None = None) -> ModelSource:
    """The one model loader: a satc Graph (used as is), a torch ``nn.Module`` (with
    ``example_inputs``), an ONNX file (``input_shapes`` bind symbolic dims) or a zoo model name
    (built with seed 0; its batch from ``input_shapes``, ``example_inputs``, ``batch`` or 2)."""
    if isinstance(model, Graph):
        return ModelSource(model, _classes(model))
    if isinstance(model, (str, Path)) and (str(model).endswith(".onnx") or Path(model).is_file()):
        from satc.frontend.onnx_import import import_onnx
        g = import_onnx(str(model), input_shapes=input_shapes)
        return ModelSource(g, _classes(g))
    if isinstance(model, str):
        return _load_zoo(model, example_inputs, input_shapes, batch, model_kwargs)
    if example_inputs is None:
        raise CompileError("compiling a torch module needs example_inputs=(x,)")
    from satc.frontend.torch_import import import_torch
    g = import_torch(model, tuple(example_inputs))
    return ModelSource(g, _classes(g))


def _classes(g: Graph) -> int:
    """Classes of a graph's labels: the last dim of its (first) output."""
    return int(next(iter(g.outputs.values())).shape[-1]) if g.outputs else 0


def _load_zoo(name: str, example_inputs: Sequence[Any] | None,
              input_shapes: Mapping[str, Sequence[int]] | None, batch: int | None,
              model_kwargs: Mapping[str, object] | None) -> ModelSource:
    import torch

    from satc.frontend.torch_import import import_torch
    from satc.models import ZOO

    if name not in ZOO:
        raise FrontendError(f"{name!r} is neither an ONNX file nor a zoo model; zoo: {', '.join(ZOO)}")
    spec = ZOO[name]
    if input_shapes:
        if len(input_shapes) != 1:
            raise FrontendError(f"zoo models take one input; got shapes for {list(input_shapes)}")
        shape = tuple(next(iter(input_shapes.values())))
    else:
        n = example_inputs[0].shape[0] if example_inputs else (batch or 2)
        shape = (n, *spec.input_shape)
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in shape):
        raise FrontendError(f"zoo model {name!r}: input shape {shape}; every dim (the batch first) "
                            f"must be an integer >= 1, e.g. {(2, *spec.input_shape)}")
    problem = size_problem(tuple(int(d) for d in shape), "float32")
    if problem:
        raise FrontendError(f"zoo model {name!r}: the input {problem}")
    torch.manual_seed(0)
    module = spec.build(**dict(model_kwargs or {}))
    dtype = getattr(module, "input_dtype", torch.float32)
    return ModelSource(import_torch(module, (torch.zeros(shape, dtype=dtype),), name=name),
                       spec.num_classes)
