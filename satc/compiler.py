"""``satc.compile``: a model in, one compiled SAT training step out.

    prog = satc.compile(model, example_inputs=(x,), sparsity="bdwp:2:8", hw="sat-vcu1525",
                        optimizer=satc.SGD(lr=0.05, momentum=0.9))
    res = prog.step(x, y)        # one training step on the emulator
    res.loss, res.cycles, res.per_layer, res.grads
    prog.state                   # mapping name -> numpy (the interpreter's state keys), lives in DRAM
    prog.save("model.satbin")

The driver is a list of passes: import (torch / ONNX, or a ready graph)
-> ``build_training_graph`` -> ``sparsify`` -> ``hoist_updates`` -> ``tile_gemms`` -> code
generation (memory plan, lowering table, dependency tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from satc.backends.sat.codegen import Codegen, NodeSpan, generate
from satc.backends.sat.config import HardwareConfig, load_hardware
from satc.backends.sat.emulator import Emulator
from satc.backends.sat.program import Program, Region
from satc.backends.sat.timing import TimingReport, gemm_macs, time_program
from satc.errors import CompileError
from satc.ir.graph import Graph
from satc.ir.types import Stage
from satc.ir.verifier import verify
from satc.live_state import LiveState
from satc.passes.ordering import hoist_updates
from satc.passes.tiling import tile_gemms


@dataclass(frozen=True)
class LayerCycles:
    """One row of the per-layer table: a (layer, stage) pair of the step."""

    layer: str
    stage: str
    ops: tuple[str, ...]
    instructions: int
    cycles: int          # span: first start to last end of its instructions
    busy: int            # sum of its instructions' engine cycles
    macs: int            # dense-equivalent GEMM MACs
    utilisation: float   # multiplies executed / (cycles * multipliers in the STCE)


@dataclass
class StepResult:
    """One emulated training step: loss, gradients, logits and the cycle model's view."""

    loss: float
    cycles: int
    per_layer: list[LayerCycles]
    timing: TimingReport
    grads: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


def format_per_layer(rows: Sequence[LayerCycles]) -> str:
    """The per-layer table as text."""
    lines = [f"{'layer':<24} {'stage':<5} {'instrs':>7} {'cycles':>10} {'busy':>10} "
             f"{'MACs':>12} {'util':>7}  ops"]
    lines += [f"{r.layer or '-':<24} {r.stage:<5} {r.instructions:>7} {r.cycles:>10} {r.busy:>10} "
              f"{r.macs:>12} {r.utilisation:>7.1%}  {','.join(r.ops)}" for r in rows]
    return "\n".join(lines)


class CompiledProgram:
    """A compiled training step: the SAT program, its memory plan and the live state."""

    def __init__(self, graph: Graph, config: HardwareConfig, codegen: Codegen,
                 state: Mapping[str, np.ndarray]) -> None:
        self.graph = graph
        self.config = config
        self.plan = codegen.plan
        self.spans: list[NodeSpan] = codegen.spans
        self._program = codegen.program
        self._state = LiveState(self.plan.state, state)
        self._emu: Emulator | None = None

    @property
    def state(self) -> LiveState:
        """The training state (name -> numpy array); between steps it lives in modelled DRAM."""
        return self._state

    @state.setter
    def state(self, values: Mapping[str, np.ndarray]) -> None:
        """Replace the whole state (``prog.state = ref_state`` restarts from that state); the
        keys must be exactly the program's (assign ``prog.state[k]`` to change one value)."""
        self._state.replace_all(values)

    @property
    def program(self) -> Program:
        """The SAT program; its state regions hold the current :attr:`state`.

        Built on every access (the state is encoded into the regions): keep a
        reference rather than reading ``prog.program`` in a loop.
        """
        regions = []
        images = {k: np.ascontiguousarray(v, dtype=_np(self._program.region(k).dtype))
                  for k, v in self._state.all_images().items()}
        for r in self._program.regions:
            regions.append(Region(r.name, r.addr, r.shape, r.dtype,
                                  images[r.name].tobytes() if r.name in images else r.init))
        return Program(self.config, self._program.instructions, tuple(regions),
                       self._program.dram_size)

    @cached_property
    def timing(self) -> TimingReport:
        """The cycle model of one step (the same every step)."""
        return time_program(self._program)

    def per_layer(self) -> list[LayerCycles]:
        """Cycles, MACs and utilisation per (layer, stage), from the timing timeline."""
        return list(self._per_layer_rows)

    @cached_property
    def _per_layer_rows(self) -> tuple[LayerCycles, ...]:
        """The per-layer table of the (fixed) program, computed once."""
        tl = self.timing.timeline
        ins = self._program.instructions
        peak = self.config.peak_dense_macs_per_cycle
        groups: dict[tuple[str, str], list[NodeSpan]] = {}
        for sp in self.spans:
            if sp.end > sp.start:
                groups.setdefault((sp.node.layer, str(sp.node.stage)), []).append(sp)
        rows = []
        for (layer, stage), spans in groups.items():
            idx = [i for sp in spans for i in range(sp.start, sp.end)]
            start = min(tl[i].start for i in idx)
            end = max(tl[i].end for i in idx)
            busy = sum(tl[i].end - tl[i].start for i in idx)
            gemms = [gemm_macs(ins[i]) for i in idx if ins[i].op == "gemm"]
            macs, mults = sum(g[1] for g in gemms), sum(g[0] for g in gemms)
            ops = tuple(dict.fromkeys(sp.node.op for sp in spans))
            rows.append(LayerCycles(layer, stage, ops, len(idx), end - start, busy, macs,
                                    mults / ((end - start) * peak) if end > start else 0.0))
        return tuple(rows)

    def _emulator(self) -> Emulator:
        if self._emu is None:
            self._emu = Emulator(self._program)
        return self._emu

    def step(self, x: np.ndarray | Any, y: np.ndarray | Any) -> StepResult:
        """Run one training step on the emulator with images ``x`` and labels ``y``.

        Loads the inputs and any state assigned since the last step into
        modelled DRAM (the rest of :attr:`state` is already there), runs the
        program, reads back loss and gradients; the new state is decoded from
        DRAM when read.
        """
        feeds = dict(zip([v.name for v in self.graph.inputs], (x, y)))
        images = self._state.pending_images()
        for name, s in self.plan.inputs.items():
            if name not in feeds:
                raise CompileError(f"step() got no data for input {name!r}")
            arr = np.asarray(feeds[name].detach().cpu().numpy() if hasattr(feeds[name], "detach")
                             else feeds[name])
            v = next(v for v in self.graph.inputs if v.name == name)
            if tuple(arr.shape) != tuple(v.shape):
                raise CompileError(f"input {name!r} has shape {arr.shape}, the program was compiled "
                                   f"for {v.shape}; recompile with example_inputs of that shape")
            for region, data in s.encode(arr):
                images[region.name] = data
        emu = self._emulator().run(images, keep=self._state.kept_regions())
        self._state.stepped(emu.read)
        outs = {k: s.decode(emu.read) for k, s in self.plan.outputs.items()}
        grads = {k[5:]: v for k, v in outs.items() if k.startswith("grad/")}
        return StepResult(float(outs["loss"]), self.timing.total_cycles, self.per_layer(),
                          self.timing, grads, outs)

    def schedule(self, method: str = "cpsat", **options: Any) -> Any:
        """Schedule this step offline (``satc.passes.schedule.schedule_program``), labelled by layer.

        Returns the ScheduleResult: ``.makespan``, ``.lower_bounds``, ``.ratio``,
        ``.check()``; ``format_report`` / ``write_trace`` / ``write_gantt`` /
        ``satc.runner.rescheduled`` take it from there.
        """
        from satc.passes.schedule import schedule_program
        from satc.runner import instruction_labels, with_manifest

        return schedule_program(with_manifest(self), method, labels=instruction_labels(self), **options)

    def save(self, path: str | Path) -> None:
        """Write the program file (current state in the state regions, with the I/O manifest)."""
        from satc.runner import with_manifest

        with_manifest(self).save(path)


def _np(dtype: str) -> np.dtype:
    from satc.backends.sat.isa import NP_DTYPES
    return NP_DTYPES[dtype]


def _training_graph(model: Any, example_inputs: Sequence[Any] | None, sparsity: str,
                    optimizer: Any, input_shapes: Mapping[str, Sequence[int]] | None,
                    exclude: Sequence[str]) -> Graph:
    from satc.driver import training_pipeline

    if isinstance(model, Graph):
        g = model
    elif isinstance(model, (str, Path)) and str(model).endswith(".onnx"):
        from satc.frontend.onnx_import import import_onnx
        g = import_onnx(str(model), input_shapes=input_shapes)
    elif isinstance(model, str):
        from satc.driver import load_forward_graph
        batch = (next(iter(input_shapes.values()))[0] if input_shapes else
                 (example_inputs[0].shape[0] if example_inputs else 2))
        g = load_forward_graph(model, batch=batch, input_shapes=input_shapes).graph
    else:
        from satc.frontend.torch_import import import_torch
        if example_inputs is None:
            raise CompileError("compiling a torch module needs example_inputs=(x,)")
        g = import_torch(model, tuple(example_inputs))
    if any(n.stage == Stage.OPT for n in g.nodes):
        return verify(g)
    return training_pipeline(g, sparsity=sparsity, optimizer=optimizer, exclude=exclude)


def compile(model: Any, example_inputs: Sequence[Any] | None = None, sparsity: str = "dense",
            hw: str | Path | HardwareConfig = "sat-vcu1525", optimizer: Any = None,
            input_shapes: Mapping[str, Sequence[int]] | None = None,
            exclude: Sequence[str] = (), state: Mapping[str, np.ndarray] | None = None,
            interleave: bool = True) -> CompiledProgram:
    """Compile one training step of ``model`` for SAT.

    ``model``: a torch ``nn.Module`` (with ``example_inputs``), an ONNX path
    (with ``input_shapes`` for symbolic dims), a zoo model name, or a satc
    Graph (forward, or a training graph used as is). ``hw``: preset name,
    TOML path or HardwareConfig. ``state`` overrides the initial state.
    ``interleave=False`` turns off interleave mapping (an ablation).
    """
    cfg = hw if isinstance(hw, HardwareConfig) else load_hardware(hw)
    graph = _training_graph(model, example_inputs, sparsity, optimizer, input_shapes, exclude)
    passes = [("hoist_updates", hoist_updates),
              ("tile_gemms", lambda g: tile_gemms(g, cfg, interleave))]
    for name, run in passes:
        graph = verify(run(graph), after_pass=name)
    init = dict(state) if state is not None else graph.initial_state()
    return CompiledProgram(graph, cfg, generate(graph, cfg, init), init)
