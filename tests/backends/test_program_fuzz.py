"""Fuzzing the program-file reader: every damaged file gets a satc error, never a traceback.

A real program file (the mlp, with its manifest) is truncated, bit-flipped
(with and without a recomputed CRC, in the preamble, header, instruction
stream and DRAM image), given another version, and has its header JSON
rewritten at random places. Loading goes all the way to a training session
(program checker, manifest, emulator preparation). The only outcomes allowed:
a :class:`~satc.errors.SatcError` naming what is wrong, or -- for an edit that
leaves a consistent program (new weights, a still-valid field) -- a session
that passes every check. ``COUNTS`` tallies them (printed with ``-s``).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from satc.backends.sat.program import _PREAMBLE, Program

import satc
from satc.errors import ProgramFileError, SatcError
from satc.runtime import Session

COUNTS: Counter = Counter()
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def blob() -> bytes:
    """The bytes of a compiled mlp program file (bdwp:2:8, batch 4)."""
    return satc.compile("mlp", input_shapes={"x": (4, 64)}, sparsity="bdwp:2:8").program.to_bytes()


@pytest.fixture(scope="module", autouse=True)
def report():
    """Print the tally of outcomes after the module."""
    yield
    print(f"\nprogram-file fuzz: {sum(COUNTS.values())} cases, " +
          ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items())))


def _sections(blob: bytes) -> dict[str, tuple[int, int]]:
    _, _, hlen, ninstr, _, _ = _PREAMBLE.unpack_from(blob)
    h0 = _PREAMBLE.size
    return {"preamble": (0, h0), "header": (h0, h0 + hlen),
            "instructions": (h0 + hlen, h0 + hlen + 32 * ninstr),
            "data": (h0 + hlen + 32 * ninstr, len(blob) - 4)}


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _load(data: bytes, must_fail: bool = False) -> None:
    """Read ``data`` as far as a session; tally a clear error or an accepted program."""
    try:
        Session.from_program(Program.from_bytes(data))
    except SatcError as e:
        assert str(e) and "Traceback" not in str(e)
        COUNTS["clear error"] += 1
        return
    assert not must_fail, "a damaged file was accepted"
    COUNTS["accepted (consistent edit)"] += 1


def test_the_undamaged_file_loads(blob):
    session = Session.from_program(Program.from_bytes(blob))
    assert session.manifest.input_order == ("x", "y")


@FAST
@given(st.data())
def test_truncated(blob, data):
    _load(blob[:data.draw(st.integers(0, len(blob) - 1))], must_fail=True)


@FAST
@given(st.data())
def test_flipped_bit_fails_the_crc(blob, data):
    pos, bit = data.draw(st.integers(0, len(blob) - 1)), data.draw(st.integers(0, 7))
    b = bytearray(blob)
    b[pos] ^= 1 << bit
    _load(bytes(b), must_fail=True)


@FAST
@given(st.data(), st.sampled_from(["preamble", "header", "instructions", "data"]))
def test_flipped_bits_behind_a_valid_crc(blob, data, section):
    lo, hi = _sections(blob)[section]
    b = bytearray(blob[:-4])
    for _ in range(data.draw(st.integers(1, 4))):
        b[data.draw(st.integers(lo, hi - 1))] ^= 1 << data.draw(st.integers(0, 7))
    _load(_with_crc(bytes(b)), must_fail=section == "preamble" and b[:8] != blob[:8])


def test_wrong_version(blob):
    b = bytearray(blob[:-4])
    b[8:12] = struct.pack("<I", 3)
    with pytest.raises(ProgramFileError, match="version 3, this satc reads versions 1, 2"):
        Program.from_bytes(_with_crc(bytes(b)))


def test_version_1_files_are_read_without_zero_regions(blob):
    """A version 1 file (its regions have no ``zero`` field) reads as the same program."""
    _, _, hlen, ninstr, _, dlen = _PREAMBLE.unpack_from(blob)
    h0 = _PREAMBLE.size
    header = json.loads(blob[h0:h0 + hlen])
    for r in header["regions"]:
        del r["zero"]
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    old = _with_crc(_PREAMBLE.pack(b"SATPROG\0", 1, len(text), ninstr, 0, dlen) + text
                    + blob[h0 + hlen:-4])
    new, v1 = Program.from_bytes(blob), Program.from_bytes(old)
    assert v1.instructions == new.instructions and not any(r.zero for r in v1.regions)
    assert [(r.name, r.addr, r.shape, r.init) for r in v1.regions] == \
        [(r.name, r.addr, r.shape, r.init) for r in new.regions]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:8]):               # the first few labels / regions suffice
            yield from _paths(v, prefix + (i,))


def _rebuilt(blob: bytes, header: dict) -> bytes:
    _, version, hlen, ninstr, reserved, dlen = _PREAMBLE.unpack_from(blob)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    rest = blob[_PREAMBLE.size + hlen:-4]
    return _with_crc(_PREAMBLE.pack(b"SATPROG\0", version, len(text), ninstr, reserved, dlen) + text + rest)


@pytest.fixture(scope="module")
def header(blob) -> dict:
    """The header JSON of the file."""
    hlen = _PREAMBLE.unpack_from(blob)[2]
    return json.loads(blob[_PREAMBLE.size:_PREAMBLE.size + hlen])


@FAST
@given(st.data())
def test_header_field_replaced(blob, header, data):
    paths = [p for p in _paths(header) if p and p[:2] != ("meta", "satc") or len(p) > 2]
    path = data.draw(st.sampled_from(paths))
    value = data.draw(JSON_VALUES)
    h = json.loads(json.dumps(header))
    node = h
    for k in path[:-1]:
        node = node[k]
    if data.draw(st.booleans()) and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value
    _load(_rebuilt(blob, h))


@pytest.mark.parametrize("where", [("meta", "satc", "state"), ("meta", "satc", "inputs", "x", "pads")])
def test_named_manifest_attacks(blob, header, where):
    """An empty state list (weights reset every step) and huge pads (a 10^12-element pad) are refused."""
    h = json.loads(json.dumps(header))
    node = h
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = {} if where[-1] == "state" else [10 ** 6] * 4
    with pytest.raises(ProgramFileError, match=r"no training state|inputs\[.x.\] \(dense\): pads"):
        _load_strict(_rebuilt(blob, h))


def _load_strict(data: bytes) -> None:
    Session.from_program(Program.from_bytes(data))


def test_deep_json_is_a_clear_error(blob, header):
    h = json.loads(json.dumps(header))
    text = json.dumps(h, sort_keys=True, separators=(",", ":"))
    deep = text[:-1] + ',"zz":' + "[" * 200_000 + "]" * 200_000 + "}"
    _, version, hlen, ninstr, reserved, dlen = _PREAMBLE.unpack_from(blob)
    body = (_PREAMBLE.pack(b"SATPROG\0", version, len(deep), ninstr, reserved, dlen) + deep.encode()
            + blob[_PREAMBLE.size + hlen:-4])
    with pytest.raises(ProgramFileError, match="nests JSON too deeply"):
        Program.from_bytes(_with_crc(body))


@pytest.mark.slow
@MANY
@given(st.data())
def test_header_field_replaced_many(blob, header, data):
    test_header_field_replaced.hypothesis.inner_test(blob, header, data)


@pytest.mark.slow
@MANY
@given(st.data(), st.sampled_from(["preamble", "header", "instructions", "data"]))
def test_flipped_bits_behind_a_valid_crc_many(blob, data, section):
    test_flipped_bits_behind_a_valid_crc.hypothesis.inner_test(blob, data, section)


def test_a_state_entry_missing_from_the_manifest_is_refused(blob, header):
    """The program updates every weight: a manifest that forgets one would reset it each step."""
    h = json.loads(json.dumps(header))
    state = h["meta"]["satc"]["state"]
    name = next(k for k in sorted(state) if state[k]["kind"] == "dense")
    region = state.pop(name)["region"]
    with pytest.raises(ProgramFileError, match=f"overwrites region '{region}' .* does not list it"):
        _load_strict(_rebuilt(blob, h))
