"""Per-instruction cost model of SAT: how many cycles one instruction occupies its engine.

:func:`instruction_cycles` is what the in-order simulator
(:mod:`satc.backends.sat.timing`) charges each instruction, and what the
scheduler and the tiler plan with. Every number comes from the
:class:`HardwareConfig`:

* every instruction: ``issue_cycles`` plus its body below;
* load / store: ``dram_latency_cycles + ceil(bytes / dram_bytes_per_cycle)``
  (each DMA engine sees the configured bandwidth);
* gemm: ``ksteps = ceil(k / multipliers_per_pe)`` dense, or
  ``ceil(ceil(k / M) / nm_groups_per_cycle)`` N:M (one group of M per USPE per
  cycle); ``fill = rows + cols`` (systolic fill and drain).

  - OS: each PE owns one output; ``ceil(mt/rows) * ceil(nt/cols)`` passes,
    each streaming ``body = ksteps + rows * os_drain_cycles_per_row``
    (results shift out).
  - WS: the stationary operand (the compressed one for N:M; for dense, A when
    the instruction's ``stationary_a`` bit is set, else B) sits in
    the array, one k-step per PE row: ``K = ceil(ksteps/rows)`` k-slices
    times ``C = ceil(S/cols)`` column blocks of passes, each streaming
    ``body = rows * ws_preload_cycles_per_row + T``, where S is the
    stationary operand's outer size and T the streamed one's. Consecutive
    k-slices of one column block accumulate into the same outputs.

  Fill and drain (``fill``) depend on the pass order, set by the
  instruction's ``interleave`` bit (the compiler's interleave mapping):

  - ``interleave=0``: passes run back to back on dependent data, every pass
    waits for the previous one to drain: ``passes * (body + fill)``;
  - ``interleave=1``: consecutive passes go to independent output blocks
    (OS: every block; WS: column blocks innermost), so the pipeline fills
    once per instruction and a pass stalls only for the unfinished drain of
    the pass it accumulates onto: OS ``passes * body + fill``; WS
    ``passes * body + fill + (K - 1) * max(0, fill - (C - 1) * body)``.

  So OS pays per output tile and favours long k; WS pays per k-slice and
  favours a long streamed dimension (large batch).
* vec: ``vector_latency_cycles + ceil(work / vector_lanes)`` (work from the
  vector function table);
* wuve: ``wuve_latency_cycles + ceil(length / wuve_lanes)``;
* sore: ``sore_latency_cycles + ceil(groups / sore_lanes) * M * sore_cycles_per_element``;
* nop: ``issue_cycles`` only.
"""

from __future__ import annotations

import math

from satc.backends.sat.config import HardwareConfig
from satc.backends.sat.isa import DTYPE_BYTES, Instruction
from satc.backends.sat.nmformat import groups
from satc.backends.sat.vecfuncs import VEC_FUNC_BY_NAME, vec_work


def gemm_macs(ins: Instruction) -> tuple[int, int]:
    """(multiplies executed, dense-equivalent MACs) of a gemm instruction."""
    dense = ins.mt * ins.nt * ins.k
    if ins.n == 0:
        return dense, dense
    return ins.mt * ins.nt * groups(ins.k, ins.m) * ins.n, dense


def gemm_cycles(ins: Instruction, cfg: HardwareConfig) -> int:
    """STCE cycles of one gemm (without issue_cycles); see the module docstring."""
    if ins.n == 0:
        ksteps = math.ceil(ins.k / cfg.multipliers_per_pe)
    else:
        ksteps = math.ceil(groups(ins.k, ins.m) / cfg.nm_groups_per_cycle)
    fill = cfg.rows + cfg.cols
    if ins.dataflow == "os":
        passes = math.ceil(ins.mt / cfg.rows) * math.ceil(ins.nt / cfg.cols)
        body = ksteps + cfg.rows * cfg.os_drain_cycles_per_row
        return passes * body + fill if ins.interleave else passes * (body + fill)
    a_stationary = not ins.sparse_b if ins.n > 0 else bool(ins.stationary_a)
    stationary, streamed = (ins.mt, ins.nt) if a_stationary else (ins.nt, ins.mt)
    kslices, blocks = math.ceil(ksteps / cfg.rows), math.ceil(stationary / cfg.cols)
    body = cfg.rows * cfg.ws_preload_cycles_per_row + streamed
    if not ins.interleave:
        return kslices * blocks * (body + fill)
    return kslices * blocks * body + fill + (kslices - 1) * max(0, fill - (blocks - 1) * body)


def instruction_cycles(ins: Instruction, cfg: HardwareConfig) -> int:
    """Cycles ``ins`` occupies its engine (issue_cycles included)."""
    op = ins.op
    if op in ("load", "store"):
        nbytes = ins.planes * ins.rows * ins.cols * DTYPE_BYTES[ins.dtype]
        body = cfg.dram_latency_cycles + math.ceil(nbytes / cfg.dram_bytes_per_cycle)
    elif op == "gemm":
        body = gemm_cycles(ins, cfg)
    elif op == "vec":
        work = vec_work(VEC_FUNC_BY_NAME[ins.func], ins.rows, ins.cols, ins)
        body = cfg.vector_latency_cycles + math.ceil(work / cfg.vector_lanes)
    elif op == "wuve":
        body = cfg.wuve_latency_cycles + math.ceil(ins.length / cfg.wuve_lanes)
    elif op == "sore":
        outer, length = (ins.rows, ins.cols) if ins.axis == 1 else (ins.cols, ins.rows)
        ngroups = outer * groups(length, ins.m)
        body = cfg.sore_latency_cycles + math.ceil(ngroups / cfg.sore_lanes) * ins.m \
            * cfg.sore_cycles_per_element
    else:
        body = 0
    return cfg.issue_cycles + body
