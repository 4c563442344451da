"""``satc.compile``: a model in, one compiled SAT training step out.

    prog = satc.compile(model, example_inputs=(x,), sparsity="bdwp:2:8", hw="sat-vcu1525",
                        optimizer=satc.SGD(lr=0.05, momentum=0.9))
    res = prog.step(x, y)        # one training step on the emulator
    res.loss, res.cycles, res.per_layer, res.grads
    prog.state                   # mapping name -> numpy (the interpreter's state keys), lives in DRAM
    prog.save("model.satbin")

The pass list lives in :mod:`satc.pipeline`: import (torch / ONNX, or a ready graph)
-> ``build_training_graph`` -> ``sparsify`` -> ``hoist_updates`` -> code generation
(tile plan, memory plan, lowering table, dependency tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from satc.backends.sat.codegen import Codegen, NodeSpan
from satc.backends.sat.config import DEFAULT_HARDWARE, HardwareConfig
from satc.backends.sat.program import Program
from satc.backends.sat.cost_model import gemm_macs
from satc.backends.sat.energy import EnergyReport, step_energy
from satc.backends.sat.timing import TimingReport
from satc.ir.graph import Graph
from satc.pipeline import CompileOptions, codegen, cyclic_gc_paused, load_model, run_passes
from satc.runtime import LiveState, Manifest, Session


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
    """A compiled training step: the graph, its memory plan and a runtime :class:`Session`
    (the SAT program, its I/O manifest, the live state and the emulator)."""

    def __init__(self, graph: Graph, config: HardwareConfig, codegen: Codegen,
                 state: Mapping[str, np.ndarray]) -> None:
        self.graph = graph
        self.config = config
        self.plan = codegen.plan
        self.spans: list[NodeSpan] = codegen.spans
        labels = [""] * len(codegen.program.instructions)
        for span in self.spans:
            for i in range(span.start, span.end):
                labels[i] = f"{span.node.layer or '-'}/{span.node.stage}/{span.node.op}"
        manifest = Manifest(inputs=self.plan.inputs, input_order=tuple(v.name for v in graph.inputs),
                            input_shapes={v.name: tuple(v.shape) for v in graph.inputs},
                            outputs=self.plan.outputs, state=self.plan.state, labels=tuple(labels))
        self.session = Session(codegen.program, manifest, state)

    @property
    def state(self) -> LiveState:
        """The training state (name -> numpy array); between steps it lives in modelled DRAM."""
        return self.session.state

    @state.setter
    def state(self, values: Mapping[str, np.ndarray]) -> None:
        """Replace the whole state (``prog.state = ref_state`` restarts from that state); the
        keys must be exactly the program's (assign ``prog.state[k]`` to change one value)."""
        self.session.state.replace_all(values)

    @property
    def program(self) -> Program:
        """The SAT program file's content: the current :attr:`state` in its state regions, the
        I/O manifest and instruction labels in ``meta``. Built once per state change (a step
        or an assignment), so reading it again returns the same object."""
        return self.session.program_with_state()

    @property
    def labels(self) -> list[str]:
        """``layer/stage/op`` of the IR node each instruction came from."""
        return list(self.session.manifest.labels)

    @property
    def timing(self) -> TimingReport:
        """The cycle model of one step (the same every step)."""
        return self.session.timing

    def energy(self, makespan: int | None = None) -> EnergyReport:
        """Energy of one step (``satc.backends.sat.energy``) in ``makespan`` cycles: a
        schedule's makespan, or the program-order cycles of :attr:`timing` by default."""
        program = self.session.program
        cycles = self.timing.total_cycles if makespan is None else makespan
        return step_energy(program.instructions, self.config, cycles, self.labels)

    def per_layer(self) -> list[LayerCycles]:
        """Cycles, MACs and utilisation per (layer, stage), from the timing timeline."""
        return list(self._per_layer_rows)

    @cached_property
    def _per_layer_rows(self) -> tuple[LayerCycles, ...]:
        """The per-layer table of the (fixed) program, computed once."""
        tl = self.timing.timeline
        ins = self.session.program.instructions
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

    def step(self, *inputs: np.ndarray | Any) -> StepResult:
        """Run one training step on the emulator: ``step(x, y)`` in the graph's input order
        (numpy arrays or torch tensors) or ``step({"x": x, "y": y})``.

        Loads the inputs and any state assigned since the last step into
        modelled DRAM (the rest of :attr:`state` is already there), runs the
        program, reads back loss and gradients; the new state is decoded from
        DRAM when read. A wrong input name or shape raises ShapeError.
        """
        out = self.session.step(*inputs)
        grads = {k[5:]: v for k, v in out.outputs.items() if k.startswith("grad/")}
        return StepResult(out.loss, self.timing.total_cycles, self.per_layer(), self.timing,
                          grads, out.outputs)

    def schedule(self, method: str = "cpsat", **options: Any) -> Any:
        """Schedule this step offline (``satc.passes.schedule.schedule_program``), labelled by layer.

        Returns the ScheduleResult: ``.makespan``, ``.lower_bounds``, ``.ratio``,
        ``.check()``; ``format_report`` / ``write_trace`` / ``write_gantt`` /
        ``satc.runtime.rescheduled`` take it from there.
        """
        from satc.passes.schedule import schedule_program

        return schedule_program(self.program, method, labels=self.labels, **options)

    def save(self, path: str | Path) -> None:
        """Write the program file (current state in the state regions, with the I/O manifest)."""
        self.session.save(path)


def compile(model: Any, example_inputs: Sequence[Any] | None = None, sparsity: str | None = None,
            hw: str | Path | HardwareConfig = DEFAULT_HARDWARE, optimizer: Any = None,
            input_shapes: Mapping[str, Sequence[int]] | None = None,
            exclude: Sequence[str] = (), state: Mapping[str, np.ndarray] | None = None,
            interleave: bool = True, options: CompileOptions | None = None) -> CompiledProgram:
    """Compile one training step of ``model`` for SAT (the pass list: :mod:`satc.pipeline`).

    ``model``: a torch ``nn.Module`` (with ``example_inputs``), an ONNX path
    (with ``input_shapes`` for symbolic dims), a zoo model name, or a satc
    Graph (forward, or a training graph used as is). ``hw``: preset name,
    TOML path or HardwareConfig. ``state`` overrides the initial state.
    ``interleave=False`` turns off interleave mapping (an ablation). ``options``
    (a :class:`~satc.pipeline.CompileOptions`) replaces the keyword options.
    """
    if options is None:
        options = CompileOptions(sparsity=sparsity, optimizer=optimizer, exclude=tuple(exclude),
                                 interleave=interleave, hw=hw)
    with cyclic_gc_paused():
        source = load_model(model, example_inputs, input_shapes)
        graph = run_passes(source.graph, options)
        # the graph's own initial values, not copies: codegen only reads them and the
        # session's live state copies them
        init = dict(state) if state is not None else {k: graph.initializers[k] for k in graph.state}
        code = codegen(graph, options, init)
        return CompiledProgram(graph, code.program.config, code, init)
