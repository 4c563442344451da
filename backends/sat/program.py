"""SAT program files: header + binary instruction stream + DRAM image.

Layout (all integers little-endian)::

    0   8  magic  b"SATPROG\\0"
    8   4  format version (1)
    12  4  header length H (bytes of UTF-8 JSON)
    16  4  instruction count I
    20  4  reserved, zero
    24  8  data length D
    32  H  header JSON: {"config": {...}, "dram_size": int,
                         "regions": [{"name", "addr", "shape", "dtype",
                                      "init_offset", "init_nbytes"}],
                         "meta": {...}}   (tool notes: labels, I/O manifest)
    ..  32*I  instructions (backends/sat/isa.py encoding)
    ..  D  data: initial contents of regions, at their init_offset
    ..  4  CRC-32 of every byte before it

JSON is written with sorted keys, so the same program always gives the same
bytes. A region with ``init_nbytes = 0`` has no initial contents (the
emulator treats it as unwritten until an instruction stores to it).
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from satc.backends.sat.config import HardwareConfig, config_from_dict
from satc.backends.sat.isa import DTYPE_BYTES, NP_DTYPES, Instruction, decode_all, encode_all
from satc.errors import ConfigError, ISAError, ProgramFileError

MAGIC = b"SATPROG\0"
VERSION = 1
_PREAMBLE = struct.Struct("<8sIIIIQ")


@dataclass(frozen=True)
class Region:
    """A named DRAM region: byte address, shape, dtype and optional initial contents."""

    name: str
    addr: int
    shape: tuple[int, ...]
    dtype: str
    init: bytes | None = None

    @property
    def nbytes(self) -> int:
        """Size of the region in bytes."""
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]

    def array(self) -> np.ndarray | None:
        """The initial contents as an ndarray of the region's shape, or None."""
        if self.init is None:
            return None
        return np.frombuffer(self.init, dtype=NP_DTYPES[self.dtype]).reshape(self.shape)


@dataclass(frozen=True)
class Program:
    """Everything the emulator needs: hardware config, instructions and DRAM layout."""

    config: HardwareConfig
    instructions: tuple[Instruction, ...]
    regions: tuple[Region, ...]
    dram_size: int
    # JSON-able notes for tools (instruction labels, how to feed inputs); ignored by the emulator
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        _check_layout(self)

    def region(self, name: str) -> Region:
        """The region called ``name``."""
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(f"no DRAM region {name!r}; regions: {[r.name for r in self.regions]}")

    def to_bytes(self) -> bytes:
        """The program file as bytes (deterministic)."""
        data = bytearray()
        meta = []
        for r in self.regions:
            off, nbytes = len(data), 0
            if r.init is not None:
                data += r.init
                nbytes = len(r.init)
            meta.append({"name": r.name, "addr": r.addr, "shape": list(r.shape), "dtype": r.dtype,
                         "init_offset": off if nbytes else 0, "init_nbytes": nbytes})
        header = json.dumps({"config": self.config.to_dict(), "dram_size": self.dram_size,
                             "regions": meta, "meta": self.meta},
                            sort_keys=True, separators=(",", ":")).encode()
        body = (_PREAMBLE.pack(MAGIC, VERSION, len(header), len(self.instructions), 0, len(data))
                + header + encode_all(self.instructions) + bytes(data))
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Program":
        """Parse a program file; anything truncated or corrupt raises ProgramFileError."""
        return _parse(bytes(blob))

    def save(self, path: str | Path) -> None:
        """Write the program file to ``path``."""
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> "Program":
        """Read a program file from ``path``."""
        try:
            blob = Path(path).read_bytes()
        except OSError as e:
            raise ProgramFileError(f"cannot read program file {path}: {e}") from None
        return _parse(blob)


def _check_layout(p: Program) -> None:
    if not isinstance(p.dram_size, int) or not 0 <= p.dram_size <= p.config.dram_bytes:
        raise ProgramFileError(f"dram_size {p.dram_size!r} must be in 0..{p.config.dram_bytes} "
                               f"(dram_bytes of {p.config.name})")
    spans = []
    for r in p.regions:
        if r.dtype not in DTYPE_BYTES:
            raise ProgramFileError(f"region {r.name!r}: dtype {r.dtype!r} is not one of {list(DTYPE_BYTES)}")
        if any(not isinstance(d, int) or d < 0 for d in r.shape) or not isinstance(r.addr, int) or r.addr < 0:
            raise ProgramFileError(f"region {r.name!r}: bad address {r.addr!r} or shape {r.shape!r}")
        if r.addr + r.nbytes > p.dram_size:
            raise ProgramFileError(f"region {r.name!r} [{r.addr}, {r.addr + r.nbytes}) lies outside "
                                   f"DRAM of {p.dram_size} bytes")
        if r.init is not None and len(r.init) != r.nbytes:
            raise ProgramFileError(f"region {r.name!r}: {len(r.init)} init bytes for {r.nbytes} bytes")
        spans.append((r.addr, r.addr + r.nbytes, r.name))
    names = [r.name for r in p.regions]
    if len(set(names)) != len(names):
        raise ProgramFileError(f"duplicate region names in {names}")
    spans.sort()
    for (a0, a1, n0), (b0, b1, n1) in zip(spans, spans[1:]):
        if b0 < a1 and b1 > b0 and a1 > a0:
            raise ProgramFileError(f"regions {n0!r} and {n1!r} overlap")


def _parse(blob: bytes) -> Program:
    if len(blob) < _PREAMBLE.size + 4:
        raise ProgramFileError(f"program file of {len(blob)} bytes is truncated (no header)")
    magic, version, hlen, ninstr, reserved, dlen = _PREAMBLE.unpack_from(blob)
    if magic != MAGIC:
        raise ProgramFileError("not a SAT program file (bad magic)")
    if version != VERSION:
        raise ProgramFileError(f"program file version {version}, this satc reads version {VERSION}")
    expect = _PREAMBLE.size + hlen + 32 * ninstr + dlen + 4
    if len(blob) != expect or reserved:
        raise ProgramFileError(f"program file is {len(blob)} bytes, its header says {expect}: "
                               "truncated or corrupt")
    (crc,) = struct.unpack_from("<I", blob, len(blob) - 4)
    if zlib.crc32(blob[:-4]) != crc:
        raise ProgramFileError("program file checksum mismatch: corrupt")
    pos = _PREAMBLE.size
    try:
        header = json.loads(blob[pos:pos + hlen].decode())
        config = config_from_dict(header["config"], "program file config")
        instrs = tuple(decode_all(blob[pos + hlen:pos + hlen + 32 * ninstr]))
        data = blob[pos + hlen + 32 * ninstr:-4]
        regions = []
        for r in header["regions"]:
            off, nb = int(r["init_offset"]), int(r["init_nbytes"])
            if off < 0 or nb < 0 or off + nb > len(data):
                raise ProgramFileError(f"region {r['name']!r}: init data outside the data section")
            regions.append(Region(str(r["name"]), int(r["addr"]), tuple(int(d) for d in r["shape"]),
                                  str(r["dtype"]), data[off:off + nb] if nb else None))
        meta = header.get("meta", {})
        if not isinstance(meta, dict):
            raise ProgramFileError("program file header: 'meta' must be an object")
        return Program(config, instrs, tuple(regions), int(header["dram_size"]), meta)
    except ProgramFileError:
        raise
    except (ConfigError, ISAError) as e:
        raise ProgramFileError(f"program file: {e}") from None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise ProgramFileError(f"program file header is malformed: {type(e).__name__}: {e}") from None
