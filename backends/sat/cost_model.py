"""Per-instruction cost model of SAT: how many cycles one instruction occupies its engine.

:func:`instruction_cycles` is what the in-order simulator
(:mod:`satc.backends.sat.timing`) charges each instruction, and what the
scheduler and the tiler plan with. Every number comes from the
:class:`HardwareConfig`:

* every instruction: ``issue_cycles`` plus its body below;
* load / store: the transfer, ``ceil(moved / rate)`` (:func:`dma_transfer_cycles`):
  ``moved`` is the DMA's bytes with every contiguous DRAM run (a row of
  ``cols`` elements, or whole rows / planes when the DRAM strides make them
  contiguous) rounded up to whole ``dram_burst_bytes``; ``rate`` is
  ``dram_stream_bytes_per_cycle``, the achievable bandwidth capped by Little's
  law at ``dram_outstanding_requests * dram_burst_bytes / dram_latency_cycles``.
  With ``dram_shared`` the transfer also holds the one DRAM channel that both
  DMA engines use (transfers of load and store serialise). The latency is not
  engine time: the DMA's results are ready ``dram_latency_cycles`` after it
  ends (:func:`ready_delay`), a delay on its dependants on other engines;
* gemm, at least the operand feed: ``max(array cycles, ceil(bytes read from
  buffer b / b's read port))`` over the buffers (:func:`gemm_feed_bytes`), the
  array cycles being:

  ``ksteps = ceil(k / multipliers_per_pe)`` dense, or
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
from satc.backends.sat.isa import BUFFERS, DTYPE_BYTES, Instruction
from satc.backends.sat.nmformat import groups, row_bytes

#: the ops of the two DMA engines (they share the DRAM channel when ``dram_shared``)
DMA_OPS = ("load", "store")


def dma_runs(ins: Instruction) -> tuple[int, int]:
    """(bytes of one contiguous DRAM run, number of runs) of a load / store.

    A run is a row of ``cols`` elements; consecutive rows merge into one run when
    the DRAM row stride equals ``cols`` (or there is one row), and planes merge
    too when the plane stride equals ``rows * cols`` (or there is one plane).
    """
    item = DTYPE_BYTES[ins.dtype]
    run, runs = ins.cols * item, ins.planes * ins.rows
    if ins.rows == 1 or ins.dram_row_stride == ins.cols:
        run, runs = run * ins.rows, ins.planes
        if ins.planes == 1 or ins.dram_plane_stride == ins.rows * ins.cols:
            run, runs = run * ins.planes, 1
    return run, runs


def dram_moved_bytes(nbytes: int, run_bytes: int, cfg: HardwareConfig) -> int:
    """Bytes a DMA of ``nbytes`` in contiguous DRAM runs of ``run_bytes`` (the last run may be
    shorter) moves over the channel: each run rounded up to whole ``dram_burst_bytes``."""
    if nbytes <= 0:
        return 0
    burst = cfg.dram_burst_bytes
    run = max(1, min(run_bytes, nbytes))
    full, rest = divmod(nbytes, run)
    return full * -(-run // burst) * burst + -(-rest // burst) * burst


def transfer_cycles(nbytes: int, run_bytes: int, cfg: HardwareConfig) -> int:
    """Channel cycles to move ``nbytes`` in contiguous DRAM runs of ``run_bytes`` (for planning:
    the tiler's estimate of a tile's DMA; without ``issue_cycles``)."""
    return math.ceil(dram_moved_bytes(nbytes, run_bytes, cfg) / cfg.dram_stream_bytes_per_cycle)


def dma_payload_bytes(ins: Instruction) -> int:
    """Payload bytes of a load / store (``planes * rows * cols`` elements)."""
    return ins.planes * ins.rows * ins.cols * DTYPE_BYTES[ins.dtype]


def dma_burst_bytes(ins: Instruction, cfg: HardwareConfig) -> int:
    """Bytes a load / store moves over the DRAM channel: its runs rounded up to whole bursts."""
    run, runs = dma_runs(ins)
    return runs * -(-run // cfg.dram_burst_bytes) * cfg.dram_burst_bytes


def dma_transfer_cycles(ins: Instruction, cfg: HardwareConfig) -> int:
    """Transfer cycles of a load / store (without ``issue_cycles``): burst-rounded bytes over
    ``dram_stream_bytes_per_cycle``."""
    return math.ceil(dma_burst_bytes(ins, cfg) / cfg.dram_stream_bytes_per_cycle)


def uses_channel(ins_or_op: Instruction | str, cfg: HardwareConfig) -> bool:
    """Whether an instruction (or op name) holds the shared DRAM channel while it runs."""
    op = ins_or_op if isinstance(ins_or_op, str) else ins_or_op.op
    return cfg.dram_shared and op in DMA_OPS


def ready_delay(ins_or_op: Instruction | str, cfg: HardwareConfig) -> int:
    """Cycles after an instruction ends until its results are visible to *other* engines:
    ``dram_latency_cycles`` for a load / store, 0 otherwise. Its own engine's next
    instruction does not wait (the engine streams; requests stay in flight)."""
    op = ins_or_op if isinstance(ins_or_op, str) else ins_or_op.op
    return cfg.dram_latency_cycles if op in DMA_OPS else 0


def gemm_feed_bytes(ins: Instruction, cfg: HardwareConfig) -> dict[str, int]:
    """Operand bytes a gemm reads from each on-chip buffer, counting re-streams.

    OS: every pass streams its A row block and its B column block, so A is read
    ``ceil(nt / cols)`` times and B ``ceil(mt / rows)`` times. WS: the stationary
    operand is read once, the streamed one once per column block
    (``ceil(S / cols)``). A compressed operand reads its values and packed indices.
    """
    sparse = ins.n > 0
    ea, eb = DTYPE_BYTES[ins.a_dtype], DTYPE_BYTES[ins.b_dtype]
    parts: dict[str, list[tuple[str, int]]] = {}     # (buffer, bytes) per operand
    for name, outer, item, comp in (("a", ins.mt, ea, sparse and not ins.sparse_b),
                                    ("b", ins.nt, eb, sparse and bool(ins.sparse_b))):
        if comp:
            parts[name] = [(getattr(ins, f"{name}_buf"), outer * groups(ins.k, ins.m) * ins.n * item),
                           (ins.idx_buf, outer * row_bytes(ins.k, ins.n, ins.m))]
        else:
            parts[name] = [(getattr(ins, f"{name}_buf"), outer * ins.k * item)]
    if ins.dataflow == "os":
        times = {"a": math.ceil(ins.nt / cfg.cols), "b": math.ceil(ins.mt / cfg.rows)}
    else:
        a_stationary = not ins.sparse_b if sparse else bool(ins.stationary_a)
        stationary = ins.mt if a_stationary else ins.nt
        blocks = math.ceil(stationary / cfg.cols)
        times = {"a": 1, "b": blocks} if a_stationary else {"a": blocks, "b": 1}
    out = dict.fromkeys(BUFFERS, 0)
    for name, items in parts.items():
        for buf, nbytes in items:
            out[buf] += nbytes * times[name]
    return out


def gemm_feed_cycles(ins: Instruction, cfg: HardwareConfig) -> int:
    """Least cycles of a gemm by its operand feed: the slowest buffer read port."""
    ports = cfg.read_port_bytes_per_cycle
    return max(math.ceil(v / ports[b]) for b, v in gemm_feed_bytes(ins, cfg).items())
from satc.backends.sat.vecfuncs import VEC_FUNC_BY_NAME, vec_work


def gemm_macs(ins: Instruction) -> tuple[int, int]:
    """(multiplies executed, dense-equivalent MACs) of a gemm instruction."""
    dense = ins.mt * ins.nt * ins.k
    if ins.n == 0:
        return dense, dense
    return ins.mt * ins.nt * groups(ins.k, ins.m) * ins.n, dense


def gemm_cycles(ins: Instruction, cfg: HardwareConfig) -> int:
    """STCE cycles of one gemm (without issue_cycles): the array cycles or, if longer, the
    operand feed (:func:`gemm_feed_cycles`); see the module docstring."""
    return max(gemm_array_cycles(ins, cfg), gemm_feed_cycles(ins, cfg))


def gemm_array_cycles(ins: Instruction, cfg: HardwareConfig) -> int:
    """STCE cycles of one gemm by the systolic array alone (operands always on time)."""
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
    """Cycles ``ins`` occupies its engine (issue_cycles included; a load / store holds the
    shared DRAM channel for the same cycles, and its results are ready
    :func:`ready_delay` later)."""
    op = ins.op
    if op in DMA_OPS:
        body = dma_transfer_cycles(ins, cfg)
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
