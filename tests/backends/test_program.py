"""Program files: deterministic round trip; truncated or corrupt files raise ProgramFileError."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.emulator import run_program
from satc.backends.sat.program import Program, Region
from satc.errors import ProgramFileError


def _program(cfg):
    rng = np.random.default_rng(0)
    a, b_ = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((8, 4)).astype(np.float32)
    b = ProgramBuilder(cfg)
    ra, rb, rc = b.alloc("A", a.shape, init=a), b.alloc("B", b_.shape, init=b_), b.alloc("C", (4, 4))
    b.load_region(ra, "act", 0)
    b.load_region(rb, "wgt", 0, signal="stce")
    b.gemm(4, 4, 8, a_buf="act", a_addr=0, b_buf="wgt", b_addr=0, c_addr=0, wait="load", signal="store")
    b.store_region(rc, "acc", 0, wait="stce")
    return b.build(), a @ b_


def test_roundtrip_deterministic_and_runs_from_file(small, tmp_path):
    prog, ref = _program(small)
    blob = prog.to_bytes()
    assert _program(small)[0].to_bytes() == blob              # same inputs, same bytes
    prog.save(tmp_path / "p.satp")
    back = Program.load(tmp_path / "p.satp")
    assert back == prog and back.to_bytes() == blob
    np.testing.assert_array_equal(run_program(back).read("C"), ref)
    assert back.region("C").init is None and back.region("A").array().shape == (4, 8)


def test_truncated_and_corrupt(small):
    blob = _program(small)[0].to_bytes()
    for cut in (0, 10, 40, len(blob) - 1):
        with pytest.raises(ProgramFileError):
            Program.from_bytes(blob[:cut])
    flipped = bytearray(blob)
    flipped[100] ^= 1
    with pytest.raises(ProgramFileError, match="checksum"):
        Program.from_bytes(bytes(flipped))
    with pytest.raises(ProgramFileError, match="magic"):
        Program.from_bytes(b"X" + blob[1:])


def _reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_bad_header_with_valid_checksum(small):
    blob = _program(small)[0].to_bytes()[:-4]
    hlen = struct.unpack_from("<I", blob, 12)[0]
    header = blob[32:32 + hlen]
    bad = header.replace(b'"rows":4', b'"rows":0')
    with pytest.raises(ProgramFileError, match="rows"):
        Program.from_bytes(_reseal(blob[:32] + bad + blob[32 + hlen:]))
    bad = header.replace(b'"dtype":"fp32"', b'"dtype":"fp64"', 1)
    with pytest.raises(ProgramFileError, match="fp64"):
        Program.from_bytes(_reseal(blob[:32] + bad + blob[32 + hlen:]))
    junk = b"{" + b" " * (hlen - 1)
    with pytest.raises(ProgramFileError):
        Program.from_bytes(_reseal(blob[:32] + junk + blob[32 + hlen:]))


def test_layout_checks(small):
    with pytest.raises(ProgramFileError, match="overlap"):
        Program(small, (), (Region("a", 0, (4,), "fp32"), Region("b", 8, (4,), "fp32")), 64)
    with pytest.raises(ProgramFileError, match="outside"):
        Program(small, (), (Region("a", 60, (4,), "fp32"),), 64)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzzed_files_raise_only_program_file_error(small, data):
    blob = bytearray(_BLOB.get(small.name) or _BLOB.setdefault(small.name, _program(small)[0].to_bytes()))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        body = bytes(blob[:-4])
        blob = bytearray(_reseal(body))       # defeat the checksum: the parser must still cope
    try:
        Program.from_bytes(bytes(blob))
    except ProgramFileError:
        pass


_BLOB: dict[str, bytes] = {}


def test_dram_size_limit(small):
    with pytest.raises(ProgramFileError, match="dram_size"):
        Program(dataclasses.replace(small, dram_bytes=64), (), (), 128)
