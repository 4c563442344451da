"""SAT program files: header + binary instruction stream + DRAM image.

Layout (all integers little-endian)::

    0   8  magic  b"SATPROG\\0"
    8   4  format version (2)
    12  4  header length H (bytes of UTF-8 JSON)
    16  4  instruction count I
    20  4  reserved, zero
    24  8  data length D
    32  H  header JSON: {"config": {...}, "dram_size": int,
                         "regions": [{"name", "addr", "shape", "dtype",
                                      "init_offset", "init_nbytes", "zero"}],
                         "meta": {...}}   (tool notes: labels, I/O manifest)
    ..  32*I  instructions (backends/sat/isa.py encoding)
    ..  D  data: initial contents of regions, at their init_offset
    ..  4  CRC-32 of every byte before it

JSON is written with sorted keys, so the same program always gives the same
bytes. A region with ``init_nbytes = 0`` has no initial contents (the
emulator treats it as unwritten until an instruction stores to it), unless
``zero`` is true: then it starts all zero, and the zeros are not stored.
Version 1 files (no ``zero`` field) are read as version 2 files without
zero regions.
"""

from __future__ import annotations

import dataclasses
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
from satc.atomic import write_bytes
from satc.errors import ConfigError, ISAError, ProgramFileError

MAGIC = b"SATPROG\0"
VERSION = 2
READS_VERSIONS = (1, 2)
_PREAMBLE = struct.Struct("<8sIIIIQ")


@dataclass(frozen=True)
class Region:
    """A named DRAM region: byte address, shape, dtype and optional initial contents:
    ``init`` bytes, or ``zero`` (all zero, nothing stored: a DRAM pool whose tensors read
    zero halos they never write)."""

    name: str
    addr: int
    shape: tuple[int, ...]
    dtype: str
    init: bytes | None = None
    zero: bool = False

    @property
    def initialised(self) -> bool:
        """Whether the region has initial contents (``init`` bytes or all zero)."""
        return self.init is not None or self.zero

    @property
    def nbytes(self) -> int:
        """Size of the region in bytes."""
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]

    def array(self) -> np.ndarray | None:
        """The initial contents as an ndarray of the region's shape, or None."""
        if self.zero:
            return np.zeros(self.shape, NP_DTYPES[self.dtype])
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
    # the passed ProgramCheck (backends/sat/checker.py), set by check_program; not copied by replace
    checked: Any = field(default=None, init=False, repr=False, hash=False, compare=False)

    def __post_init__(self) -> None:
        _check_layout(self)

    def with_contents(self, regions: tuple[Region, ...] | None = None,
                      meta: dict[str, Any] | None = None) -> "Program":
        """This program with other regions (initial contents) and / or meta. It keeps the
        program check, which depends on the instructions, config and dram_size only."""
        new = dataclasses.replace(self, regions=self.regions if regions is None else regions,
                                  meta=self.meta if meta is None else meta)
        object.__setattr__(new, "checked", self.checked)
        return new

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
                         "init_offset": off if nbytes else 0, "init_nbytes": nbytes,
                         "zero": r.zero})
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
        """Write the program file to ``path`` atomically (a temporary file renamed over it)."""
        write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> "Program":
        """Read a program file from ``path``."""
        try:
            blob = Path(path).read_bytes()
        except OSError as e:
            raise ProgramFileError(f"cannot read program file {path}: {e}") from None
        return _parse(blob)


#: Sane limits of a program file, checked before anything is allocated from its fields.
MAX_HEADER_BYTES = 1 << 26          # 64 MiB of header JSON
MAX_INSTRUCTIONS = 1 << 24          # 16 M instructions (512 MiB of stream)
MAX_REGIONS = 1 << 16
MAX_RANK = 8


def _check_layout(p: Program) -> None:
    if isinstance(p.dram_size, bool) or not isinstance(p.dram_size, int) \
            or not 0 <= p.dram_size <= p.config.dram_bytes:
        raise ProgramFileError(f"dram_size {p.dram_size!r} must be in 0..{p.config.dram_bytes} "
                               f"(dram_bytes of {p.config.name})")
    if len(p.instructions) > MAX_INSTRUCTIONS or len(p.regions) > MAX_REGIONS:
        raise ProgramFileError(f"{len(p.instructions)} instructions and {len(p.regions)} regions; satc "
                               f"takes at most {MAX_INSTRUCTIONS} and {MAX_REGIONS}")
    spans = []
    for r in p.regions:
        if not isinstance(r.name, str) or not r.name:
            raise ProgramFileError(f"region name {r.name!r} must be a non-empty string")
        if r.dtype not in DTYPE_BYTES:
            raise ProgramFileError(f"region {r.name!r}: dtype {r.dtype!r} is not one of {list(DTYPE_BYTES)}")
        if not isinstance(r.shape, tuple) or len(r.shape) > MAX_RANK \
                or any(not _is_int(d) or d < 0 for d in r.shape) or not _is_int(r.addr) or r.addr < 0:
            raise ProgramFileError(f"region {r.name!r}: bad address {r.addr!r} or shape {r.shape!r} "
                                   f"(non-negative integers, at most {MAX_RANK} dims)")
        if r.addr + r.nbytes > p.dram_size:
            raise ProgramFileError(f"region {r.name!r} [{r.addr}, {r.addr + r.nbytes}) lies outside "
                                   f"DRAM of {p.dram_size} bytes")
        if r.init is not None and len(r.init) != r.nbytes:
            raise ProgramFileError(f"region {r.name!r}: {len(r.init)} init bytes for {r.nbytes} bytes")
        if r.init is not None and r.zero:
            raise ProgramFileError(f"region {r.name!r} has both init bytes and the zero flag; "
                                   "give one or the other")
        spans.append((r.addr, r.addr + r.nbytes, r.name))
    names = [r.name for r in p.regions]
    if len(set(names)) != len(names):
        raise ProgramFileError(f"duplicate region names in {names}")
    spans.sort()
    for (a0, a1, n0), (b0, b1, n1) in zip(spans, spans[1:]):
        if b0 < a1 and b1 > b0 and a1 > a0:
            raise ProgramFileError(f"regions {n0!r} and {n1!r} overlap")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _field(d: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``d[key]`` of JSON type ``kind`` (int excludes bool), or ProgramFileError naming it."""
    if not isinstance(d, dict) or key not in d:
        raise ProgramFileError(f"program file header: {where} lacks {key!r}; the file is corrupt")
    v = d[key]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ProgramFileError(f"program file header: {where}.{key} must be {name}, got {v!r:.60}")
    return v


def _region(r: Any, k: int, data: bytes) -> Region:
    where = f"regions[{k}]"
    name = _field(r, "name", str, where)
    shape = _field(r, "shape", list, where)
    if len(shape) > MAX_RANK or not all(_is_int(d) and 0 <= d < 1 << 40 for d in shape):
        raise ProgramFileError(f"program file header: region {name!r}: shape {shape!r:.80} must be at "
                               f"most {MAX_RANK} non-negative integers")
    off, nb = _field(r, "init_offset", int, where), _field(r, "init_nbytes", int, where)
    if off < 0 or nb < 0 or off + nb > len(data):
        raise ProgramFileError(f"region {name!r}: init data [{off}, {off + nb}) outside the data "
                               f"section of {len(data)} bytes")
    zero = _field(r, "zero", bool, where) if "zero" in r else False
    return Region(name, _field(r, "addr", int, where), tuple(shape), _field(r, "dtype", str, where),
                  data[off:off + nb] if nb else None, zero)


def _parse(blob: bytes) -> Program:
    if len(blob) < _PREAMBLE.size + 4:
        raise ProgramFileError(f"program file of {len(blob)} bytes is truncated (no header)")
    magic, version, hlen, ninstr, reserved, dlen = _PREAMBLE.unpack_from(blob)
    if magic != MAGIC:
        raise ProgramFileError("not a SAT program file (bad magic)")
    if version not in READS_VERSIONS:
        raise ProgramFileError(f"program file version {version}, this satc reads versions "
                               f"{', '.join(map(str, READS_VERSIONS))}")
    if hlen > MAX_HEADER_BYTES or ninstr > MAX_INSTRUCTIONS:
        raise ProgramFileError(f"program file preamble claims a {hlen}-byte header and {ninstr} "
                               f"instructions; satc reads at most {MAX_HEADER_BYTES} and "
                               f"{MAX_INSTRUCTIONS}: corrupt")
    expect = _PREAMBLE.size + hlen + 32 * ninstr + dlen + 4
    if len(blob) != expect or reserved:
        raise ProgramFileError(f"program file is {len(blob)} bytes, its header says {expect}: "
                               "truncated or corrupt")
    (crc,) = struct.unpack_from("<I", blob, len(blob) - 4)
    if zlib.crc32(blob[:-4]) != crc:
        raise ProgramFileError("program file checksum mismatch: corrupt")
    pos = _PREAMBLE.size
    try:
        text = blob[pos:pos + hlen].decode()
    except UnicodeDecodeError as e:
        raise ProgramFileError(f"program file header is not UTF-8 (byte {pos + e.start}): corrupt") from None
    try:
        header = json.loads(text)
    except ValueError as e:
        raise ProgramFileError(f"program file header is not valid JSON ({e}): corrupt") from None
    except RecursionError:
        raise ProgramFileError("program file header nests JSON too deeply to read: corrupt") from None
    if not isinstance(header, dict):
        raise ProgramFileError("program file header must be a JSON object: corrupt")
    try:
        config = config_from_dict(_field(header, "config", dict, "header"), "program file config")
        instrs = tuple(decode_all(blob[pos + hlen:pos + hlen + 32 * ninstr]))
    except (ConfigError, ISAError) as e:
        raise ProgramFileError(f"program file: {e}") from None
    data = blob[pos + hlen + 32 * ninstr:-4]
    regions = _field(header, "regions", list, "header")
    if len(regions) > MAX_REGIONS:
        raise ProgramFileError(f"program file header lists {len(regions)} regions; at most {MAX_REGIONS}")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise ProgramFileError("program file header: 'meta' must be an object")
    return Program(config, instrs, tuple(_region(r, k, data) for k, r in enumerate(regions)),
                   _field(header, "dram_size", int, "header"), meta)
