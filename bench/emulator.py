"""Emulator speed: emulated MAC/s of tiled GEMM programs vs numpy's matmul rate.

For each tile size T a program computes C[S, S] = A[S, S] @ B[S, S] as
(S/T)^3 accumulating T x T x T GEMM instructions over operands held on chip
(loaded once), dense and with B = W^T pruned 2:8 (compressed, rebuilt from
values + packed indices in the buffer). Each operand tile feeds S/T GEMMs;
the emulator converts it once and shares it while its bytes are unchanged
(column ``shared``: GEMMs that reused a converted operand; see
``satc.backends.sat.operand_cache``). The emulated rate counts
dense-equivalent MACs over the wall time of ``Emulator.run``; numpy's rate is
``np.matmul`` on contiguous T x T x T fp32 operands. Preparation (checks,
issue order, view resolution) is timed separately. ``mixed`` programs hold
operands in fp16 as the compiler emits them under AMP (widened to fp32 by
every GEMM). BLAS is pinned to one thread (override with
OPENBLAS_NUM_THREADS) so the comparison is stable on a shared machine.

Usage: ``.venv/bin/python bench/emulator.py [--size S] [--tiles 64,128,256] [--repeat R]``
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.config import DEFAULT_HARDWARE, load_hardware
from satc.backends.sat.emulator import Emulator
from satc.backends.sat.nmformat import compress_rows, row_bytes
from satc.backends.sat.program import Program


def gemm_program(size: int, tile: int, sparse: bool, precision: str) -> Program:
    """C = A @ B (dense) or A @ W^T with W pruned 2:8 along k, tiled at ``tile``."""
    base = load_hardware(DEFAULT_HARDWARE)
    big = 1 << 24
    cfg = dataclasses.replace(base, name="bench", act_buffer_bytes=big, wgt_buffer_bytes=big,
                              acc_buffer_bytes=big, precision=precision)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(np.float32)
    dt = "fp16" if precision == "mixed" else "fp32"
    es = 2 if precision == "mixed" else 4
    b = ProgramBuilder(cfg)
    ra = b.alloc("A", a.shape, dt, init=a)
    rc = b.alloc("C", (size, size))
    b.load_region(ra, "act", 0)
    n, m = 2, 8
    if sparse:
        w = rng.standard_normal((size, size)).astype(np.float32)
        vals, idx = compress_rows(w, n, m, axis=1, dtype=dt)
        rv, ri = b.alloc("V", vals.shape, dt, init=vals), b.alloc("I", idx.shape, "u8", init=idx)
        b.load_region(rv, "wgt", 0)
        idx_base = rv.nbytes
        b.load_region(ri, "wgt", idx_base, signal="stce")
        vcols, icols = vals.shape[1], idx.shape[1]
    else:
        rb = b.alloc("B", (size, size), dt, init=rng.standard_normal((size, size)))
        b.load_region(rb, "wgt", 0, signal="stce")
    nt = size // tile
    first = True
    for i in range(nt):
        for j in range(nt):
            for kk in range(nt):
                c_addr = (i * tile * size + j * tile) * 4
                a_addr = (i * tile * size + kk * tile) * es
                common = dict(a_buf="act", a_addr=a_addr, a_dtype=dt, b_dtype=dt, a_stride=size,
                              c_addr=c_addr, c_stride=size,
                              accumulate=kk > 0, wait=("load",) if first else ())
                if sparse:
                    vpt = tile // m * n
                    b.gemm(tile, tile, tile, b_buf="wgt", b_addr=(j * tile * vcols + kk * vpt) * es,
                           b_stride=vcols, n=n, m=m, sparse_b=True, idx_buf="wgt",
                           idx_addr=idx_base + j * tile * icols + kk * row_bytes(tile, n, m),
                           idx_stride=icols, **common)
                else:
                    b.gemm(tile, tile, tile, b_buf="wgt", b_addr=(kk * tile * size + j * tile) * es,
                           b_stride=size, **common)
                first = False
    b.nop("stce", signal="store")
    b.store_region(rc, "acc", 0, wait="stce")
    return b.build()


def numpy_rate(tile: int, repeat: int) -> float:
    """np.matmul MAC/s on contiguous fp32 tile x tile x tile operands (best of ``repeat``)."""
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2, tile, tile)).astype(np.float32)
    out = np.empty((tile, tile), np.float32)
    calls = max(1, (1 << 27) // tile ** 3)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(calls):
            np.matmul(x, y, out=out)
        best = min(best, time.perf_counter() - t)
    return calls * tile ** 3 / best


def emulated_rate(prog: Program, size: int, repeat: int) -> tuple[float, float, int]:
    """(emulated dense-equivalent MAC/s of run(), preparation seconds, shared operand reads)."""
    t = time.perf_counter()
    emu = Emulator(prog)
    prep = time.perf_counter() - t
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        emu.run()
        best = min(best, time.perf_counter() - t)
    return size ** 3 / best, prep, emu.shared_operand_reads


def main() -> None:
    """Print the benchmark table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--tiles", default="64,128,256")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"C[{args.size}x{args.size}] = A @ B, numpy {np.__version__}, "
          f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}; rates in GMAC/s (dense-equivalent); "
          "mixed = fp16 operands, fp32 accumulate")
    print(f"{'tile':>5} {'mode':<12} {'instrs':>7} {'shared':>7} {'prep s':>7} {'emulated':>9} "
          f"{'numpy':>7} {'ratio':>6}")
    for tile in (int(t) for t in args.tiles.split(",")):
        ref = numpy_rate(tile, args.repeat)
        for sparse, precision in ((False, "fp32"), (False, "mixed"), (True, "fp32"), (True, "mixed")):
            prog = gemm_program(args.size, tile, sparse, precision)
            rate, prep, shared = emulated_rate(prog, args.size, args.repeat)
            mode = f"{'2:8' if sparse else 'dense'} {precision}"
            print(f"{tile:>5} {mode:<12} {len(prog.instructions):>7} {shared:>7} {prep:>7.3f} {rate / 1e9:>9.2f} "
                  f"{ref / 1e9:>7.2f} {rate / ref:>6.0%}")


if __name__ == "__main__":
    main()
