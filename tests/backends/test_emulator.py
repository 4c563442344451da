"""Functional emulator: hand-written programs give numpy-exact results; refusals name the instruction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.emulator import Emulator, run_program
from satc.backends.sat.program import Program, Region
from satc.backends.sat.nmformat import compress_rows, unpack_indices
from satc.backends.sat.wuve import hp_record
from satc.errors import EmulatorError, ProgramFileError
from satc.ir.nm import nm_compress, nm_mask

RNG = np.random.default_rng(1234)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


DENSE_GEMM = """
# C[4x4] = A[4x8] @ B[8x4] on sat-small
load  buf=act dram_addr=0   rows=4 cols=8 dram_row_stride=8 buf_row_stride=8
load  buf=wgt dram_addr=128 rows=8 cols=4 dram_row_stride=4 buf_row_stride=4 signal=stce
gemm  wait=load signal=store dataflow={df} a_buf=act a_addr=0 a_stride=8 b_buf=wgt b_addr=0 b_stride=4 idx_buf=wgt c_addr=0 c_stride=4 mt=4 nt=4 k=8
store wait=stce buf=acc dram_addr=256 rows=4 cols=4 dram_row_stride=4 buf_row_stride=4
"""


@pytest.mark.parametrize("df", ["ws", "os"])
def test_dense_gemm_asm(small, df, asm_program):
    a, b = rand(4, 8), rand(8, 4)
    prog = asm_program(small, DENSE_GEMM.format(df=df),
                       {"A": (0, a), "B": (128, b), "C": (256, ((4, 4), "fp32"))})
    c = run_program(prog).read("C")
    np.testing.assert_array_equal(c, a @ b)


SPARSE_A = """
# C[4x4] = prune_2:8(W)[4x16] @ X[16x4]; W compressed along k: values 4x4, indices 4x2 bytes
load  buf=wgt dram_addr=0   rows=4  cols=4 dram_row_stride=4 buf_row_stride=4
load  buf=wgt dtype=u8 buf_addr=1024 dram_addr=64 rows=4 cols=2 dram_row_stride=2 buf_row_stride=2
load  buf=act dram_addr=128 rows=16 cols=4 dram_row_stride=4 buf_row_stride=4 signal=stce
gemm  wait=load signal=store dataflow={df} n=2 m=8 a_buf=wgt a_addr=0 a_stride=4 b_buf=act b_addr=0 b_stride=4 idx_buf=wgt idx_addr=1024 idx_stride=2 c_addr=0 c_stride=4 mt=4 nt=4 k=16
store wait=stce buf=acc dram_addr=512 rows=4 cols=4 dram_row_stride=4 buf_row_stride=4
"""

SPARSE_B = """
# Y[4x4] = X[4x16] @ prune_2:8(W)[4x16]^T; B = W^T compressed (one row per output column)
load  buf=act dram_addr=128 rows=4 cols=16 dram_row_stride=16 buf_row_stride=16
load  buf=wgt dram_addr=0   rows=4 cols=4 dram_row_stride=4 buf_row_stride=4
load  buf=wgt dtype=u8 buf_addr=1024 dram_addr=64 rows=4 cols=2 dram_row_stride=2 buf_row_stride=2 signal=stce
gemm  wait=load signal=store dataflow={df} n=2 m=8 sparse_b=1 a_buf=act a_addr=0 a_stride=16 b_buf=wgt b_addr=0 b_stride=4 idx_buf=wgt idx_addr=1024 idx_stride=2 c_addr=0 c_stride=4 mt=4 nt=4 k=16
store wait=stce buf=acc dram_addr=512 rows=4 cols=4 dram_row_stride=4 buf_row_stride=4
"""


@pytest.mark.parametrize("df", ["ws", "os"])
def test_nm_gemm_sparse_a_asm(small, df, asm_program):
    w, x = rand(4, 16), rand(16, 4)
    vals, idx = compress_rows(w, 2, 8, axis=1)
    assert vals.shape == (4, 4) and idx.shape == (4, 2)
    prog = asm_program(small, SPARSE_A.format(df=df), {
        "V": (0, vals), "I": (64, idx), "X": (128, x), "C": (512, ((4, 4), "fp32"))})
    wp = np.where(nm_mask(w, 2, 8, axis=1), w, 0)
    np.testing.assert_allclose(run_program(prog).read("C"), wp @ x, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("df", ["ws", "os"])
def test_nm_gemm_sparse_b_asm(small, df, asm_program):
    w, x = rand(4, 16), rand(4, 16)
    vals, idx = compress_rows(w, 2, 8, axis=1)
    prog = asm_program(small, SPARSE_B.format(df=df), {
        "V": (0, vals), "I": (64, idx), "X": (128, x), "C": (512, ((4, 4), "fp32"))})
    wp = np.where(nm_mask(w, 2, 8, axis=1), w, 0)
    np.testing.assert_allclose(run_program(prog).read("C"), x @ wp.T, rtol=1e-6, atol=1e-6)


def test_nm_gemm_reads_memory_not_a_copy(small, asm_program):
    """Changing the index bytes in DRAM changes the product: no dense copy is held aside."""
    w, x = rand(4, 16), rand(16, 4)
    vals, idx = compress_rows(w, 2, 8, axis=1)
    other = idx ^ 0b001001                      # flip index bits of the first two values per row
    regions = {"V": (0, vals), "I": (64, other), "X": (128, x), "C": (512, ((4, 4), "fp32"))}
    c = run_program(asm_program(small, SPARSE_A.format(df="ws"), regions)).read("C")
    dense = np.zeros((4, 16), np.float32)
    idx3 = unpack_indices(other, 16, 2, 8).astype(int)
    for r in range(4):
        for g in range(2):
            for j in range(2):
                dense[r, g * 8 + idx3[r, g, j]] += vals[r, g * 2 + j]
    np.testing.assert_allclose(c, dense @ x, rtol=1e-6, atol=1e-6)


VEC_RELU_ADD = """
load  buf=vec dram_addr=0  rows=3 cols=5 dram_row_stride=5 buf_row_stride=5
load  buf=vec buf_addr=64 dram_addr=64 rows=1 cols=5 dram_row_stride=5 buf_row_stride=5 signal=vector
vec   wait=load func=add bcast=row s0_buf=vec s0_addr=0 s0_stride=5 s1_buf=vec s1_addr=64 s1_stride=5 d_buf=vec d_addr=128 d_stride=5 rows=3 cols=5
vec   signal=store func=relu s0_buf=vec s0_addr=128 s0_stride=5 s1_buf=vec d_buf=vec d_addr=256 d_stride=5 rows=3 cols=5
store wait=vector buf=vec buf_addr=256 dram_addr=128 rows=3 cols=5 dram_row_stride=5 buf_row_stride=5
"""


def test_vector_bias_relu_asm(small, asm_program):
    x, bias = rand(3, 5), rand(1, 5)
    prog = asm_program(small, VEC_RELU_ADD, {"X": (0, x), "b": (64, bias), "Y": (128, ((3, 5), "fp32"))})
    np.testing.assert_array_equal(run_program(prog).read("Y"), np.maximum(x + bias, 0))


def _vec_case(cfg, func, x, y=None, *, rows=None, cols=None, out_shape=None, **kw):
    """Run one vec instruction on x (and y) through the builder; return the destination."""
    rows, cols = x.shape
    b = ProgramBuilder(cfg)
    rx = b.alloc("x", x.shape, init=x)
    b.load_region(rx, "vec", 0, signal="vector" if y is None else ())
    if y is not None:
        ry = b.alloc("y", y.shape, init=y)
        b.load_region(ry, "vec", 4096, signal="vector")
    rd = b.alloc("d", out_shape)
    b.vec(func, rows, cols, s0_addr=0, s1_addr=4096, d_addr=8192, wait="load", signal="store", **kw)
    b.store("vec", 8192, rd.addr, out_shape[0], out_shape[1], wait="vector")
    return run_program(b.build()).read("d")


def _softmax(z, axis):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_vector_functions(small):
    x, y = rand(4, 6), rand(4, 6)
    f32 = np.float32
    assert np.array_equal(_vec_case(small, "mul", x, y, out_shape=(4, 6)), x * y)
    assert np.array_equal(_vec_case(small, "relu_grad", x, y, out_shape=(4, 6)), np.where(x > 0, y, 0))
    assert np.array_equal(_vec_case(small, "mul_imm", x, imm=0.5, out_shape=(4, 6)), x * f32(0.5))
    assert np.array_equal(_vec_case(small, "reduce_sum", x, out_shape=(4, 1)), x.sum(1, keepdims=True))
    assert np.array_equal(_vec_case(small, "reduce_max", x, axis=0, out_shape=(1, 6)),
                          x.max(0, keepdims=True))
    np.testing.assert_allclose(_vec_case(small, "softmax", x, out_shape=(4, 6)), _softmax(x, 1), rtol=1e-6)
    np.testing.assert_allclose(_vec_case(small, "softmax", x, axis=0, out_shape=(4, 6)), _softmax(x, 0),
                               rtol=1e-6)
    np.testing.assert_allclose(_vec_case(small, "rsqrt", np.abs(x), imm=1e-5, out_shape=(4, 6)),
                               1 / np.sqrt(np.abs(x) + f32(1e-5)), rtol=1e-6)
    col = rand(4, 1)
    assert np.array_equal(_vec_case(small, "sub", x, col, bcast="col", out_shape=(4, 6)), x - col)


def test_vector_affine_and_reduce_dot(small):
    """One multiply-add per element: (scale, shift) pairs per row (col broadcast, rows x 2)
    or per column (row broadcast, 2 x cols); the dot product of two tiles along an axis."""
    x, y = rand(4, 6), rand(4, 6)
    rows_ab, cols_ab = rand(4, 2), rand(2, 6)
    assert np.array_equal(_vec_case(small, "affine", x, rows_ab, bcast="col", out_shape=(4, 6)),
                          x * rows_ab[:, :1] + rows_ab[:, 1:])
    assert np.array_equal(_vec_case(small, "affine", x, cols_ab, bcast="row", out_shape=(4, 6)),
                          x * cols_ab[:1] + cols_ab[1:])
    np.testing.assert_allclose(_vec_case(small, "reduce_dot", x, y, out_shape=(4, 1)),
                               (x * y).sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(_vec_case(small, "reduce_dot", x, y, axis=0, out_shape=(1, 6)),
                               (x * y).sum(0, keepdims=True), rtol=1e-6)


def test_vector_affine_relu_and_reduce_sqdev(small):
    """The batchnorm epilogue and statistics: max(x*a + b, 0) with (a, b) per row; the sum of
    (x - k)^2 along an axis with k broadcast per row (col) or per column (row)."""
    x = np.array([[1, -2, 3], [4, 5, -6]], np.float32)
    ab = np.array([[2, -1], [-1, 3]], np.float32)          # row 0: 2x - 1, row 1: -x + 3
    assert np.array_equal(_vec_case(small, "affine_relu", x, ab, bcast="col", out_shape=(2, 3)),
                          np.array([[1, 0, 5], [0, 0, 9]], np.float32))
    k_rows = np.array([[1], [2]], np.float32)
    # row 0: 0 + 9 + 4 = 13; row 1: 4 + 9 + 64 = 77
    assert np.array_equal(_vec_case(small, "reduce_sqdev", x, k_rows, bcast="col",
                                    out_shape=(2, 1)), np.array([[13], [77]], np.float32))
    k_cols = np.array([[0, 1, -1]], np.float32)
    # column 0: 1 + 16 = 17; column 1: 9 + 16 = 25; column 2: 16 + 25 = 41
    assert np.array_equal(_vec_case(small, "reduce_sqdev", x, k_cols, bcast="row", axis=0,
                                    out_shape=(1, 3)), np.array([[17, 25, 41]], np.float32))


def test_vector_reduce_sum_dot_and_sub_scale(small):
    """Two reductions side by side, (sum x, sum x*y), per row (rows x 2) or per column
    (2 x cols); (x - y) * imm, accumulated onto the destination with accumulate."""
    x = np.array([[1, -2, 3], [4, 5, -6]], np.float32)
    y = np.array([[2, 1, 0], [-1, 1, 2]], np.float32)
    # row 0: 2, 2 - 2 + 0 = 0; row 1: 3, -4 + 5 - 12 = -11
    assert np.array_equal(_vec_case(small, "reduce_sum_dot", x, y, out_shape=(2, 2)),
                          np.array([[2, 0], [3, -11]], np.float32))
    # columns: sums 5, 3, -3; dots 2 - 4, -2 + 5, 0 - 12
    assert np.array_equal(_vec_case(small, "reduce_sum_dot", x, y, axis=0, out_shape=(2, 3)),
                          np.array([[5, 3, -3], [-2, 3, -12]], np.float32))
    assert np.array_equal(_vec_case(small, "sub_scale", x, y, imm=0.5, out_shape=(2, 3)),
                          np.array([[-0.5, -1.5, 1.5], [2.5, 2, -4]], np.float32))


def test_affine_needs_a_pair_broadcast(small):
    from satc.backends.sat.access import check
    from satc.backends.sat.isa import Instruction
    ins = Instruction("vec", func="affine", s0_buf="vec", s1_buf="vec", d_buf="vec", rows=4, cols=6)
    assert "pair per row" in check(ins, small)


def test_vector_gelu_and_grad(small):
    from math import erf, exp, pi, sqrt
    x, dy = rand(3, 4), rand(3, 4)
    ref = np.array([[v * 0.5 * (1 + erf(v / sqrt(2))) for v in row] for row in x.astype(float)])
    np.testing.assert_allclose(_vec_case(small, "gelu", x, out_shape=(3, 4)), ref, rtol=1e-6, atol=1e-7)
    dref = np.array([[0.5 * (1 + erf(v / sqrt(2))) + v * exp(-v * v / 2) / sqrt(2 * pi) for v in row]
                     for row in x.astype(float)]) * dy
    np.testing.assert_allclose(_vec_case(small, "gelu_grad", x, dy, out_shape=(3, 4)), dref, rtol=1e-5,
                               atol=1e-6)


def test_vector_cross_entropy(small):
    logits = rand(4, 5)
    target = np.eye(5, dtype=np.float32)[[0, 3, 1, 4]]
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    loss = _vec_case(small, "xent", logits, target, out_shape=(4, 1))
    np.testing.assert_allclose(loss, -(target * logp).sum(1, keepdims=True), rtol=1e-6)
    grad = _vec_case(small, "xent_grad", logits, target, imm=0.25, out_shape=(4, 5))
    np.testing.assert_allclose(grad, (_softmax(logits, 1) - target) * 0.25, rtol=1e-6, atol=1e-7)


def test_vector_pooling_and_grads(small):
    x = rand(6, 6)
    win = (2, 2, 2, 2)
    mp = _vec_case(small, "maxpool", x, window=win, out_shape=(3, 3))
    np.testing.assert_array_equal(mp, x.reshape(3, 2, 3, 2).max(axis=(1, 3)))
    ap = _vec_case(small, "avgpool", x, window=win, out_shape=(3, 3))
    np.testing.assert_allclose(ap, x.reshape(3, 2, 3, 2).mean(axis=(1, 3)), rtol=1e-6)
    dy = rand(3, 3)
    dx = _vec_case(small, "maxpool_grad", x, dy, window=win, out_shape=(6, 6))
    blocks = x.reshape(3, 2, 3, 2).transpose(0, 2, 1, 3).reshape(3, 3, 4)
    ref = np.zeros((3, 3, 4), np.float32)
    np.put_along_axis(ref, blocks.argmax(-1)[..., None], dy[..., None], axis=-1)
    np.testing.assert_array_equal(dx, ref.reshape(3, 3, 2, 2).transpose(0, 2, 1, 3).reshape(6, 6))
    dxa = _vec_case(small, "avgpool_grad", x, dy, window=win, out_shape=(6, 6))
    np.testing.assert_allclose(dxa, np.kron(dy, np.ones((2, 2), np.float32)) / 4, rtol=1e-6)


WUVE_SGD = """
# SGD with momentum and weight decay on 10 weights; hyper-parameters from a record in vec
load  buf=vec buf_addr=0   dram_addr=0   rows=1 cols=10 dram_row_stride=10 buf_row_stride=10
load  buf=vec buf_addr=64  dram_addr=64  rows=1 cols=10 dram_row_stride=10 buf_row_stride=10
load  buf=vec buf_addr=128 dram_addr=128 rows=1 cols=10 dram_row_stride=10 buf_row_stride=10
load  buf=vec buf_addr=192 dram_addr=192 rows=1 cols=8  dram_row_stride=8  buf_row_stride=8 signal=wuve
wuve  wait=load signal=store func=sgd w_buf=vec w_addr=0 g_buf=vec g_addr=64 m_buf=vec m_addr=128 v_buf=vec hp_buf=vec hp_addr=192 w16=1 w16_buf=vec w16_addr=256 length=10
store wait=wuve buf=vec buf_addr=0   dram_addr=0   rows=1 cols=10 dram_row_stride=10 buf_row_stride=10
store buf=vec buf_addr=128 dram_addr=128 rows=1 cols=10 dram_row_stride=10 buf_row_stride=10
store buf=vec dtype=fp16 buf_addr=256 dram_addr=256 rows=1 cols=10 dram_row_stride=10 buf_row_stride=10
"""


def test_wuve_sgd_asm(small, asm_program):
    w, g, m = rand(10), rand(10), rand(10)
    hp = hp_record("sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)
    prog = asm_program(small, WUVE_SGD, {"w": (0, w), "g": (64, g), "m": (128, m), "hp": (192, hp),
                                         "w16": (256, ((10,), "fp16"))})
    emu = run_program(prog)
    f = np.float32
    m_ref = f(0.9) * m + (g + f(1e-4) * w)
    w_ref = w - f(0.1) * m_ref
    np.testing.assert_allclose(emu.read("m"), m_ref, rtol=1e-6)
    np.testing.assert_allclose(emu.read("w"), w_ref, rtol=1e-6)
    np.testing.assert_array_equal(emu.read("w16"), emu.read("w").astype(np.float16))
    # inputs are untouched on a second run: DRAM is restored from the image
    np.testing.assert_array_equal(emu.run().read("w"), emu.read("w"))


def test_wuve_adamw(small):
    w, g, m, v = rand(16), rand(16), rand(16), np.abs(rand(16))
    lr, b1, b2, eps, wd, t = 1e-3, 0.9, 0.999, 1e-8, 0.01, 3
    hp = hp_record("adamw", lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd,
                   bias_correction1=1 - b1 ** t, bias_correction2=1 - b2 ** t)
    b = ProgramBuilder(small)
    regs = {n: b.alloc(n, a.shape, init=a) for n, a in (("w", w), ("g", g), ("m", m), ("v", v), ("hp", hp))}
    for i, n in enumerate(regs):
        b.load_region(regs[n], "vec", i * 128, signal="wuve" if n == "hp" else ())
    b.wuve("adamw", 16, w_buf="vec", w_addr=0, g_buf="vec", g_addr=128, m_buf="vec", m_addr=256,
           v_buf="vec", v_addr=384, hp_buf="vec", hp_addr=512, wait="load", signal="store")
    b.store_region(regs["w"], "vec", 0, wait="wuve")
    out = run_program(b.build()).read("w")
    m1 = b1 * m + (1 - b1) * g
    v1 = b2 * v + (1 - b2) * g * g
    ref = w * (1 - lr * wd) - lr * (m1 / (1 - b1 ** t)) / (np.sqrt(v1 / (1 - b2 ** t)) + eps)
    np.testing.assert_allclose(out, ref, rtol=1e-5)


@pytest.mark.parametrize("axis", [1, 0])
def test_sore_matches_nm_oracle(small, axis):
    w = rand(8, 20)              # 20 is not a multiple of 8: padded groups
    w[0, :4] = 1.0               # ties: the lower index wins
    b = ProgramBuilder(small)
    rw = b.alloc("w", w.shape, init=w)
    outer, length = (8, 20) if axis == 1 else (20, 8)
    vals, idx = compress_rows(w, 2, 8, axis)
    rv, ri = b.alloc("v", vals.shape), b.alloc("i", idx.shape, "u8")
    b.load_region(rw, "vec", 0, signal="sore")
    b.sore(2, 8, 8, 20, axis=axis, src_buf="vec", src_addr=0, val_buf="wgt", val_addr=0,
           idx_buf="wgt", idx_addr=4096, wait="load", signal="store")
    b.store_region(rv, "wgt", 0, wait="sore")
    b.store_region(ri, "wgt", 4096)
    emu = run_program(b.build())
    c = nm_compress(w, 2, 8, axis)
    np.testing.assert_array_equal(emu.read("v"), c.values.reshape(outer, -1))
    np.testing.assert_array_equal(unpack_indices(emu.read("i"), length, 2, 8), c.indices)


def test_sore_then_sparse_gemm(small):
    """SORE output feeds an N:M GEMM directly (pre-generation of sparse weights)."""
    w, x = rand(4, 16), rand(5, 16)
    b = ProgramBuilder(small)
    rw, rx, ry = b.alloc("w", w.shape, init=w), b.alloc("x", x.shape, init=x), b.alloc("y", (5, 4))
    b.load_region(rw, "vec", 0, signal="sore")
    b.load_region(rx, "act", 0, signal="stce")
    b.sore(2, 8, 4, 16, src_buf="vec", src_addr=0, val_buf="wgt", val_addr=0, idx_buf="wgt",
           idx_addr=1024, wait="load", signal="stce")
    b.gemm(5, 4, 16, a_buf="act", a_addr=0, b_buf="wgt", b_addr=0, idx_addr=1024, n=2, m=8,
           sparse_b=True, c_addr=0, wait=("load", "sore"), signal="store")
    b.store_region(ry, "acc", 0, wait="stce")
    wp = np.where(nm_mask(w, 2, 8, 1), w, 0)
    np.testing.assert_allclose(run_program(b.build()).read("y"), x @ wp.T, rtol=1e-6, atol=1e-6)


def test_mixed_precision_rounds_operands(small, asm_program):
    cfg = dataclasses.replace(small, precision="mixed")
    a, b_ = rand(4, 8) * 3, rand(8, 4) * 3
    prog = asm_program(cfg, DENSE_GEMM.format(df="ws"),
                       {"A": (0, a), "B": (128, b_), "C": (256, ((4, 4), "fp32"))})
    c = run_program(prog).read("C")
    ref = a.astype(np.float16).astype(np.float32) @ b_.astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(c, ref, rtol=1e-6)
    assert not np.allclose(c, a @ b_, rtol=1e-7, atol=0)


def test_transposed_operands_and_accumulate(small):
    a, b_, c0 = rand(8, 4), rand(4, 8), rand(4, 4)      # A stored k x mt, B stored nt x k
    bld = ProgramBuilder(small)
    ra, rb, rc = (bld.alloc(n, x.shape, init=x) for n, x in (("a", a), ("b", b_), ("c", c0)))
    bld.load_region(ra, "act", 0)
    bld.load_region(rb, "wgt", 0)
    bld.load_region(rc, "acc", 0, signal="stce")
    bld.gemm(4, 4, 8, a_buf="act", a_addr=0, b_buf="wgt", b_addr=0, c_addr=0, trans_a=True,
             trans_b=True, accumulate=True, wait="load", signal="store")
    bld.store_region(rc, "acc", 0, wait="stce")
    np.testing.assert_allclose(run_program(bld.build()).read("c"), c0 + a.T @ b_.T, rtol=1e-6)


def test_3d_dma(small):
    x = rand(2, 3, 4)
    b = ProgramBuilder(small)
    rx, ry = b.alloc("x", x.shape, init=x), b.alloc("y", (2, 2, 4))
    # planes 2, rows 1..2 of each plane, into a buffer with a padded plane stride of 16 elements
    b.load("act", 0, rx.addr + 4 * 4, 2, 4, planes=2, dram_plane_stride=12, buf_plane_stride=16,
           signal="store")
    b.store("act", 0, ry.addr, 2, 4, planes=2, dram_plane_stride=8, buf_plane_stride=16, wait="load")
    prog = b.build()
    np.testing.assert_array_equal(run_program(prog).read("y"), x[:, 1:3])


# ---------------------------------------------------------------- refusals

@pytest.fixture
def refuse(asm_program):
    """check(cfg, text, regions, needle, index): preparing the program raises EmulatorError."""
    def check(cfg, text, regions, needle, index):
        with pytest.raises(EmulatorError) as e:
            Emulator(asm_program(cfg, text, regions, dram_size=4096))
        msg = str(e.value)
        assert f"instruction {index}" in msg and needle in msg, msg
    return check


def test_refuse_out_of_bounds_dram(small, refuse):
    refuse(small, "nop engine=stce\nload buf=act dram_addr=4000 rows=4 cols=100 dram_row_stride=100 "
            "buf_row_stride=100", {}, "out-of-bounds DRAM", 1)


def test_refuse_misaligned(small, refuse):
    refuse(small, "load buf=act buf_addr=2 dram_addr=0 rows=1 cols=4 dram_row_stride=4 buf_row_stride=4",
            {"x": (0, rand(4))}, "misaligned", 0)


def test_refuse_buffer_overflow(small, refuse):
    refuse(small, f"load buf=wgt buf_addr={small.wgt_buffer_bytes - 8} dram_addr=0 rows=1 cols=4 "
            "dram_row_stride=4 buf_row_stride=4", {"x": (0, rand(4))}, "buffer overflow of the wgt", 0)


def test_refuse_unproduced_read(small, refuse):
    # the gemm reads B from wgt, which no instruction loaded
    text = ("load buf=act dram_addr=0 rows=4 cols=8 dram_row_stride=8 buf_row_stride=8 signal=stce\n"
            "gemm wait=load a_buf=act a_addr=0 a_stride=8 b_buf=wgt b_addr=0 b_stride=4 idx_buf=wgt "
            "c_addr=0 c_stride=4 mt=4 nt=4 k=8")
    refuse(small, text, {"A": (0, rand(4, 8))}, "reads b", 1)


def test_refuse_unproduced_dram(small, refuse):
    refuse(small, "load buf=act dram_addr=0 rows=1 cols=4 dram_row_stride=4 buf_row_stride=4",
            {"out": (0, ((4,), "fp32"))}, "no completed instruction produced", 0)


def test_refuse_deadlock(small, refuse):
    # the store waits for a token from the STCE, but the gemm never signals
    text = ("load buf=act dram_addr=0 rows=4 cols=8 dram_row_stride=8 buf_row_stride=8\n"
            "load buf=wgt dram_addr=128 rows=8 cols=4 dram_row_stride=4 buf_row_stride=4 signal=stce\n"
            "gemm wait=load a_buf=act a_addr=0 a_stride=8 b_buf=wgt b_addr=0 b_stride=4 idx_buf=wgt "
            "c_addr=0 c_stride=4 mt=4 nt=4 k=8\n"
            "store wait=stce buf=acc dram_addr=256 rows=4 cols=4 dram_row_stride=4 buf_row_stride=4")
    refuse(small, text, {"A": (0, rand(4, 8)), "B": (128, rand(8, 4)), "C": (256, ((4, 4), "fp32"))},
            "deadlock", 3)


def test_refuse_cyclic_wait(small, refuse):
    text = "nop engine=stce wait=vector signal=vector\nnop engine=vector wait=stce signal=stce"
    refuse(small, text, {}, "deadlock", 0)


def test_refuse_unsupported_nm(small, refuse):
    text = SPARSE_A.format(df="ws").replace("n=2 m=8", "n=1 m=8")
    refuse(small, text, {}, "unsupported N:M 1:8", 3)
    sore = ("sore n=2 m=16 src_buf=vec rows=4 cols=16 src_stride=16 val_buf=wgt val_stride=2 "
            "idx_buf=wgt idx_stride=1")
    refuse(small, sore, {}, "unsupported N:M 2:16", 0)


def test_refuse_unsupported_dataflow(small, refuse):
    cfg = dataclasses.replace(small, dataflows=("ws",))
    refuse(cfg, DENSE_GEMM.format(df="os"), {}, "dataflow os", 2)


def test_refuse_transposed_compressed_operand(small, refuse):
    text = SPARSE_A.format(df="ws").replace("n=2 m=8", "n=2 m=8 trans_a=1")
    refuse(small, text, {}, "cannot be transposed", 3)


def _doubling_program(cfg):
    """x <- 2 * x in place in DRAM (load, mul_imm, store back to x's region)."""
    b = ProgramBuilder(cfg)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    rx = b.alloc("x", x.shape, init=x)
    rscratch = b.alloc("scratch", (1, 1))
    b.load_region(rx, "vec", 0, signal="vector")
    b.vec("mul_imm", 2, 3, s0_addr=0, d_addr=256, imm=2.0, wait="load", signal="store")
    b.store("vec", 256, rx.addr, 2, 3, wait="vector")
    return b.build(), x, rscratch


def test_run_keep_carries_region_contents_over(small):
    prog, x, _ = _doubling_program(small)
    emu = Emulator(prog)
    np.testing.assert_array_equal(emu.run(keep=["x"]).read("x"), 2 * x)    # first run: init
    np.testing.assert_array_equal(emu.run(keep=["x"]).read("x"), 4 * x)    # carried over
    np.testing.assert_array_equal(emu.run().read("x"), 2 * x)              # restored, then doubled
    np.testing.assert_array_equal(emu.run({"x": x + 1}).read("x"), 2 * (x + 1))


def test_run_keep_refusals(small):
    prog, x, _ = _doubling_program(small)
    emu = Emulator(prog)
    with pytest.raises(EmulatorError, match="both given new data and kept"):
        emu.run({"x": x}, keep=["x"])
    with pytest.raises(EmulatorError, match="'scratch' has no initial contents"):
        emu.run(keep=["scratch"])


@pytest.mark.parametrize("precision", ["fp32", "mixed"])
def test_converted_operands_shared_only_while_their_bytes_are_unchanged(small, precision):
    """GEMMs 1-2 read the same compressed W (decoded once, shared); a load then overwrites W's
    values and indices in the buffer, and GEMM 3 must see the new weights."""
    cfg = dataclasses.replace(small, precision=precision)
    w1, w2, x = rand(4, 16), rand(4, 16), rand(5, 16)
    (v1, i1), (v2, i2) = compress_rows(w1, 2, 8, axis=1), compress_rows(w2, 2, 8, axis=1)
    b = ProgramBuilder(cfg)
    rv1, ri1 = b.alloc("v1", v1.shape, init=v1), b.alloc("i1", i1.shape, "u8", init=i1)
    rv2, ri2 = b.alloc("v2", v2.shape, init=v2), b.alloc("i2", i2.shape, "u8", init=i2)
    rx = b.alloc("x", x.shape, init=x)
    ry = [b.alloc(f"y{j}", (5, 4)) for j in range(3)]
    b.load_region(rx, "act", 0)
    b.load_region(rv1, "wgt", 0)
    b.load_region(ri1, "wgt", 1024, signal="stce")
    sparse = dict(a_buf="act", a_addr=0, b_buf="wgt", b_addr=0, idx_addr=1024, n=2, m=8, sparse_b=True)
    b.gemm(5, 4, 16, c_addr=0, wait="load", **sparse)
    b.gemm(5, 4, 16, c_addr=256, signal="load", **sparse)
    b.load_region(rv2, "wgt", 0, wait="stce")                  # after GEMMs 1-2 consumed W1
    b.load_region(ri2, "wgt", 1024, signal="stce")
    b.gemm(5, 4, 16, c_addr=512, wait="load", signal="store", **sparse)
    b.nop("stce", signal="store")
    b.nop("stce", signal="store")
    for j, r in enumerate(ry):
        b.store_region(r, "acc", 256 * j, wait="stce")
    emu = Emulator(b.build())
    # GEMM 2 reuses GEMM 1's decode of W1; in mixed precision GEMMs 2-3 also reuse x's rounding
    assert emu.shared_operand_reads == (1 if precision == "fp32" else 3)
    for _ in range(2):                                          # a second run decodes afresh
        emu.run()
        x_op = x.astype(np.float16).astype(np.float32) if precision == "mixed" else x
        for j, w in ((0, w1), (1, w1), (2, w2)):
            wp = np.where(nm_mask(w, 2, 8, 1), w, 0)
            if precision == "mixed":
                wp = wp.astype(np.float16).astype(np.float32)
            np.testing.assert_allclose(emu.read(f"y{j}"), x_op @ wp.T, rtol=1e-6, atol=1e-6)


def test_interrupted_run_puts_kept_regions_back(small):
    prog, x, _ = _doubling_program(small)
    emu = Emulator(prog)

    def interrupt():
        raise KeyboardInterrupt
    emu._kernels.append(interrupt)                 # after the store that doubled x in DRAM
    with pytest.raises(KeyboardInterrupt):
        emu.run(keep=["x"])
    np.testing.assert_array_equal(emu.read("x"), x)
    emu._kernels.pop()
    np.testing.assert_array_equal(emu.run(keep=["x"]).read("x"), 2 * x)



def test_work_arrays_are_bounded(small, asm_program, monkeypatch):
    from satc.backends.sat import emulator as emulator_module
    monkeypatch.setattr(emulator_module, "MAX_WORK_BYTES", 16)
    prog = asm_program(small, SPARSE_A.format(df="ws"), {"W": (0, rand(4, 4)),
                       "I": (64, np.zeros((4, 2), np.uint8)), "X": (128, rand(16, 4)),
                       "C": (512, ((4, 4), "fp32"))})
    with pytest.raises(EmulatorError, match=r"instruction 3 \(gemm\): the emulator's work arrays "
                                            r"would exceed"):
        Emulator(prog)


def test_carried_regions_are_those_read_then_overwritten(small):
    prog, _, _ = _doubling_program(small)
    assert Emulator(prog).carried == ("x",)


def _zero_region_program(cfg, overwrite: bool):
    """y <- z + 1 with z a zero region (nothing stored); with ``overwrite``, z <- 5 after."""
    b = ProgramBuilder(cfg)
    rz = b.alloc("z", (2, 3), zero=True)
    ry = b.alloc("y", (2, 3))
    b.load_region(rz, "vec", 0, signal="vector")
    b.vec("add_imm", 2, 3, s0_addr=0, d_addr=256, imm=1.0, wait="load", signal="store")
    b.store("vec", 256, ry.addr, 2, 3, wait="vector", signal="vector" if overwrite else ())
    if overwrite:
        b.vec("mul_imm", 2, 3, s0_addr=256, d_addr=512, imm=5.0, wait="store", signal="store")
        b.store("vec", 512, rz.addr, 2, 3, wait="vector")
    return b.build()


@pytest.mark.parametrize("overwrite", [False, True])
def test_zero_region_reads_as_zero_every_run(small, overwrite):
    """A zero region stores no bytes, counts as produced, is not carried state, and is zeroed
    again before a run only when a run overwrites what it read as zeros."""
    prog = _zero_region_program(small, overwrite)
    assert prog.region("z").init is None and prog.region("z").zero
    assert Program.from_bytes(prog.to_bytes()).region("z").zero
    emu = Emulator(prog)
    assert emu.carried == ()
    for _ in range(2):
        np.testing.assert_array_equal(emu.run().read("y"), np.ones((2, 3), np.float32))
    assert emu._rezero == ([(prog.region("z").addr, 24)] if overwrite else [])


def test_region_with_init_and_zero_is_refused(small):
    b = ProgramBuilder(small)
    b.alloc("z", (2, 3), zero=True)
    prog = b.build()
    bad = Region("z", prog.region("z").addr, (2, 3), "fp32", bytes(24), True)
    with pytest.raises(ProgramFileError, match="'z' has both init bytes and the zero flag"):
        prog.with_contents(regions=(bad,))
