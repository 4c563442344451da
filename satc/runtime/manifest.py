"""The I/O manifest of a program file: how to feed it, where its loss and state live.

``satc compile`` writes it into ``program.meta["satc"]`` as explicit JSON
(each storage by its ``to_json``, regions by name) with ``"version":
MANIFEST_VERSION``; :meth:`Manifest.from_program` reads it back and refuses,
with the fix, a file without one or of another version.

    {"version": 2,
     "inputs": {name: storage},        # e.g. images as padded NCHW, labels as one-hot rows
     "input_order": [name, ...],       # positional order of step(x, y)
     "input_shapes": {name: [dims]},
     "outputs": {name: storage},       # "loss" and, from satc.compile, "grad/<w>", logits...
     "state": {name: storage},         # training state, updated in place by the program
     "labels": ["layer/stage/op", ...]}  # one per instruction, for schedules and traces
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from satc.backends.sat.codegen.memory import Storage, storage_from_json
from satc.backends.sat.program import Program
from satc.errors import ProgramFileError

MANIFEST_KEY = "satc"
MANIFEST_VERSION = 2          # 1: the unversioned manifest of earlier satc (field names of codegen)
_RECOMPILE = "fix: recompile the model with `satc compile` (or save it again with prog.save)"


@dataclass(frozen=True)
class Manifest:
    """How to run a compiled training step: storage of its inputs, outputs and state."""

    inputs: Mapping[str, Storage]
    input_order: tuple[str, ...]
    input_shapes: Mapping[str, tuple[int, ...]]
    outputs: Mapping[str, Storage]
    state: Mapping[str, Storage]
    labels: tuple[str, ...]

    @property
    def loss(self) -> Storage:
        """The storage of the scalar loss."""
        return self.outputs["loss"]

    @property
    def state_regions(self) -> list[str]:
        """Names of the DRAM regions holding the state, sorted."""
        return sorted({r.name for s in self.state.values() for r in s.regions})

    def relabelled(self, labels: Sequence[str]) -> "Manifest":
        """The same manifest with new instruction labels (after rescheduling)."""
        return dataclasses.replace(self, labels=tuple(labels))

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON, as written into a program file's ``meta``."""
        return {"version": MANIFEST_VERSION,
                "inputs": {k: s.to_json() for k, s in self.inputs.items()},
                "input_order": list(self.input_order),
                "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
                "outputs": {k: s.to_json() for k, s in self.outputs.items()},
                "state": {k: s.to_json() for k, s in self.state.items()},
                "labels": list(self.labels)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], program: Program) -> "Manifest":
        """The manifest written by :meth:`to_json`, its regions looked up in ``program``."""
        version = d.get("version") if isinstance(d, Mapping) else None
        if version != MANIFEST_VERSION:
            found = "no version (an older satc's manifest)" if version is None else f"version {version!r}"
            raise ProgramFileError(f"program manifest has {found}; this satc reads manifest "
                                   f"version {MANIFEST_VERSION}; {_RECOMPILE}")

        def region_of(name: str):
            try:
                return program.region(name)
            except KeyError:
                raise ProgramFileError(f"program manifest names DRAM region {name!r}, which the "
                                       f"program does not have; {_RECOMPILE}") from None

        try:
            def storages(key: str) -> dict[str, Storage]:
                return {k: storage_from_json(s, region_of) for k, s in d[key].items()}

            m = cls(storages("inputs"), tuple(d["input_order"]),
                    {k: tuple(v) for k, v in d["input_shapes"].items()}, storages("outputs"),
                    storages("state"), tuple(d["labels"]))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ProgramFileError(f"program manifest (version {MANIFEST_VERSION}) is malformed "
                                   f"({type(e).__name__}: {e}); {_RECOMPILE}") from None
        if "loss" not in m.outputs or set(m.input_order) != set(m.inputs):
            raise ProgramFileError(f"program manifest lacks the loss or names inputs "
                                   f"{list(m.input_order)} without storage {sorted(m.inputs)}; {_RECOMPILE}")
        if len(m.labels) != len(program.instructions):
            raise ProgramFileError(f"program manifest has {len(m.labels)} instruction labels for "
                                   f"{len(program.instructions)} instructions; {_RECOMPILE}")
        return m

    @classmethod
    def from_program(cls, program: Program) -> "Manifest":
        """The manifest in ``program.meta``; ProgramFileError (with the fix) if there is none."""
        if MANIFEST_KEY not in program.meta:
            raise ProgramFileError(f"this program file has no satc I/O manifest; {_RECOMPILE}")
        return cls.from_json(program.meta[MANIFEST_KEY], program)

    def attach(self, program: Program) -> Program:
        """``program`` with this manifest in its ``meta``."""
        return dataclasses.replace(program, meta={MANIFEST_KEY: self.to_json()})


def rescheduled(result: Any) -> Program:
    """The program of a ScheduleResult, its manifest (if any) carried over with the instruction
    labels in the new order."""
    from satc.passes.schedule import emit_program

    new = emit_program(result)
    old = result.graph.program
    if MANIFEST_KEY not in old.meta:
        return new
    manifest = Manifest.from_program(old)
    labels = [manifest.labels[result.graph.tasks[t].index] for t in result.stream_order()]
    return manifest.relabelled(labels).attach(new)
