"""The SAT target: hardware config, ISA, program files, emulator and cycle model.

Typical use by the compiler::

    cfg = load_hardware(DEFAULT_HARDWARE)   # "sat-vcu1525"
    b = ProgramBuilder(cfg)            # one method per instruction
    ...
    prog = b.build()                   # Program: config + instructions + DRAM layout
    prog.save("model.satp")
    result = run_program(prog)         # functional emulator; result.read("region")
    report = time_program(prog)        # cycle model: total, per-engine, timeline

Names load lazily (as in :mod:`satc`), so importing one backend module, e.g.
``satc.backends.sat.isa``, loads only what that module needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ProgramBuilder": "builder",
    "DEFAULT_HARDWARE": "config", "HardwareConfig": "config", "default_hardware": "config",
    "describe_hardware": "config", "list_presets": "config", "load_hardware": "config",
    "instruction_cycles": "cost_model",
    "Emulator": "emulator", "run_program": "emulator",
    "Instruction": "isa", "assemble": "isa", "decode": "isa", "decode_all": "isa",
    "disassemble": "isa", "encode": "isa", "encode_all": "isa",
    "compress_rows": "nmformat", "decompress_rows": "nmformat", "pack_indices": "nmformat",
    "unpack_indices": "nmformat",
    "Program": "program", "Region": "program",
    "TimingReport": "timing", "simulate": "timing", "time_program": "timing",
    "hp_record": "wuve",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
