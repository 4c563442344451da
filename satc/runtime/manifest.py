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
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from satc.backends.sat.codegen.memory import (Compressed, Dense, OneHot, Storage, TapMajor,
                                              storage_from_json)
from satc.backends.sat.program import Program, Region
from satc.errors import ProgramFileError, SparsityError
from satc.ir.nm import check_nm

MANIFEST_KEY = "satc"
MANIFEST_VERSION = 2          # 1: the unversioned manifest of earlier satc (field names of codegen)
_MAX_RANK = 8
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

        _check_json(d)
        try:
            def storages(key: str) -> dict[str, Storage]:
                return {k: storage_from_json(s, region_of) for k, s in d[key].items()}

            m = cls(storages("inputs"), tuple(d["input_order"]),
                    {k: tuple(v) for k, v in d["input_shapes"].items()}, storages("outputs"),
                    storages("state"), tuple(d["labels"]))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ProgramFileError(f"program manifest (version {MANIFEST_VERSION}) is malformed "
                                   f"({type(e).__name__}: {e}); {_RECOMPILE}") from None
        for group in ("inputs", "outputs", "state"):
            for k, st in getattr(m, group).items():
                _check_storage(f"{group}[{k!r}]", st)
        if "loss" not in m.outputs or set(m.input_order) != set(m.inputs) \
                or len(set(m.input_order)) != len(m.input_order):
            raise ProgramFileError(f"program manifest lacks the loss or names inputs "
                                   f"{list(m.input_order)} without storage {sorted(m.inputs)}; {_RECOMPILE}")
        if _elements(m.loss) != 1:
            raise ProgramFileError(f"program manifest: the loss has {_elements(m.loss)} elements, not "
                                   f"1; {_RECOMPILE}")
        for k in m.input_order:
            want = m.input_shapes.get(k)
            if want != _value_shape(m.inputs[k]):
                raise ProgramFileError(f"program manifest: input {k!r} has shape {want} but its "
                                       f"storage holds {_value_shape(m.inputs[k])}; {_RECOMPILE}")
        if not m.state:
            raise ProgramFileError(f"program manifest lists no training state, so every step would "
                                   f"restart from the initial weights; {_RECOMPILE}")
        for k, st in m.state.items():
            for r in st.regions:
                if r.init is None:
                    raise ProgramFileError(f"program manifest: state {k!r} lives in region {r.name!r}, "
                                           f"which has no initial contents; {_RECOMPILE}")
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
        return program.with_contents(meta={MANIFEST_KEY: self.to_json()})


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


def check_carried(manifest: Manifest, carried: Sequence[str]) -> None:
    """Refuse a manifest whose state misses a region the step carries to the next one
    (``carried``: :attr:`satc.backends.sat.emulator.Emulator.carried`)."""
    kept = set(manifest.state_regions) | {r.name for s in manifest.inputs.values() for r in s.regions}
    lost = [r for r in carried if r not in kept]
    if lost:
        raise ProgramFileError(f"program manifest: the program reads and then overwrites region "
                               f"{lost[0]!r} (training state), but the manifest's state does not list "
                               f"it, so every step would restart from its initial value; {_RECOMPILE}")


def _check_json(d: Mapping[str, Any]) -> None:
    """The JSON types of a version-2 manifest, before any storage is built from it."""
    for key in ("inputs", "outputs", "state", "input_shapes"):
        v = d.get(key)
        if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
            raise ProgramFileError(f"program manifest: {key!r} must be an object keyed by name; "
                                   f"{_RECOMPILE}")
        if key != "input_shapes" and not all(isinstance(s, dict) for s in v.values()):
            raise ProgramFileError(f"program manifest: every entry of {key!r} must be a storage "
                                   f"object; {_RECOMPILE}")
    for key in ("input_order", "labels"):
        v = d.get(key)
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ProgramFileError(f"program manifest: {key!r} must be a list of strings; {_RECOMPILE}")
    for k, shape in d["input_shapes"].items():
        if not isinstance(shape, list) or len(shape) > _MAX_RANK or not all(_is_count(x) for x in shape):
            raise ProgramFileError(f"program manifest: input_shapes[{k!r}] = {shape!r:.80} must be a "
                                   f"list of at most {_MAX_RANK} positive integers; {_RECOMPILE}")


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1 << 40


def _region_elements(r: Region) -> int:
    return math.prod(r.shape)


def _elements(st: Storage) -> int:
    return math.prod(_value_shape(st))


def _value_shape(st: Storage) -> tuple[int, ...]:
    """The shape of the numpy value a storage holds."""
    if isinstance(st, OneHot):
        return (st.region.shape[0],) if len(st.region.shape) == 2 else ()
    return tuple(st.shape)


def _check_storage(where: str, st: Storage) -> None:
    """A storage whose shapes agree with its regions (so encode / decode allocate only what the
    regions hold), or ProgramFileError naming it."""
    def bad(why: str) -> ProgramFileError:
        return ProgramFileError(f"program manifest: {where} ({st.KIND}): {why}; {_RECOMPILE}")

    if isinstance(st, OneHot):
        r = st.region
        if not _is_count(st.classes) or len(r.shape) != 2 or r.shape[1] != st.classes:
            raise bad(f"{st.classes!r} classes in a region of shape {r.shape} (want [batch, classes])")
        if st.ignore_index is not None and 0 <= st.ignore_index < st.classes:
            raise bad(f"ignore index {st.ignore_index} is a class (want one outside [0, {st.classes}))")
        return
    shape = st.shape
    if not isinstance(shape, tuple) or len(shape) > _MAX_RANK or not all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 40 for x in shape):
        raise bad(f"shape {shape!r:.80} must be at most {_MAX_RANK} non-negative integers")
    if isinstance(st, Dense):
        pads = st.pads
        if len(pads) != 4 or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 20
                                     for x in pads) or (any(pads) and len(shape) != 4):
            raise bad(f"pads {pads!r:.80} must be 4 non-negative integers (rank-4 tensors only)")
        full = shape[:2] + st.hw_padded if any(pads) else shape
        if math.prod(full) != _region_elements(st.region):
            raise bad(f"shape {shape} with pads {pads} holds {math.prod(full)} elements, region "
                      f"{st.region.name!r} {_region_elements(st.region)}")
    elif isinstance(st, TapMajor):
        if len(shape) != 4 or math.prod(shape) != _region_elements(st.region):
            raise bad(f"shape {shape} must be [Co, Ci, kh, kw] of the {_region_elements(st.region)} "
                      f"elements of region {st.region.name!r}")
    elif isinstance(st, Compressed):
        try:
            check_nm(st.n, st.m)
        except SparsityError as e:
            raise bad(str(e)) from None
        if len(shape) < 2 or st.axis not in (0, 1) or st.indices.dtype != "u8":
            raise bad(f"shape {shape}, axis {st.axis}, index dtype {st.indices.dtype} (want rank >= 2, "
                      "axis 0 or 1, u8 indices)")
        if st.taps * st.outer * st.val_cols != _region_elements(st.values) or \
                st.taps * st.outer * st.idx_cols != _region_elements(st.indices):
            raise bad(f"shape {shape} {st.n}:{st.m} does not match regions {st.values.name!r} "
                      f"{st.values.shape} and {st.indices.name!r} {st.indices.shape}")
