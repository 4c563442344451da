"""One runtime session: a program, its manifest, its live state and the emulator running it.

Both ``satc.compile(...)`` (:class:`~satc.compiler.CompiledProgram`) and
``satc run`` (a program file, :meth:`Session.load`) train through a
:class:`Session`: :meth:`Session.step` checks and encodes the inputs, loads the
state assigned since the last step, runs the emulator (created on the first
step) with the rest of the state kept in DRAM, and decodes the outputs.
:meth:`Session.program_with_state` is the program file's content with the
current state in the state regions, built once per state change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Collection, Mapping

import numpy as np

from satc.backends.sat.emulator import Emulator
from satc.backends.sat.isa import NP_DTYPES
from satc.backends.sat.program import Program, Region
from satc.backends.sat.timing import TimingReport, time_program
from satc.errors import ShapeError
from satc.runtime.live_state import LiveState
from satc.runtime.manifest import Manifest


@dataclass
class StepOutputs:
    """What one step returns: the loss and the decoded outputs (by manifest name)."""

    loss: float
    outputs: dict[str, np.ndarray]


class Session:
    """Runs training steps of one program on the emulator; the state stays in its DRAM regions.

    ``initial``: the starting state (values by name, encoded before the first
    step), or None to start from the state in the program's regions (a
    program file).
    """

    def __init__(self, program: Program, manifest: Manifest,
                 initial: Mapping[str, np.ndarray] | None = None) -> None:
        self.program = program            # instructions and layout; its regions hold the initial images
        self.manifest = manifest
        if initial is None:
            self.state = LiveState(manifest.state, read=_initial_reader(program))
            self._file_version: int | None = self.state.version   # state as in ``program``
        else:
            self.state = LiveState(manifest.state, initial)
            self._file_version = None
        self._emu: Emulator | None = None
        self._built: tuple[int, Program] | None = None

    @classmethod
    def from_program(cls, program: Program) -> "Session":
        """A session for a program (file) carrying a manifest, starting from its state."""
        return cls(program, Manifest.from_program(program))

    @classmethod
    def load(cls, path: str | Path) -> "Session":
        """A session for the program file at ``path``."""
        return cls.from_program(Program.load(path))

    @cached_property
    def timing(self) -> TimingReport:
        """The cycle model of one step (the same every step)."""
        return time_program(self.program)

    @property
    def cycles(self) -> int:
        """Cycles of one step in program order."""
        return self.timing.total_cycles

    @property
    def emulator(self) -> Emulator:
        """The emulator (prepared on first use: it checks the whole program)."""
        if self._emu is None:
            self._emu = Emulator(self.program)
        return self._emu

    def read(self, region: str) -> np.ndarray:
        """A copy of DRAM region ``region`` (the state regions hold the state after the last step)."""
        return self.emulator.read(region)

    def feeds(self, *args: Any) -> dict[str, np.ndarray]:
        """The inputs of a step by name, checked: ``(mapping,)`` by name, or arrays in input order.

        Any wrong name, count or shape raises ShapeError naming the input,
        the shape got and the shape expected.
        """
        m = self.manifest
        if len(args) == 1 and isinstance(args[0], Mapping):
            given = dict(args[0])
        elif len(args) == len(m.input_order):
            given = dict(zip(m.input_order, args))
        else:
            raise ShapeError(f"step() got {len(args)} positional inputs; the program takes "
                             f"{len(m.input_order)} ({', '.join(m.input_order)}) in that order, "
                             "or one mapping of them by name")
        unknown = sorted(set(given) - set(m.input_order))
        missing = [k for k in m.input_order if k not in given]
        if unknown or missing:
            raise ShapeError(f"step() got inputs {sorted(given)}; the program takes "
                             f"{list(m.input_order)} (missing {missing}, unknown {unknown})")
        out = {}
        for name in m.input_order:
            v = given[name]
            arr = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
            want = tuple(m.input_shapes[name])
            if tuple(arr.shape) != want:
                raise ShapeError(f"input {name!r} has shape {tuple(arr.shape)}; the program was "
                                 f"compiled for {want}; fix: feed {name!r} of shape {want}, or "
                                 f"recompile with an example input (input_shapes) of shape "
                                 f"{tuple(arr.shape)}")
            out[name] = arr
        return out

    def step(self, *args: Any, outputs: Collection[str] | None = None) -> StepOutputs:
        """One training step: ``step(x, y)`` (input order) or ``step({"x": x, "y": y})``.

        Loads the inputs and the state assigned since the last step into
        modelled DRAM (the rest of the state is already there), runs the
        program and decodes ``outputs`` (names of the manifest's outputs; all
        by default; the loss always).
        """
        feeds = self.feeds(*args)
        images = self.state.pending_images()
        for name, arr in feeds.items():
            for region, data in self.manifest.inputs[name].encode(arr):
                images[region.name] = data
        emu = self.emulator.run(images, keep=self.state.kept_regions())
        self.state.stepped(emu.read)
        names = self.manifest.outputs if outputs is None else {"loss", *outputs}
        outs = {k: self.manifest.outputs[k].decode(emu.read) for k in names}
        return StepOutputs(float(outs["loss"]), outs)

    def program_with_state(self) -> Program:
        """The program file's content: the current state in the state regions, the manifest in
        ``meta``. Built once per state change (a step or an assignment); keep the result rather
        than editing it."""
        version = self.state.version
        if self._built is None or self._built[0] != version:
            self._built = (version, self.manifest.attach(self._with_current_state()))
        return self._built[1]

    def save(self, path: str | Path) -> None:
        """Write the program file (current state, manifest) to ``path``."""
        self.program_with_state().save(path)

    def _with_current_state(self) -> Program:
        if self.state.version == self._file_version:
            return self.program                       # a file's state, untouched: its own bytes
        images = self.state.all_images()
        regions = tuple(
            Region(r.name, r.addr, r.shape, r.dtype,
                   np.ascontiguousarray(images[r.name], dtype=NP_DTYPES[r.dtype]).tobytes())
            if r.name in images else r for r in self.program.regions)
        return dataclasses.replace(self.program, regions=regions)


def _initial_reader(program: Program):
    """``read(name)``: the initial contents of region ``name`` of ``program``."""
    def read(name: str) -> np.ndarray:
        return program.region(name).array().copy()
    return read

