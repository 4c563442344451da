"""Fuzzing the assembler and decoder: bad text or words get an ISAError naming the line or
field, never a traceback; whatever assembles round-trips through the disassembler.

``COUNTS`` tallies the outcomes (printed with ``-s``).
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from satc.backends.sat.isa import (
    INSTR_BYTES,
    LAYOUT,
    OPS,
    assemble,
    decode,
    disassemble,
    encode,
)

from satc.errors import ISAError

COUNTS: Counter = Counter()
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OP_NAMES = [o.name for o in OPS]


@pytest.fixture(scope="module", autouse=True)
def report():
    """Print the tally of outcomes after the module."""
    yield
    print(f"\nassembler fuzz: {sum(COUNTS.values())} cases, " +
          ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items())))


def _value(field, draw) -> str:
    """A field value: often valid, sometimes out of range, of the wrong kind, or garbage."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return str(draw(st.integers(-5, (1 << field.width) + 5)))
    if kind == 1 and field.values:
        return draw(st.sampled_from(field.values))
    if kind == 2:
        return draw(st.sampled_from(["load|stce", "-", "", "vector|vector", "dram", "0x7fc00000",
                                     "1e40", "nan", "-0.0", "0x", "=", "1_0", "０"]))
    if kind == 3:
        return str(draw(st.floats(allow_nan=True, allow_infinity=True)))
    if kind == 4:
        return draw(st.text(max_size=6).filter(lambda t: "#" not in t and not any(c.isspace() for c in t)))
    return str(draw(st.integers(0, (1 << field.width) - 1))) if field.kind == "uint" else \
        (field.values[0] if field.values else "0")


@st.composite
def asm_lines(draw) -> str:
    """One line: a known op with some of its fields (or unknown ones), an unknown op, or junk."""
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return draw(st.text(max_size=30))
    op = draw(st.sampled_from(OP_NAMES)) if shape > 1 else draw(st.text(min_size=1, max_size=6).filter(
        lambda t: t.strip() and "#" not in t))
    fields = [s.field for s in LAYOUT.get(op, LAYOUT["nop"])[1:]]
    chosen = draw(st.lists(st.sampled_from(fields), max_size=len(fields) + 2))
    parts = [op] + [f"{f.name}={_value(f, draw)}" for f in chosen]
    if draw(st.integers(0, 9)) == 0:
        parts.append(draw(st.sampled_from(["bogus=1", "k", "=3", "opcode=1", "mt=1=2"])))
    return " ".join(parts)


def _assemble(text: str) -> None:
    try:
        binary = assemble(text)
    except ISAError as e:
        assert str(e).startswith("line "), e                  # names the line
        COUNTS["clear error"] += 1
        return
    assert assemble(disassemble(binary)) == binary               # round trip
    COUNTS["assembled (round trip)"] += 1


@FAST
@given(st.lists(asm_lines(), min_size=1, max_size=3))
def test_assembler(lines):
    _assemble("\n".join(lines))


@FAST
@given(st.binary(min_size=INSTR_BYTES, max_size=INSTR_BYTES))
def test_decoder_on_random_words(word):
    try:
        ins = decode(word)
    except ISAError:
        COUNTS["clear error"] += 1
        return
    assert encode(ins) == word
    COUNTS["decoded (round trip)"] += 1


@FAST
@given(st.sampled_from(OP_NAMES), st.data())
def test_valid_instructions_round_trip(op, data):
    """Every field at a random in-range value: assembles unless the deps rule (no self token)
    refuses it; the text round-trips."""
    fields = [s.field for s in LAYOUT[op][1:]]
    parts = [op]
    for f in fields:
        if f.kind == "enum":
            parts.append(f"{f.name}={data.draw(st.sampled_from(f.values))}")
        elif f.kind == "f32":
            parts.append(f"{f.name}={data.draw(st.floats(width=32, allow_nan=False))!r}")
        elif f.kind == "uint":
            parts.append(f"{f.name}={data.draw(st.integers(0, (1 << f.width) - 1))}")
    _assemble(" ".join(parts))


@pytest.mark.parametrize("line,needle", [
    ("fly x=1", "unknown op 'fly'"),
    ("gemm a_buf=act b_buf=wgt idx_buf=wgt mt=65536 nt=1 k=1", "gemm.mt: 65536 does not fit in 16 unsigned bits"),
    ("vec func=frobnicate", "not one of"),
    ("load wait=stce|dram", "unknown engine 'dram'"),
    ("load buf_addr=12abc", "cannot parse '12abc'"),
    ("nop engine=load wait=load", "cannot wait on its own queue"),
    ("load rows", "bad operand 'rows'"),
    ("load rows=1 rows=2", "given twice"),
    ("vec func=copy s0_buf=act s1_buf=act d_buf=act rows=1 cols=1 imm=1e40", "overflows fp32"),
])
def test_named_errors(line, needle):
    with pytest.raises(ISAError, match="^line 1: ") as e:
        assemble(line)
    assert needle in str(e.value)


@pytest.mark.slow
@MANY
@given(st.lists(asm_lines(), min_size=1, max_size=3))
def test_assembler_many(lines):
    _assemble("\n".join(lines))
