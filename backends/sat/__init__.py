"""The SAT target: hardware config, ISA, program files, emulator and cycle model.

Typical use by the compiler::

    cfg = load_hardware("sat-vcu1525")
    b = ProgramBuilder(cfg)            # one method per instruction
    ...
    prog = b.build()                   # Program: config + instructions + DRAM layout
    prog.save("model.satp")
    result = run_program(prog)         # functional emulator; result.read("region")
    report = time_program(prog)        # cycle model: total, per-engine, timeline
"""

from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.config import (HardwareConfig, default_hardware, describe_hardware,
                                      list_presets, load_hardware)
from satc.backends.sat.emulator import Emulator, run_program
from satc.backends.sat.isa import (Instruction, assemble, decode, decode_all, disassemble, encode,
                                   encode_all)
from satc.backends.sat.nmformat import compress_rows, decompress_rows, pack_indices, unpack_indices
from satc.backends.sat.program import Program, Region
from satc.backends.sat.timing import TimingReport, instruction_cycles, simulate, time_program
from satc.backends.sat.wuve import hp_record

__all__ = [
    "HardwareConfig", "load_hardware", "default_hardware", "describe_hardware", "list_presets",
    "Instruction", "assemble", "disassemble", "encode", "decode", "encode_all", "decode_all",
    "Program", "Region", "ProgramBuilder", "Emulator", "run_program",
    "TimingReport", "simulate", "time_program", "instruction_cycles",
    "compress_rows", "decompress_rows", "pack_indices", "unpack_indices", "hp_record",
]
