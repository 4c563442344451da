"""Program files that carry how to feed them, and a runner that trains from a file alone.

``satc compile`` writes a program whose ``meta["satc"]`` holds an I/O
manifest: the storage of each input (e.g. images as padded NCHW, labels as
one-hot rows), of the loss, the DRAM regions of the training state (updated
in place by the program), and a label per instruction
(``layer/stage/op``) for schedules and traces. :class:`ProgramRunner` reads
that back and runs training steps on the emulator, carrying the state
regions from one step to the next.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from satc.backends.sat.codegen import memory
from satc.backends.sat.emulator import Emulator
from satc.backends.sat.program import Program, Region
from satc.backends.sat.timing import time_program
from satc.errors import ProgramFileError, ShapeError

MANIFEST_KEY = "satc"


def _to_json(storage: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": type(storage).__name__}
    for f in dataclasses.fields(storage):
        v = getattr(storage, f.name)
        out[f.name] = {"region": v.name} if isinstance(v, Region) else (
            list(v) if isinstance(v, tuple) else v)
    return out


def _from_json(d: dict[str, Any], program: Program) -> Any:
    cls = getattr(memory, d["kind"], None)
    if cls is None or not dataclasses.is_dataclass(cls):
        raise ProgramFileError(f"program manifest names unknown storage kind {d['kind']!r}")
    kw = {}
    for f in dataclasses.fields(cls):
        v = d[f.name]
        kw[f.name] = program.region(v["region"]) if isinstance(v, dict) else (
            tuple(v) if isinstance(v, list) else v)
    return cls(**kw)


def instruction_labels(compiled: Any) -> list[str]:
    """``layer/stage/op`` of the IR node each instruction of a CompiledProgram came from."""
    labels = [""] * len(compiled.program.instructions)
    for span in compiled.spans:
        for i in range(span.start, span.end):
            labels[i] = f"{span.node.layer or '-'}/{span.node.stage}/{span.node.op}"
    return labels


def with_manifest(compiled: Any) -> Program:
    """The compiled program (current state in its regions) with its I/O manifest and labels in ``meta``."""
    plan = compiled.plan
    state_regions = sorted({r.name for s in plan.state.values() for r in s.regions})
    manifest = {
        "inputs": {k: _to_json(s) for k, s in plan.inputs.items()},
        "input_order": [v.name for v in compiled.graph.inputs],
        "input_shapes": {v.name: list(v.shape) for v in compiled.graph.inputs},
        "loss": _to_json(plan.outputs["loss"]),
        "state_regions": state_regions,
        "labels": instruction_labels(compiled),
    }
    return dataclasses.replace(compiled.program, meta={MANIFEST_KEY: manifest})


class ProgramRunner:
    """Runs training steps of a program file on the emulator; the state stays in its regions."""

    def __init__(self, program: Program):
        if MANIFEST_KEY not in program.meta:
            raise ProgramFileError("this program file has no satc I/O manifest; write it with "
                                   "`satc compile` (or satc.runner.with_manifest)")
        m = program.meta[MANIFEST_KEY]
        self.program = program
        self.inputs = {k: _from_json(d, program) for k, d in m["inputs"].items()}
        self.input_order: list[str] = list(m["input_order"])
        self.input_shapes = {k: tuple(v) for k, v in m["input_shapes"].items()}
        self.loss = _from_json(m["loss"], program)
        self.state_regions: list[str] = list(m["state_regions"])
        self.labels: list[str] = list(m["labels"])
        self._emu = Emulator(program)
        self.cycles = time_program(program).total_cycles

    @classmethod
    def load(cls, path: str | Path) -> "ProgramRunner":
        """A runner for the program file at ``path``."""
        return cls(Program.load(path))

    def read(self, region: str) -> np.ndarray:
        """A copy of DRAM region ``region`` (the state regions hold the state after the last step)."""
        return self._emu.read(region)

    def step(self, *feeds: np.ndarray) -> float:
        """One training step on ``feeds`` (in the graph's input order); returns the loss."""
        images = {}
        for name, arr in zip(self.input_order, feeds):
            arr = np.asarray(arr)
            if tuple(arr.shape) != self.input_shapes[name]:
                raise ShapeError(f"input {name!r} has shape {arr.shape}; the program was compiled "
                                 f"for {self.input_shapes[name]}")
            for region, data in self.inputs[name].encode(arr):
                images[region.name] = data
        emu = self._emu.run(images, keep=self.state_regions)
        return float(self.loss.decode(emu.read))


def rescheduled(result: Any) -> Program:
    """The program of a ScheduleResult, its manifest carried over with labels in the new order."""
    from satc.passes.schedule import emit_program

    new = emit_program(result)
    old = result.graph.program
    if MANIFEST_KEY not in old.meta:
        return new
    manifest = dict(old.meta[MANIFEST_KEY])
    labels = manifest["labels"]
    manifest["labels"] = [labels[result.graph.tasks[t].index] for t in result.stream_order()]
    return dataclasses.replace(new, meta={MANIFEST_KEY: manifest})
