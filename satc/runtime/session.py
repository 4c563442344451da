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

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Collection, Mapping

import numpy as np

from satc.backends.sat.checker import check_program
from satc.backends.sat.codegen.memory import OneHot
from satc.backends.sat.emulator import Emulator
from satc.backends.sat.isa import NP_DTYPES
from satc.backends.sat.program import Program, Region
from satc.backends.sat.timing import TimingReport, time_program
from satc.errors import InputError, ShapeError
from satc.runtime.live_state import LiveState
from satc.runtime.manifest import Manifest, check_carried


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
        """A session for a program (file) carrying a manifest, starting from its state.

        Everything is checked before the first step: the program
        (:func:`~satc.backends.sat.checker.check_program`), its manifest, and that the
        manifest's state holds every region a step carries to the next.
        """
        check_program(program)
        session = cls(program, Manifest.from_program(program))
        session.emulator                                  # noqa: B018 -- prepare (and check) now
        return session

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
        """The emulator (prepared on first use: it checks the whole program and that the
        manifest's state covers what a step carries to the next)."""
        if self._emu is None:
            emu = Emulator(self.program)
            check_carried(self.manifest, emu.carried)
            self._emu = emu
        return self._emu

    def read(self, region: str) -> np.ndarray:
        """A copy of DRAM region ``region`` (the state regions hold the state after the last step)."""
        return self.emulator.read(region)

    def feeds(self, *args: Any) -> dict[str, np.ndarray]:
        """The inputs of a step by name, checked: ``(mapping,)`` by name, or arrays in input order.

        Any wrong name, count or shape raises ShapeError naming the input,
        the shape got and the shape expected; NaN or infinite values, labels
        outside ``[0, classes)`` and non-numeric (or, for labels, non-integer)
        dtypes raise InputError: satc never trains on a NaN input.
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
            out[name] = _checked_value(name, arr, m.inputs[name])
        return out

    def step(self, *args: Any, outputs: Collection[str] | None = None) -> StepOutputs:
        """One training step: ``step(x, y)`` (input order) or ``step({"x": x, "y": y})``.

        Loads the inputs and the state assigned since the last step into
        modelled DRAM (the rest of the state is already there), runs the
        program and decodes ``outputs`` (names of the manifest's outputs; all
        by default; the loss always). Inputs are checked before anything runs
        (:meth:`feeds`); a step that raises (or is interrupted) leaves the state
        as it was before it.
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
        """Write the program file (current state, manifest) to ``path``, atomically."""
        self.program_with_state().save(path)

    def _with_current_state(self) -> Program:
        if self.state.version == self._file_version:
            return self.program                       # a file's state, untouched: its own bytes
        images = self.state.all_images()
        regions = tuple(
            Region(r.name, r.addr, r.shape, r.dtype,
                   np.ascontiguousarray(images[r.name], dtype=NP_DTYPES[r.dtype]).tobytes())
            if r.name in images else r for r in self.program.regions)
        return self.program.with_contents(regions=regions)


def _initial_reader(program: Program):
    """``read(name)``: the initial contents of region ``name`` of ``program``."""
    def read(name: str) -> np.ndarray:
        return program.region(name).array().copy()
    return read


def _checked_value(name: str, arr: np.ndarray, storage: Any) -> np.ndarray:
    """``arr`` if it can be fed as input ``name`` (dtype, finite values, label range), else
    InputError naming the input, what is wrong and the fix."""
    if isinstance(storage, OneHot):
        if arr.dtype.kind not in "iu":
            raise InputError(f"input {name!r} holds class labels but has dtype {arr.dtype}; fix: "
                             f"feed integer labels in [0, {storage.classes}) (e.g. int64)")
        flat = arr.reshape(-1)
        bad = np.flatnonzero(((flat < 0) | (flat >= storage.classes)) & storage.kept(flat))
        if bad.size:
            also = ("" if storage.ignore_index is None
                    else f" (or the loss's ignore index {storage.ignore_index})")
            raise InputError(f"input {name!r}: label {int(flat[bad[0]])} at index "
                             f"{int(bad[0])} is outside [0, {storage.classes}) ({bad.size} such); "
                             f"fix: feed labels of the program's {storage.classes} classes{also}")
        return arr
    if arr.dtype.kind not in "fiu":
        raise InputError(f"input {name!r} has dtype {arr.dtype}; fix: feed real numbers (float32)")
    with np.errstate(over="ignore"):
        finite = np.isfinite(arr.astype(np.float32, copy=False))
    if not finite.all():
        bad = np.flatnonzero(~finite.reshape(-1))
        raise InputError(f"input {name!r} holds {bad.size} NaN or infinite value(s) in float32 (first "
                         f"at flat index {int(bad[0])}: {arr.reshape(-1)[bad[0]]!r}); satc refuses "
                         "them before the step; fix: clean or rescale the input")
    return arr
