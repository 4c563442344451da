"""The program checker: token-ordered hazards, bounds, bounded work; refused before any run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from satc.backends.sat import checker
from satc.backends.sat.access import accesses
from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.checker import check_program
from satc.backends.sat.emulator import Emulator
from satc.backends.sat.isa import ENGINES, Instruction
from satc.backends.sat.program import Program, Region
from satc.passes.schedule import emit_program, schedule_program

import satc
from satc.errors import EmulatorError, ProgramCheckError

ZOO = [("mlp", {"x": (8, 64)}, "bdwp:2:8"), ("cnn", {"x": (4, 1, 8, 8)}, "dense"),
       ("cnn", {"x": (4, 1, 8, 8)}, "bdwp:2:8")]
ZOO_SLOW = [("vit_tiny", None, "bdwp:2:8"), ("resnet18_cifar", {"x": (2, 3, 32, 32)}, "bdwp:2:4")]


@pytest.fixture(scope="module")
def cnn():
    """The compiled cnn (bdwp:2:8) program."""
    return satc.compile("cnn", input_shapes={"x": (4, 1, 8, 8)}, sparsity="bdwp:2:8").session.program


def _without_tokens(prog: Program, keep=lambda i: False) -> Program:
    instrs = tuple(ins if keep(i) else Instruction.from_raw(ins.op, {**ins.raw, "wait": 0, "signal": 0})
                   for i, ins in enumerate(prog.instructions))
    return dataclasses.replace(prog, instructions=instrs)


@pytest.mark.parametrize("name,shapes,sparsity", ZOO)
def test_zoo_programs_and_their_schedules_pass(name, shapes, sparsity):
    prog = satc.compile(name, input_shapes=shapes, sparsity=sparsity).session.program
    r = check_program(prog)
    assert r.order and len(r.accesses) == len(prog.instructions)
    assert r.macs > 0 and r.elements > 0
    assert check_program(prog) is r                          # cached on the (immutable) program
    rescheduled = emit_program(schedule_program(prog, "list"))
    assert check_program(rescheduled).pairs > 0              # exact tokens: unordered pairs proven disjoint


@pytest.mark.slow
@pytest.mark.parametrize("name,shapes,sparsity", ZOO_SLOW)
def test_large_zoo_programs_pass(name, shapes, sparsity):
    test_zoo_programs_and_their_schedules_pass(name, shapes, sparsity)


def test_stripped_tokens_are_refused_everywhere(cnn):
    bad = _without_tokens(cnn)
    for run in (check_program, Emulator, lambda p: schedule_program(p, "list")):
        with pytest.raises(ProgramCheckError, match=r"^instruction \d+ .*race between engines"):
            run(bad)


def test_each_removed_token_pair_is_found(cnn):
    """Removing one (signal, wait) pair: a race naming the waiting instruction, unless another
    token chain still orders it."""
    pairs = []                               # (producer, consumer, src, dst) of the first waits
    pushed: dict[tuple[str, str], list[int]] = {}
    popped: dict[tuple[str, str], int] = {}
    for i, ins in enumerate(cnn.instructions):
        for src in ins.wait:
            k = popped.get((src, ins.engine), 0)
            popped[(src, ins.engine)] = k + 1
            pairs.append((pushed[(src, ins.engine)][k], i, src, ins.engine))
        for dst in ins.signal:
            pushed.setdefault((ins.engine, dst), []).append(i)
    races = 0
    for producer, consumer, src, dst in pairs[:60]:
        instrs = list(cnn.instructions)
        p, c = instrs[producer], instrs[consumer]
        instrs[producer] = Instruction.from_raw(p.op, {**p.raw, "signal": p.raw["signal"]
                                                       & ~(1 << ENGINES.index(dst))})
        instrs[consumer] = Instruction.from_raw(c.op, {**c.raw, "wait": c.raw["wait"]
                                                       & ~(1 << ENGINES.index(src))})
        try:
            check_program(dataclasses.replace(cnn, instructions=tuple(instrs)))
        except ProgramCheckError as e:
            assert "race between engines" in str(e) or "deadlock" in str(e) or "stay in FIFO" in str(e)
            races += "race" in str(e)
    assert races >= 10


# ---------------------------------------------------------------- small programs

def _prog(small, asm_program, text, regions=None):
    regions = regions or {"x": (0, np.ones((16, 16), np.float32)), "y": (1024, ((16, 16), "fp32"))}
    return asm_program(small, text, regions, dram_size=4096)


LOAD = "load buf=act dram_addr=0 rows={r} cols={c} dram_row_stride=16 buf_addr={a} buf_row_stride={s}"
STORE = "store buf=act dram_addr=1024 rows={r} cols={c} dram_row_stride=16 buf_addr={a} buf_row_stride={s}"


def test_unordered_overlap_is_refused_and_a_token_fixes_it(small, asm_program):
    text = LOAD.format(r=4, c=16, a=0, s=16) + "\n" + STORE.format(r=4, c=16, a=0, s=16)
    with pytest.raises(ProgramCheckError, match=r"instruction 1 \(store on store\): reads buf .* "
                                                r"instruction 0 \(load on load\)"):
        check_program(_prog(small, asm_program, text))
    fixed = text.replace("buf_row_stride=16\nstore", "buf_row_stride=16 signal=store\nstore wait=load")
    assert check_program(_prog(small, asm_program, fixed)).pairs == 0


def test_interleaved_rows_of_one_tile_are_not_a_race(small, asm_program):
    # rows 0, 2, 4, 6 (load) and rows 1, 3, 5, 7 (store) of a 16-float pitch: extents overlap,
    # bytes do not
    text = (LOAD.format(r=4, c=16, a=0, s=32) + "\n" + STORE.format(r=4, c=16, a=64, s=32))
    prog = _prog(small, asm_program, text)
    with pytest.raises(EmulatorError, match="no completed instruction produced"):
        Emulator(prog)                       # the store reads bytes nobody wrote -- but no race
    assert check_program(prog).pairs == 4    # 2 x 2 accesses of the unordered pair, proven disjoint
    overlapping = LOAD.format(r=4, c=16, a=0, s=32) + "\n" + STORE.format(r=4, c=8, a=160, s=32)
    with pytest.raises(ProgramCheckError, match="race"):
        check_program(_prog(small, asm_program, overlapping))


def test_leftover_token_is_refused(small, asm_program):
    text = LOAD.format(r=1, c=16, a=0, s=16) + " signal=store"
    with pytest.raises(ProgramCheckError, match=r"instruction 0 \(load\): signals store.*stay in FIFO"):
        check_program(_prog(small, asm_program, text))


def test_deadlock_names_the_instruction(small, asm_program):
    with pytest.raises(ProgramCheckError, match="instruction 0: deadlock"):
        check_program(_prog(small, asm_program, "nop engine=stce wait=vector signal=vector\n"
                                                "nop engine=vector wait=stce signal=stce"))


def test_zero_stride_gemm_with_a_huge_tile_is_refused(small, asm_program):
    # 64 bytes of A stand for 65535 x 16 elements (and 17 G MACs with k = 65535 in a bigger buffer)
    text = ("gemm a_buf=act a_addr=0 a_stride=0 b_buf=wgt b_addr=0 b_stride=16 idx_buf=wgt "
            "c_addr=0 c_stride=0 mt=65535 nt=16 k=16")
    with pytest.raises(ProgramCheckError, match=r"instruction 0 \(gemm\): a \(read\): a 65535x16 "
                                                r"tile .* more elements than the memory holds"):
        check_program(_prog(small, asm_program, text))


def test_a_write_hitting_a_byte_twice_is_refused(small, asm_program):
    text = LOAD.format(r=4, c=16, a=0, s=8)
    with pytest.raises(ProgramCheckError, match=r"instruction 0 \(load\): buf \(write\): writes some "
                                                r"act bytes twice"):
        check_program(_prog(small, asm_program, text))


def test_unordered_pairs_are_bounded(cnn, monkeypatch):
    monkeypatch.setattr(checker, "MAX_UNORDERED", 1000)
    with pytest.raises(ProgramCheckError, match=r"^instruction \d+ .*1000 pairs of instructions on "
                                                r"different engines are unordered"):
        check_program(_without_tokens(cnn))


def test_total_work_is_bounded(small, asm_program, monkeypatch):
    monkeypatch.setattr(checker, "MAX_ELEMENTS", 100)
    with pytest.raises(ProgramCheckError, match=r"implies 0 GEMM MACs and 128 other elements"):
        check_program(_prog(small, asm_program, LOAD.format(r=4, c=16, a=0, s=16)))


def test_misaligned_and_out_of_bounds_name_the_instruction(small, asm_program):
    with pytest.raises(ProgramCheckError, match=r"instruction 1 \(load\): buf \(write\): misaligned"):
        check_program(_prog(small, asm_program, "nop engine=load\n" + LOAD.format(r=1, c=4, a=2, s=4)))
    with pytest.raises(ProgramCheckError, match=r"instruction 0 \(load\): dram \(read\): out-of-bounds"):
        check_program(_prog(small, asm_program, LOAD.format(r=1, c=4, a=0, s=4).replace(
            "dram_addr=0", "dram_addr=4092")))


# ---------------------------------------------------------------- against brute force

OPS = ("load", "store", "vec")


def _random_program(small, draw) -> Program:
    """Up to 10 DMA / vector copies over 256 bytes of act and vec, random tokens between them."""
    n = draw(st.integers(2, 10))
    instrs = []
    for _ in range(n):
        op = draw(st.sampled_from(OPS))
        rows, cols = draw(st.integers(1, 3)), draw(st.integers(1, 4))
        stride = cols + draw(st.integers(0, 3))
        if op == "vec":
            instrs.append(Instruction("vec", func="copy", s0_buf=draw(st.sampled_from(("act", "vec"))),
                                      s0_addr=4 * draw(st.integers(0, 40)), s0_stride=stride,
                                      s1_buf="act", d_buf=draw(st.sampled_from(("act", "vec"))),
                                      d_addr=4 * draw(st.integers(0, 40)), d_stride=stride,
                                      rows=rows, cols=cols))
        else:
            instrs.append(Instruction(op, buf=draw(st.sampled_from(("act", "vec"))),
                                      buf_addr=4 * draw(st.integers(0, 40)),
                                      dram_addr=4 * draw(st.integers(0, 40)), rows=rows, cols=cols,
                                      dram_row_stride=stride, buf_row_stride=stride))
    masks = [[0, 0] for _ in instrs]                              # wait, signal
    for _ in range(draw(st.integers(0, 2 * n))):
        i, j = sorted(draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True)))
        ei, ej = instrs[i].engine, instrs[j].engine
        if ei != ej and not masks[i][1] >> ENGINES.index(ej) & 1 and not masks[j][0] >> ENGINES.index(ei) & 1:
            masks[i][1] |= 1 << ENGINES.index(ej)
            masks[j][0] |= 1 << ENGINES.index(ei)
    instrs = tuple(Instruction.from_raw(ins.op, {**ins.raw, "wait": w, "signal": s})
                   for ins, (w, s) in zip(instrs, masks))
    region = Region("d", 0, (64,), "fp32", np.zeros(64, np.float32).tobytes())
    return Program(small, instrs, (region,), 256)


def _bytes(a) -> set[tuple[str, int]]:
    idx = np.indices(a.shape).reshape(len(a.shape), -1).T
    return {(a.space, int(a.offset + np.dot(ix, a.strides)) + b) for ix in idx
            for b in range(a.dtype.itemsize)}


def _brute_force_race(prog: Program) -> bool:
    """A race by definition: hb as the reachability of queue and token edges, byte sets."""
    instrs = prog.instructions
    n = len(instrs)
    reach = np.eye(n, dtype=bool)
    pushes: dict[tuple[str, str], list[int]] = {}
    pops: dict[tuple[str, str], list[int]] = {}
    last: dict[str, int] = {}
    edges = []
    for i, ins in enumerate(instrs):
        if ins.engine in last:
            edges.append((last[ins.engine], i))
        last[ins.engine] = i
        for d in ins.signal:
            pushes.setdefault((ins.engine, d), []).append(i)
        for s in ins.wait:
            pops.setdefault((s, ins.engine), []).append(i)
    for key, consumers in pops.items():
        edges += list(zip(pushes.get(key, []), consumers))
    for _ in range(n):
        for u, v in edges:
            reach[:, v] |= reach[:, u]
    touched = [[(a.write, _bytes(a)) for a in accesses(ins)] for ins in instrs]
    for i in range(n):
        for j in range(i + 1, n):
            if instrs[i].engine == instrs[j].engine or reach[i, j] or reach[j, i]:
                continue
            if any((wa or wb) and ba & bb for wa, ba in touched[i] for wb, bb in touched[j]):
                return True
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_race_verdict_equals_brute_force(small, data):
    prog = _random_program(small, data.draw)
    try:
        check_program(prog)
        verdict = False
    except ProgramCheckError as e:
        assume("race" in str(e))                  # deadlocks and leftover tokens: other checks
        verdict = True
    assert verdict == _brute_force_race(prog)


def test_a_broadcast_store_may_read_its_row_repeatedly(small, asm_program):
    """A DMA reading one buffer row for every DRAM row (buf_row_stride 0: broadcast_to) is
    legal even when the rows it writes outnumber the buffer's bytes; its writes are bounded."""
    rows = small.buffer_bytes["vec"] // 64 + 8              # 16 floats per row: more than vec holds
    b = ProgramBuilder(small)
    r = b.alloc("out", (rows, 16))
    b.store("vec", 0, r.addr, rows, 16, buf_row_stride=0)
    check_program(b.build())
