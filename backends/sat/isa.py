"""The SAT instruction set, defined once as data.

Every instruction is 256 bits (32 bytes, little-endian). Bits 0-15 are a
common header: ``opcode`` (4 bits), ``wait`` and ``signal`` (6-bit engine
masks, the dependency tokens). The opcode's own fields follow from bit 16 in
the order of its table row in :data:`OPS`; bits above the last field are
reserved and must be zero. Encoder, decoder, assembler and disassembler are
all generated from :data:`OPS`, and so are the field tables of
``docs/isa.md`` (:func:`field_table_markdown`).

Dependency tokens generalise VTA's pop/push bits to six engines: every
ordered pair of engines (src, dst) has a token FIFO. An instruction first
pops one token from ``src -> self`` for every engine in ``wait``, runs, then
pushes one token to ``self -> dst`` for every engine in ``signal``.

Assembly is one instruction per line: ``op field=value ...`` with every
field of the op; enum fields by name, ``wait``/``signal`` as ``eng|eng`` or
``-``, f32 fields as decimal (or ``0x`` + 8 hex digits for raw bits, which
the disassembler uses for NaN). ``#`` starts a comment.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from satc.backends.sat.vecfuncs import VEC_FUNC_NAMES
from satc.errors import ISAError

INSTR_BITS = 256
INSTR_BYTES = INSTR_BITS // 8

ENGINES: tuple[str, ...] = ("load", "store", "stce", "vector", "wuve", "sore")
#: Each engine's number: its place in ENGINES and its bit in a wait / signal mask.
ENGINE_NUMBER: dict[str, int] = {e: i for i, e in enumerate(ENGINES)}
#: The engine numbers of every wait / signal mask, ascending.
MASK_ENGINES: tuple[tuple[int, ...], ...] = tuple(
    tuple(i for i in range(len(ENGINES)) if mask >> i & 1) for mask in range(1 << len(ENGINES)))
BUFFERS: tuple[str, ...] = ("act", "wgt", "acc", "vec")
DTYPES: tuple[str, ...] = ("fp32", "fp16", "u8")
DTYPE_BYTES: dict[str, int] = {"fp32": 4, "fp16": 2, "u8": 1}
NP_DTYPES: dict[str, np.dtype] = {"fp32": np.dtype("<f4"), "fp16": np.dtype("<f2"), "u8": np.dtype("u1")}
DATAFLOWS: tuple[str, ...] = ("ws", "os")
BCASTS: tuple[str, ...] = ("none", "row", "col", "scalar")
WUVE_FUNCS: tuple[str, ...] = ("sgd", "adamw")


@dataclass(frozen=True)
class Field:
    """One instruction field: ``kind`` is uint, enum, deps or f32."""

    name: str
    width: int
    kind: str
    doc: str
    values: tuple[str, ...] = ()
    default: Any = None


@dataclass(frozen=True)
class OpSpec:
    """One opcode: its code, engine queue (None: chosen by the ``engine`` field) and fields."""

    name: str
    code: int
    engine: str | None
    fields: tuple[Field, ...]
    doc: str


def _u(name: str, width: int, doc: str, default: Any = None) -> Field:
    return Field(name, width, "uint", doc, default=default)


def _e(name: str, width: int, values: tuple[str, ...], doc: str, default: Any = None) -> Field:
    return Field(name, width, "enum", doc, values, default)


def _tile(prefix: str, what: str, dtype: bool = True, stride: bool = True) -> tuple[Field, ...]:
    """buf / dtype / addr / stride fields of one on-chip operand."""
    out = [_e(f"{prefix}_buf", 2, BUFFERS, f"buffer of {what}")]
    if dtype:
        out.append(_e(f"{prefix}_dtype", 2, DTYPES, f"element type of {what}", "fp32"))
    out.append(_u(f"{prefix}_addr", 24, f"byte address of {what} in its buffer", 0))
    if stride:
        out.append(_u(f"{prefix}_stride", 16, f"row stride of {what} (elements; bytes for indices)", 0))
    return tuple(out)


HEADER: tuple[Field, ...] = (
    _u("opcode", 4, "operation code"),
    Field("wait", 6, "deps", "engines to pop one token from before starting", default=()),
    Field("signal", 6, "deps", "engines to push one token to after finishing", default=()),
)

_DMA_FIELDS = (
    _e("buf", 2, BUFFERS, "on-chip buffer"),
    _e("dtype", 2, DTYPES, "element type (sets the element size)", "fp32"),
    _u("buf_addr", 24, "byte address in the buffer", 0),
    _u("dram_addr", 32, "byte address in DRAM"),
    _u("planes", 12, "number of planes (3rd dimension)", 1),
    _u("rows", 16, "rows per plane"),
    _u("cols", 16, "elements per row (contiguous)"),
    _u("dram_plane_stride", 32, "DRAM plane stride (elements)", 0),
    _u("dram_row_stride", 32, "DRAM row stride (elements)"),
    _u("buf_plane_stride", 24, "buffer plane stride (elements)", 0),
    _u("buf_row_stride", 16, "buffer row stride (elements)"),
)

OPS: tuple[OpSpec, ...] = (
    OpSpec("load", 1, "load", _DMA_FIELDS,
           "DMA a planes x rows x cols tile from DRAM into an on-chip buffer."),
    OpSpec("store", 2, "store", _DMA_FIELDS,
           "DMA a planes x rows x cols tile from an on-chip buffer to DRAM."),
    OpSpec("gemm", 3, "stce", (
        _e("dataflow", 1, DATAFLOWS, "weight- or output-stationary", "ws"),
        _u("n", 3, "N of N:M (0: dense)", 0),
        _u("m", 6, "M of N:M (0: dense)", 0),
        _u("sparse_b", 1, "1: B is the compressed operand, 0: A is (when n > 0)", 0),
        _u("trans_a", 1, "A is stored K x mt (dense A only)", 0),
        _u("trans_b", 1, "B is stored nt x K (dense B only)", 0),
        _u("accumulate", 1, "1: C += A B, 0: C = A B", 0),
        *_tile("a", "A (values when compressed)"),
        *_tile("b", "B (values when compressed)"),
        *_tile("idx", "the packed N:M indices", dtype=False),
        _u("c_addr", 24, "byte address of C (fp32) in the acc buffer", 0),
        _u("c_stride", 16, "row stride of C (elements)", 0),
        _u("mt", 16, "rows of C"),
        _u("nt", 16, "columns of C"),
        _u("k", 16, "reduction length"),
        _u("interleave", 1, "1: interleave mapping -- consecutive array passes go to independent "
           "output blocks, so the array drains only between dependent passes (timing only)", 0),
        _u("stationary_a", 1, "dense WS: 1: A sits stationary in the array and B streams, 0: B "
           "stationary (N:M: the compressed operand is stationary; must be 0) (timing only)", 0),
    ), "C[mt, nt] (+)= A[mt, k] @ B[k, nt] on the STCE, dense or N:M."),
    OpSpec("vec", 4, "vector", (
        _e("func", 6, VEC_FUNC_NAMES, "vector function (table in docs/isa.md)"),
        _e("bcast", 2, BCASTS, "broadcast of s1: none, row (1 x cols), col (rows x 1), scalar", "none"),
        _u("axis", 1, "axis of reductions / softmax / loss: 1 along cols, 0 along rows", 1),
        _u("accumulate", 1, "1: d += f(...), 0: d = f(...)", 0),
        *_tile("s0", "source 0"),
        *_tile("s1", "source 1"),
        *_tile("d", "the destination"),
        _u("rows", 16, "rows of s0"),
        _u("cols", 16, "columns of s0"),
        _u("kh", 4, "pooling window height", 0),
        _u("kw", 4, "pooling window width", 0),
        _u("sh", 4, "pooling stride along rows", 0),
        _u("sw", 4, "pooling stride along cols", 0),
        Field("imm", 32, "f32", "fp32 immediate (scale, epsilon)", default=0.0),
    ), "Vector-unit function over a rows x cols tile."),
    OpSpec("wuve", 5, "wuve", (
        _e("func", 2, WUVE_FUNCS, "update rule"),
        *_tile("w", "fp32 master weights", dtype=False, stride=False),
        *_tile("g", "the gradient", stride=False),
        *_tile("m", "fp32 momentum (Adam: first moment)", dtype=False, stride=False),
        *_tile("v", "fp32 Adam second moment (unused by sgd)", dtype=False, stride=False),
        _u("w16", 1, "1: also write an fp16 copy of the new weights", 0),
        *_tile("w16", "the fp16 weight copy", dtype=False, stride=False),
        *_tile("hp", "the fp32 hyper-parameter record", dtype=False, stride=False),
        _u("length", 24, "number of weights (contiguous)"),
    ), "Weight update on the WUVE: SGD with momentum and weight decay, or AdamW."),
    OpSpec("sore", 6, "sore", (
        _u("axis", 1, "1: groups of M along cols (one compressed row per row), 0: along rows", 1),
        _u("n", 3, "N of N:M"),
        _u("m", 6, "M of N:M"),
        *_tile("src", "the dense source"),
        _u("rows", 16, "rows of the source"),
        _u("cols", 16, "columns of the source"),
        *_tile("val", "the compressed values"),
        *_tile("idx", "the packed indices", dtype=False),
    ), "Prune-and-compress on the SORE: top-N magnitudes of each group of M."),
    OpSpec("nop", 7, None, (
        _e("engine", 3, ENGINES, "engine queue the nop runs in"),
    ), "No operation; only waits for and signals dependency tokens."),
)

OP_BY_NAME: dict[str, OpSpec] = {o.name: o for o in OPS}
OP_BY_CODE: dict[int, OpSpec] = {o.code: o for o in OPS}


@dataclass(frozen=True)
class _Slot:
    field: Field
    lo: int


def _layout(op: OpSpec) -> tuple[_Slot, ...]:
    slots, lo = [], 0
    for f in HEADER + op.fields:
        slots.append(_Slot(f, lo))
        lo += f.width
    if lo > INSTR_BITS:
        raise ISAError(f"op {op.name}: fields need {lo} bits > {INSTR_BITS}")  # table sanity
    return tuple(slots)


LAYOUT: dict[str, tuple[_Slot, ...]] = {o.name: _layout(o) for o in OPS}


def field_positions(op: str) -> list[tuple[str, int, int]]:
    """(field, low bit, high bit) of every field of ``op``, header included."""
    return [(s.field.name, s.lo, s.lo + s.field.width - 1) for s in LAYOUT[op]]


def _f32_bits(x: float) -> int:
    try:
        return struct.unpack("<I", struct.pack("<f", float(x)))[0]
    except OverflowError:
        raise ISAError(f"{x!r} overflows fp32") from None


def _bits_f32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _deps_mask(value: Any, op: str, name: str) -> int:
    if isinstance(value, str):
        value = () if value in ("", "-") else value.split("|")
    mask = 0
    for e in value:
        if e not in ENGINES:
            raise ISAError(f"{op}.{name}: unknown engine {e!r}; use some of {ENGINES}")
        mask |= 1 << ENGINES.index(e)
    return mask


class Instruction:
    """One decoded instruction: ``op`` and its raw (encoded) field values.

    Build one from readable values, ``Instruction('load', buf='act', ...)``;
    read fields as attributes (enums as names, ``wait``/``signal`` as tuples
    of engine names, f32 fields as floats).
    """

    __slots__ = ("op", "raw", "__dict__")     # __dict__: decoded fields (see __getattr__)

    def __init__(self, op: str, **values: Any) -> None:
        spec = OP_BY_NAME.get(op)
        if spec is None:
            raise ISAError(f"unknown op {op!r}; use one of {list(OP_BY_NAME)}")
        raw: dict[str, int] = {}
        decoded = self.__dict__                 # filled here: every field is read soon after
        pop = values.pop
        for name, limit, default, f in _FIELDS_OF[op]:
            v = pop(name, default)
            if v is None:
                raise ISAError(f"{op}: missing field '{name}' ({f.doc})")
            # fast path: a plain int in range of an unsigned field (everything else: _to_raw)
            if limit and type(v) is int and 0 <= v < limit:
                raw[name] = decoded[name] = v
            else:
                r = raw[name] = _to_raw(op, f, v)
                decoded[name] = _from_raw(f, r)
        if values:
            raise ISAError(f"{op}: unknown field '{next(iter(values))}'; fields are "
                           f"{[s.field.name for s in LAYOUT[op][1:]]}")
        self.op = op
        self.raw = raw
        _check_deps(op, raw, self.engine)

    @classmethod
    def from_raw(cls, op: str, raw: Mapping[str, int]) -> "Instruction":
        """Build from already-encoded field values (checked)."""
        ins = cls.__new__(cls)
        ins.op = op
        ins.raw = {}
        for slot in LAYOUT[op][1:]:
            f = slot.field
            v = raw[f.name]
            if not 0 <= v < (1 << f.width):
                raise ISAError(f"{op}.{f.name}: raw value {v} does not fit {f.width} bits")
            if f.kind == "enum" and v >= len(f.values):
                raise ISAError(f"{op}.{f.name}: code {v} is not one of {len(f.values)} values")
            ins.raw[f.name] = v
        _check_deps(op, ins.raw, ins.engine)
        return ins

    def with_tokens(self, wait: int, signal: int) -> "Instruction":
        """A copy with other ``wait`` / ``signal`` masks (engine bit masks, checked); every
        other field as is (no re-check: they were checked when this one was built). The copy
        keeps the decoded fields and what was cached from them on the instance (its
        :func:`~satc.backends.sat.access.accesses`): nothing cached may depend on the tokens."""
        for name, mask in (("wait", wait), ("signal", signal)):
            if not 0 <= mask < 1 << len(ENGINES):
                raise ISAError(f"{self.op}.{name}: mask {mask} names no set of {ENGINES}")
        ins = Instruction.__new__(Instruction)
        ins.op = self.op
        ins.raw = {**self.raw, "wait": wait, "signal": signal}
        _check_deps(self.op, ins.raw, ins.engine)
        if self.__dict__:                       # what was decoded or derived from the fields
            ins.__dict__.update(self.__dict__, wait=_DEPS_BY_MASK[wait], signal=_DEPS_BY_MASK[signal])
        return ins

    @property
    def engine(self) -> str:
        """The engine queue this instruction runs in."""
        spec = OP_BY_NAME[self.op]
        return spec.engine if spec.engine is not None else ENGINES[self.raw["engine"]]

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in ("op", "raw"):
            raise AttributeError(f"instruction field {name!r} is read-only; build a changed copy "
                                 f"with ins.replace({name}=...)")
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        """A field's readable value, for an instruction whose fields are not decoded yet (made
        by :meth:`from_raw` or the decoder, or parsed assembly with raw bit fields): on the
        first field read every field is decoded into the instance ``__dict__``, as the
        constructor does (later reads are plain attribute lookups; whatever changes ``raw``
        after that clears ``__dict__``)."""
        raw = object.__getattribute__(self, "raw")
        if name not in raw:
            raise AttributeError(name)
        decoded = self.__dict__
        decoded.update(raw)                     # unsigned fields read as their raw value
        for f in _CODED_FIELDS[object.__getattribute__(self, "op")]:
            decoded[f.name] = _from_raw(f, raw[f.name])
        return decoded[name]

    def replace(self, **values: Any) -> "Instruction":
        """A copy with some fields changed (readable values)."""
        cur = {n: getattr(self, n) for n in self.raw}
        cur.update(values)
        return Instruction(self.op, **cur)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Instruction) and self.op == other.op and self.raw == other.raw

    def __hash__(self) -> int:
        return hash((self.op, tuple(self.raw.items())))

    def __repr__(self) -> str:
        return f"Instruction({to_asm(self)!r})"


_FIELD_BY_NAME = {o.name: {f.name: f for f in HEADER + o.fields} for o in OPS}
#: Per op, (name, 2**width for an unsigned field else 0, default, field) of every encoded field,
#: in layout order.
_FIELDS_OF = {o.name: tuple((s.field.name, 1 << s.field.width if s.field.kind == "uint" else 0,
                              s.field.default, s.field) for s in LAYOUT[o.name][1:]) for o in OPS}
#: Per op, the fields whose readable value differs from the raw one (enums, deps, f32).
_CODED_FIELDS = {o.name: tuple(s.field for s in LAYOUT[o.name][1:] if s.field.kind != "uint")
                 for o in OPS}


def field_width(op: str, field: str) -> int:
    """Bit width of ``field`` in opcode ``op``'s table row of :data:`OPS` (header fields included)."""
    try:
        return _FIELD_BY_NAME[op][field].width
    except KeyError:
        raise ISAError(f"no field {field!r} in op {op!r}; ops: {sorted(_FIELD_BY_NAME)}") from None


def field_max(op: str, field: str) -> int:
    """Largest value ``field`` of opcode ``op`` encodes (``2**width - 1``)."""
    return (1 << field_width(op, field)) - 1


def _check_deps(op: str, raw: Mapping[str, int], engine: str) -> None:
    bit = 1 << ENGINES.index(engine)
    for name in ("wait", "signal"):
        if raw[name] & bit:
            raise ISAError(f"{op}.{name}: an engine cannot {name} on its own queue ({engine}); "
                           "in-order queues need no token to themselves")


def _to_raw(op: str, f: Field, v: Any) -> int:
    if f.kind == "deps":
        return _deps_mask(v, op, f.name)
    if f.kind == "enum":
        if v not in f.values:
            raise ISAError(f"{op}.{f.name}: {v!r} is not one of {f.values}")
        return f.values.index(v)
    if f.kind == "f32":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ISAError(f"{op}.{f.name}: expected a number, got {v!r}")
        return _f32_bits(v)
    if isinstance(v, bool) or not isinstance(v, int) and not hasattr(v, "__index__"):
        raise ISAError(f"{op}.{f.name}: expected an integer, got {v!r}")
    v = int(v)
    if not 0 <= v < (1 << f.width):
        raise ISAError(f"{op}.{f.name}: {v} does not fit in {f.width} unsigned bits "
                       f"(0..{(1 << f.width) - 1})")
    return v


def _from_raw(f: Field, v: int) -> Any:
    if f.kind == "enum":
        return f.values[v]
    if f.kind == "deps":
        return _DEPS_BY_MASK[v]
    if f.kind == "f32":
        return _bits_f32(v)
    return v


#: The engine names of every wait / signal mask.
_DEPS_BY_MASK = tuple(tuple(ENGINES[i] for i in nums) for nums in MASK_ENGINES)


# ---------------------------------------------------------------- binary

def encode(ins: Instruction) -> bytes:
    """The 32-byte little-endian encoding of one instruction."""
    word = OP_BY_NAME[ins.op].code
    for slot in LAYOUT[ins.op][1:]:
        word |= ins.raw[slot.field.name] << slot.lo
    return word.to_bytes(INSTR_BYTES, "little")


def decode(data: bytes) -> Instruction:
    """Decode one 32-byte instruction; any malformed input raises ISAError."""
    if len(data) != INSTR_BYTES:
        raise ISAError(f"an instruction is {INSTR_BYTES} bytes, got {len(data)}")
    word = int.from_bytes(data, "little")
    code = word & 0xF
    spec = OP_BY_CODE.get(code)
    if spec is None:
        raise ISAError(f"unknown opcode {code}")
    slots = LAYOUT[spec.name]
    end = slots[-1].lo + slots[-1].field.width
    if word >> end:
        raise ISAError(f"{spec.name}: reserved bits {end}..{INSTR_BITS - 1} are not zero")
    raw = {s.field.name: (word >> s.lo) & ((1 << s.field.width) - 1) for s in slots[1:]}
    return Instruction.from_raw(spec.name, raw)


def encode_all(instrs: Iterable[Instruction]) -> bytes:
    """Concatenated encodings of an instruction stream."""
    return b"".join(encode(i) for i in instrs)


def decode_all(data: bytes) -> list[Instruction]:
    """Decode a stream of 32-byte instructions; ISAError names the bad index."""
    if len(data) % INSTR_BYTES:
        raise ISAError(f"instruction stream of {len(data)} bytes is not a multiple of {INSTR_BYTES}")
    out = []
    for i in range(0, len(data), INSTR_BYTES):
        try:
            out.append(decode(data[i:i + INSTR_BYTES]))
        except ISAError as e:
            raise ISAError(f"instruction {i // INSTR_BYTES}: {e}") from None
    return out


# ---------------------------------------------------------------- text

def _fmt(f: Field, v: int) -> str:
    if f.kind == "enum":
        return f.values[v]
    if f.kind == "deps":
        return "|".join(_from_raw(f, v)) or "-"
    if f.kind == "f32":
        x = _bits_f32(v)
        return f"0x{v:08x}" if math.isnan(x) else repr(x)
    return str(v)


def to_asm(ins: Instruction) -> str:
    """One line of assembly with every field of the instruction."""
    parts = [ins.op] + [f"{s.field.name}={_fmt(s.field, ins.raw[s.field.name])}"
                        for s in LAYOUT[ins.op][1:]]
    return " ".join(parts)


def _parse_value(op: str, f: Field, text: str) -> Any:
    if f.kind in ("enum", "deps"):
        return text
    try:
        if f.kind == "f32":
            if text.lower().startswith("0x"):
                bits = int(text, 16)
                if not 0 <= bits < 1 << 32:
                    raise ValueError
                return ("bits", bits)
            return float(text)
        return int(text, 0)
    except ValueError:
        raise ISAError(f"{op}.{f.name}: cannot parse {text!r}") from None


def parse_asm_line(line: str) -> Instruction | None:
    """Assemble one line (None for a blank or comment line)."""
    line = line.split("#", 1)[0].strip()
    if not line:
        return None
    op, *args = line.split()
    if op not in OP_BY_NAME:
        raise ISAError(f"unknown op {op!r}; use one of {list(OP_BY_NAME)}")
    values, raw_bits = {}, {}
    for a in args:
        name, sep, text = a.partition("=")
        f = _FIELD_BY_NAME[op].get(name)
        if not sep or f is None or name == "opcode":
            raise ISAError(f"{op}: bad operand {a!r}; write field=value with a field of {op}")
        if name in values or name in raw_bits:
            raise ISAError(f"{op}: field '{name}' given twice")
        v = _parse_value(op, f, text)
        if isinstance(v, tuple):
            raw_bits[name] = v[1]
            values[name] = 0.0
        else:
            values[name] = v
    ins = Instruction(op, **values)
    ins.raw.update(raw_bits)
    ins.__dict__.clear()                       # no field decoded from the raw values replaced
    return ins


def assemble(text: str) -> bytes:
    """Assemble a text program to its binary instruction stream."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            ins = parse_asm_line(line)
        except ISAError as e:
            raise ISAError(f"line {n}: {e}") from None
        if ins is not None:
            out.append(encode(ins))
    return b"".join(out)


def disassemble(data: bytes) -> str:
    """Text assembly of a binary instruction stream, one line per instruction."""
    return "".join(to_asm(i) + "\n" for i in decode_all(data))


def field_table_markdown(op: str) -> str:
    """The Markdown field table of ``op`` (bits, name, meaning) used by docs/isa.md."""
    rows = ["| bits | field | meaning |", "|---|---|---|"]
    for s in LAYOUT[op]:
        f = s.field
        hi = s.lo + f.width - 1
        bits = f"{s.lo}" if f.width == 1 else f"{s.lo}-{hi}"
        doc = f.doc
        if f.kind == "enum" and len(f.values) <= 8:
            doc += " (" + ", ".join(f"{i}={v}" for i, v in enumerate(f.values)) + ")"
        if f.name == "opcode":
            doc += f" = {OP_BY_NAME[op].code}"
        rows.append(f"| {bits} | `{f.name}` | {doc} |")
    return "\n".join(rows)
