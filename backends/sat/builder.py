"""ProgramBuilder: the compiler's way to emit SAT programs without assembly text.

One method per instruction, keyword arguments named like the ISA fields,
with strides defaulting to packed tiles; DRAM regions are allocated with
:meth:`ProgramBuilder.alloc`. ``wait`` / ``signal`` take engine names
(``'load'``, ``'store'``, ``'stce'``, ``'vector'``, ``'wuve'``, ``'sore'``).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from satc.backends.sat.config import HardwareConfig
from satc.backends.sat.isa import NP_DTYPES, Instruction
from satc.backends.sat.nmformat import groups, row_bytes
from satc.backends.sat.program import Program, Region
from satc.backends.sat.vecfuncs import VEC_FUNC_BY_NAME, pooled_shape
from satc.errors import CompileError, ISAError

Deps = Iterable[str] | str


class ProgramBuilder:
    """Accumulates DRAM regions and instructions; :meth:`build` returns the Program."""

    def __init__(self, config: HardwareConfig, *, dram_align: int = 64) -> None:
        self.config = config
        self.dram_align = dram_align
        self.regions: list[Region] = []
        self.instructions: list[Instruction] = []
        self._top = 0

    # ---- DRAM layout
    def alloc(self, name: str, shape: tuple[int, ...] | int, dtype: str = "fp32",
              init: np.ndarray | None = None, zero: bool = False) -> Region:
        """Place a region at the next aligned DRAM address; ``init`` is cast to ``dtype``;
        ``zero``: the region starts all zero (nothing stored in the program file)."""
        shape = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
        data = None
        if init is not None:
            arr = np.asarray(init)
            if arr.shape != shape:
                raise ISAError(f"region {name!r}: init shape {arr.shape} != {shape}")
            data = np.ascontiguousarray(arr, dtype=NP_DTYPES[dtype]).tobytes()
        addr = -(-self._top // self.dram_align) * self.dram_align
        region = Region(name, addr, shape, dtype, data, zero)
        self._top = addr + region.nbytes
        self.regions.append(region)
        return region

    def set_init(self, name: str, init: np.ndarray) -> Region:
        """Give the already allocated region ``name`` initial contents (cast to its dtype)."""
        for i, r in enumerate(self.regions):
            if r.name == name:
                arr = np.asarray(init)
                if arr.shape != r.shape:
                    raise ISAError(f"region {name!r}: init shape {arr.shape} != {r.shape}")
                data = np.ascontiguousarray(arr, dtype=NP_DTYPES[r.dtype]).tobytes()
                self.regions[i] = Region(r.name, r.addr, r.shape, r.dtype, data)
                return self.regions[i]
        raise ISAError(f"no region {name!r} to initialise")

    def emit(self, ins: Instruction) -> int:
        """Append an instruction; returns its index."""
        self.instructions.append(ins)
        return len(self.instructions) - 1

    def build(self) -> Program:
        """The finished Program (DRAM sized to the last region, aligned); CompileError when it
        does not fit the config's ``dram_bytes``."""
        size = -(-self._top // self.dram_align) * self.dram_align
        if size > self.config.dram_bytes:
            big = max(self.regions, key=lambda r: r.nbytes)
            raise CompileError(f"the program needs {size / 2**20:.1f} MiB of DRAM (the largest "
                               f"region, {big.name!r}, {big.nbytes / 2**20:.1f} MiB), more than "
                               f"dram_bytes = {self.config.dram_bytes / 2**20:.1f} MiB of "
                               f"{self.config.name}; fix: a smaller batch, or a config with more "
                               "dram_bytes")
        return Program(self.config, tuple(self.instructions), tuple(self.regions), size)

    # ---- DMA
    def _dma(self, op: str, buf: str, buf_addr: int, dram_addr: int, rows: int, cols: int, *,
             dtype: str, planes: int, dram_row_stride: int | None, dram_plane_stride: int,
             buf_row_stride: int | None, buf_plane_stride: int, wait: Deps, signal: Deps) -> int:
        return self.emit(Instruction(
            op, buf=buf, dtype=dtype, buf_addr=buf_addr, dram_addr=dram_addr, planes=planes,
            rows=rows, cols=cols, dram_plane_stride=dram_plane_stride,
            dram_row_stride=cols if dram_row_stride is None else dram_row_stride,
            buf_plane_stride=buf_plane_stride,
            buf_row_stride=cols if buf_row_stride is None else buf_row_stride,
            wait=_deps(wait), signal=_deps(signal)))

    def load(self, buf: str, buf_addr: int, dram_addr: int, rows: int, cols: int, *,
             dtype: str = "fp32", planes: int = 1, dram_row_stride: int | None = None,
             dram_plane_stride: int = 0, buf_row_stride: int | None = None,
             buf_plane_stride: int = 0, wait: Deps = (), signal: Deps = ()) -> int:
        """DMA DRAM -> buffer (strides in elements; row strides default to ``cols``)."""
        return self._dma("load", buf, buf_addr, dram_addr, rows, cols, dtype=dtype, planes=planes,
                         dram_row_stride=dram_row_stride, dram_plane_stride=dram_plane_stride,
                         buf_row_stride=buf_row_stride, buf_plane_stride=buf_plane_stride,
                         wait=wait, signal=signal)

    def store(self, buf: str, buf_addr: int, dram_addr: int, rows: int, cols: int, *,
              dtype: str = "fp32", planes: int = 1, dram_row_stride: int | None = None,
              dram_plane_stride: int = 0, buf_row_stride: int | None = None,
              buf_plane_stride: int = 0, wait: Deps = (), signal: Deps = ()) -> int:
        """DMA buffer -> DRAM (strides in elements; row strides default to ``cols``)."""
        return self._dma("store", buf, buf_addr, dram_addr, rows, cols, dtype=dtype, planes=planes,
                         dram_row_stride=dram_row_stride, dram_plane_stride=dram_plane_stride,
                         buf_row_stride=buf_row_stride, buf_plane_stride=buf_plane_stride,
                         wait=wait, signal=signal)

    def load_region(self, region: Region, buf: str, buf_addr: int, *, wait: Deps = (),
                    signal: Deps = ()) -> int:
        """Load a whole 1-D or 2-D region, packed, into ``buf`` at ``buf_addr``."""
        rows, cols = (1, region.shape[0]) if len(region.shape) == 1 else region.shape
        return self.load(buf, buf_addr, region.addr, rows, cols, dtype=region.dtype, wait=wait,
                         signal=signal)

    def store_region(self, region: Region, buf: str, buf_addr: int, *, wait: Deps = (),
                     signal: Deps = ()) -> int:
        """Store a packed tile from ``buf`` into a whole 1-D or 2-D region."""
        rows, cols = (1, region.shape[0]) if len(region.shape) == 1 else region.shape
        return self.store(buf, buf_addr, region.addr, rows, cols, dtype=region.dtype, wait=wait,
                          signal=signal)

    # ---- compute
    def gemm(self, mt: int, nt: int, k: int, *, a_buf: str, a_addr: int, b_buf: str, b_addr: int,
             c_addr: int, a_dtype: str = "fp32", b_dtype: str = "fp32", n: int = 0, m: int = 0,
             sparse_b: bool = False, idx_buf: str = "wgt", idx_addr: int = 0,
             a_stride: int | None = None, b_stride: int | None = None, c_stride: int | None = None,
             idx_stride: int | None = None, dataflow: str = "ws", trans_a: bool = False,
             trans_b: bool = False, accumulate: bool = False, interleave: bool = False,
             stationary_a: bool = False, wait: Deps = (), signal: Deps = ()) -> int:
        """C[mt, nt] (+)= A @ B; with ``n, m`` set, A (or B if ``sparse_b``) is N:M compressed;
        ``interleave`` sets the pass order of the cycle model (interleave mapping);
        ``stationary_a``: a dense WS GEMM keeps A stationary (else B)."""
        sparse = n > 0
        if sparse and stationary_a:
            raise ISAError("gemm: stationary_a is for dense GEMMs; an N:M GEMM keeps its "
                           "compressed operand stationary")
        packed = groups(k, m) * n if sparse else 0
        if a_stride is None:
            a_stride = packed if sparse and not sparse_b else (mt if trans_a else k)
        if b_stride is None:
            b_stride = packed if sparse and sparse_b else (k if trans_b else nt)
        if idx_stride is None:
            idx_stride = row_bytes(k, n, m) if sparse else 0
        return self.emit(Instruction(
            "gemm", dataflow=dataflow, n=n, m=m, sparse_b=int(sparse_b), trans_a=int(trans_a),
            trans_b=int(trans_b), accumulate=int(accumulate), a_buf=a_buf, a_dtype=a_dtype,
            a_addr=a_addr, a_stride=a_stride, b_buf=b_buf, b_dtype=b_dtype, b_addr=b_addr,
            b_stride=b_stride, idx_buf=idx_buf, idx_addr=idx_addr if sparse else 0,
            idx_stride=idx_stride, c_addr=c_addr, c_stride=nt if c_stride is None else c_stride,
            mt=mt, nt=nt, k=k, interleave=int(interleave), stationary_a=int(stationary_a),
            wait=_deps(wait), signal=_deps(signal)))

    def vec(self, func: str, rows: int, cols: int, *, s0_buf: str = "vec", s0_addr: int = 0,
            s1_buf: str = "vec", s1_addr: int = 0, d_buf: str = "vec", d_addr: int = 0,
            s0_dtype: str = "fp32", s1_dtype: str = "fp32", d_dtype: str = "fp32",
            s0_stride: int | None = None, s1_stride: int | None = None, d_stride: int | None = None,
            bcast: str = "none", axis: int = 1, accumulate: bool = False, imm: float = 0.0,
            window: tuple[int, int, int, int] = (0, 0, 0, 0), wait: Deps = (),
            signal: Deps = ()) -> int:
        """A vector-unit function over an s0 tile of rows x cols (window = kh, kw, sh, sw)."""
        f = VEC_FUNC_BY_NAME.get(func)
        if f is None:
            raise ISAError(f"unknown vector function {func!r}")
        kh, kw, sh, sw = window
        pooled_cols = pooled_shape(rows, cols, kh, kw, sh, sw)[1] if kh and kw and sh and sw else 0
        if s1_stride is None:
            if f.s1_shape == "pair":
                s1_stride = 2 if bcast == "col" else cols
            else:
                s1_stride = pooled_cols if f.s1_shape == "pooled" else \
                    {"col": 1, "scalar": 0}.get(bcast, cols)
        if d_stride is None:
            if f.out_shape == "pooled":
                d_stride = pooled_cols
            elif f.out_shape == "reduce":
                d_stride = 1 if axis == 1 else cols
            elif f.out_shape == "reduce_pair":
                d_stride = 2 if axis == 1 else cols
            elif f.out_shape == "transposed":
                d_stride = rows
            else:
                d_stride = cols
        return self.emit(Instruction(
            "vec", func=func, bcast=bcast, axis=axis, accumulate=int(accumulate),
            s0_buf=s0_buf, s0_dtype=s0_dtype, s0_addr=s0_addr,
            s0_stride=cols if s0_stride is None else s0_stride,
            s1_buf=s1_buf, s1_dtype=s1_dtype, s1_addr=s1_addr, s1_stride=s1_stride,
            d_buf=d_buf, d_dtype=d_dtype, d_addr=d_addr, d_stride=d_stride, rows=rows, cols=cols,
            kh=kh, kw=kw, sh=sh, sw=sw, imm=imm, wait=_deps(wait), signal=_deps(signal)))

    def wuve(self, func: str, length: int, *, w_buf: str, w_addr: int, g_buf: str, g_addr: int,
             m_buf: str, m_addr: int, hp_buf: str, hp_addr: int, g_dtype: str = "fp32",
             v_buf: str = "vec", v_addr: int = 0, w16_buf: str | None = None, w16_addr: int = 0,
             wait: Deps = (), signal: Deps = ()) -> int:
        """Update ``length`` fp32 master weights with rule ``func`` ('sgd' or 'adamw')."""
        return self.emit(Instruction(
            "wuve", func=func, w_buf=w_buf, w_addr=w_addr, g_buf=g_buf, g_dtype=g_dtype,
            g_addr=g_addr, m_buf=m_buf, m_addr=m_addr, v_buf=v_buf, v_addr=v_addr,
            w16=int(w16_buf is not None), w16_buf=w16_buf or "act", w16_addr=w16_addr,
            hp_buf=hp_buf, hp_addr=hp_addr, length=length, wait=_deps(wait), signal=_deps(signal)))

    def sore(self, n: int, m: int, rows: int, cols: int, *, src_buf: str, src_addr: int,
             val_buf: str, val_addr: int, idx_buf: str, idx_addr: int, axis: int = 1,
             src_dtype: str = "fp32", val_dtype: str = "fp32", src_stride: int | None = None,
             val_stride: int | None = None, idx_stride: int | None = None, wait: Deps = (),
             signal: Deps = ()) -> int:
        """Prune a rows x cols tile N:M along ``axis`` into packed values + indices."""
        length = cols if axis == 1 else rows
        return self.emit(Instruction(
            "sore", axis=axis, n=n, m=m, src_buf=src_buf, src_dtype=src_dtype, src_addr=src_addr,
            src_stride=cols if src_stride is None else src_stride, rows=rows, cols=cols,
            val_buf=val_buf, val_dtype=val_dtype, val_addr=val_addr,
            val_stride=groups(length, m) * n if val_stride is None else val_stride,
            idx_buf=idx_buf, idx_addr=idx_addr,
            idx_stride=row_bytes(length, n, m) if idx_stride is None else idx_stride,
            wait=_deps(wait), signal=_deps(signal)))

    def nop(self, engine: str, *, wait: Deps = (), signal: Deps = ()) -> int:
        """A dependency-only instruction in ``engine``'s queue."""
        return self.emit(Instruction("nop", engine=engine, wait=_deps(wait), signal=_deps(signal)))


def _deps(d: Deps) -> tuple[str, ...] | str:
    return d if isinstance(d, str) else tuple(d)
