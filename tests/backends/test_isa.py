"""ISA: table-driven encoding, decoding, assembly; fuzzing of the decoder."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satc.backends.sat import isa
from satc.backends.sat.isa import (ENGINES, INSTR_BYTES, LAYOUT, OPS, Instruction, assemble, decode,
                                   decode_all, disassemble, encode, field_positions, to_asm)
from satc.errors import ISAError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "isa.md"


@st.composite
def instructions(draw):
    """Any valid instruction: every field drawn within its width / enum / dependency rules."""
    spec = draw(st.sampled_from(OPS))
    raw = {}
    for slot in LAYOUT[spec.name][1:]:
        f = slot.field
        if f.kind == "enum":
            raw[f.name] = draw(st.integers(0, len(f.values) - 1))
        else:
            raw[f.name] = draw(st.integers(0, (1 << f.width) - 1))
    engine = spec.engine or ENGINES[raw["engine"]]
    own = 1 << ENGINES.index(engine)
    raw["wait"] &= ~own
    raw["signal"] &= ~own
    return Instruction.from_raw(spec.name, raw)


@settings(max_examples=400, deadline=None)
@given(instructions())
def test_encode_decode_encode(ins):
    b = encode(ins)
    assert len(b) == INSTR_BYTES
    back = decode(b)
    assert back == ins
    assert encode(back) == b


@settings(max_examples=300, deadline=None)
@given(st.lists(instructions(), min_size=1, max_size=5))
def test_asm_bin_asm(instrs):
    binary = b"".join(encode(i) for i in instrs)
    text = disassemble(binary)
    assert assemble(text) == binary            # assemble(disassemble(x)) == x, byte for byte
    assert disassemble(assemble(text)) == text


@settings(max_examples=1000, deadline=None)
@given(st.binary(min_size=0, max_size=3 * INSTR_BYTES + 5))
def test_random_bytes_raise_only_isa_error(data):
    try:
        decode_all(data)
    except ISAError:
        return
    assert assemble(disassemble(data)) == data


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 7), st.binary(min_size=INSTR_BYTES - 1, max_size=INSTR_BYTES - 1))
def test_random_words_with_valid_opcode(op, rest):
    data = bytes([op | (rest[0] & 0xF0)]) + rest[1:] + b"\0"
    try:
        ins = decode(data)
    except ISAError:
        return
    assert encode(ins) == data


def test_fixed_layout_and_known_encoding():
    assert [f for f in field_positions("gemm")[:6]] == [
        ("opcode", 0, 3), ("wait", 4, 9), ("signal", 10, 15), ("dataflow", 16, 16),
        ("n", 17, 19), ("m", 20, 25)]
    ins = Instruction("nop", engine="stce", wait=("load",), signal=("store", "vector"))
    word = int.from_bytes(encode(ins), "little")
    assert word == 7 | (0b000001 << 4) | (0b001010 << 10) | (2 << 16)
    assert to_asm(ins) == "nop wait=load signal=store|vector engine=stce"


def test_f32_immediates_exact():
    for x in (0.1, -0.0, float("inf"), 1e-45, 3.4028234663852886e38):
        ins = Instruction("vec", func="mul_imm", s0_buf="vec", s1_buf="vec", d_buf="vec", rows=1,
                          cols=1, imm=x)
        assert assemble(to_asm(ins)) == encode(ins)
    nan = bytearray(encode(ins))
    word = int.from_bytes(nan, "little")
    lo = dict((n, lo) for n, lo, _ in field_positions("vec"))["imm"]
    word = (word & ~(0xFFFFFFFF << lo)) | (0x7FC00123 << lo)
    raw = word.to_bytes(INSTR_BYTES, "little")
    assert "imm=0x7fc00123" in disassemble(raw)
    assert assemble(disassemble(raw)) == raw


@pytest.mark.parametrize("text,needle", [
    ("frob x=1", "unknown op"),
    ("nop engine=stce wait=stce", "own queue"),
    ("nop engine=gpu", "not one of"),
    ("load buf=act dram_addr=0 rows=1 cols=1 dram_row_stride=1", "missing field 'buf_row_stride'"),
    ("load buf=act dram_addr=0 rows=70000 cols=1 dram_row_stride=1 buf_row_stride=1", "16 unsigned bits"),
    ("nop engine=stce engine=load", "twice"),
    ("nop engine=stce bogus=1", "bad operand"),
    ("vec func=copy s0_buf=vec s1_buf=vec d_buf=vec rows=1 cols=1 imm=1e39", "overflows fp32"),
])
def test_assembler_errors(text, needle):
    with pytest.raises(ISAError, match=needle):
        assemble(text)


def test_decoder_errors():
    with pytest.raises(ISAError, match="unknown opcode 0"):
        decode(bytes(INSTR_BYTES))
    bad = bytearray(encode(Instruction("nop", engine="load")))
    bad[-1] = 0x80
    with pytest.raises(ISAError, match="reserved bits"):
        decode(bytes(bad))
    with pytest.raises(ISAError, match="instruction 1"):
        decode_all(encode(Instruction("nop", engine="load")) + bytes(INSTR_BYTES))
    with pytest.raises(ISAError, match="multiple of 32"):
        decode_all(bytes(33))


def test_comments_and_blank_lines():
    text = "# a program\n\nnop engine=sore   # trailing\n"
    assert decode_all(assemble(text)) == [Instruction("nop", engine="sore")]


def test_docs_field_tables_in_sync():
    doc = DOCS.read_text()
    for spec in OPS:
        assert isa.field_table_markdown(spec.name) in doc, f"docs/isa.md table of {spec.name} is stale"


def test_docs_examples_assemble_and_list_every_vector_function():
    import re

    from satc.backends.sat.vecfuncs import VEC_FUNC_NAMES
    doc = DOCS.read_text()
    blocks = re.findall(r"```\n(.*?)```", doc, re.S)
    assert len(blocks) >= 7
    for block in blocks:
        assert decode_all(assemble(block))
    for i, name in enumerate(VEC_FUNC_NAMES):
        assert f"| {i} | `{name}` |" in doc


def test_fields_are_read_only_and_replace_makes_changed_copies():
    ins = Instruction("load", buf="act", dram_addr=0, rows=4, cols=8, dram_row_stride=8,
                      buf_row_stride=8)
    assert ins.cols == 8                                # decoded once, then cached
    with pytest.raises(AttributeError, match="read-only"):
        ins.cols = 16
    assert ins.cols == 8 and ins.replace(cols=16).cols == 16
    assert encode(ins) == encode(ins.replace(cols=8))


def test_every_field_kind_reads_its_readable_value_whichever_field_is_read_first():
    """The first field read decodes all of them: enums as names, deps as engine tuples, f32 as
    floats, unsigned fields as their raw value -- the same as decoding each one alone."""
    made = dict(func="mul_imm", rows=3, cols=5, s0_buf="vec", s1_buf="vec", d_buf="act", imm=-0.375,
                wait="load|stce", signal="store")
    for first in ("rows", "imm", "wait", "d_buf", "func"):
        ins = Instruction("vec", **made)
        getattr(ins, first)
        assert (ins.func, ins.rows, ins.cols, ins.s0_buf, ins.d_buf, ins.imm) == \
            ("mul_imm", 3, 5, "vec", "act", -0.375)
        assert ins.wait == ("load", "stce") and ins.signal == ("store",)
        assert ins.raw["d_buf"] != "act" and ins.raw["wait"] == 0b101
    with pytest.raises(AttributeError):
        Instruction("vec", **made).bogus


def test_field_limits_come_from_the_field_table():
    assert isa.field_width("load", "buf_addr") == 24 and isa.field_max("gemm", "mt") == 0xFFFF
    assert isa.field_max("load", "planes") == 0xFFF and isa.field_max("load", "opcode") == 0xF
    with pytest.raises(ISAError, match="no field 'bogus'"):
        isa.field_max("gemm", "bogus")
