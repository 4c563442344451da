"""Synthetic layer-like training-step programs for testing and benchmarking the scheduler.

Layer ``l`` of :func:`synthetic_program` is a small fully connected layer
with ``D = 2 * tile`` (X, W, dY all D x D fp32), emitted the way a compiler
would, layer after layer:

* FF: load X in two row tiles and W in two column tiles, then per output
  tile a GEMM into ``acc``, a ReLU into ``vec`` and a store of Y;
* WU: load dY, four GEMMs ``dW = X^T dY`` into ``acc``, load the fp32 master
  weights, momentum and SGD record, one WUVE update, store W and momentum,
  SORE-prune W 2:4 and store the compressed values and indices.

That is 30 instructions per layer. Layers form ``streams`` independent
chains (layer ``l`` reads the Y of layer ``l - streams`` as its X), so
engines can overlap across layers. Layer ``l`` uses buffer slot
``l % slots``, so slots are reused (WAR hazards) as a memory planner would.
Tokens are the minimal hazard tokens of that order
(:func:`satc.passes.schedule.emit.retoken`).
"""

from __future__ import annotations

import numpy as np

from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.config import HardwareConfig
from satc.backends.sat.isa import BUFFERS
from satc.backends.sat.nmformat import row_bytes
from satc.backends.sat.program import Program
from satc.backends.sat.wuve import hp_record
from satc.errors import ScheduleError
from satc.passes.schedule.emit import retoken

_SLOT = {"act": ("x", "dy"), "wgt": ("wt", "w", "m", "val", "idx"), "acc": ("y", "dw"),
         "vec": ("yv", "hp")}


def _slot_layout(tile: int) -> tuple[dict[str, int], dict[str, int]]:
    """(byte offset of each operand inside a slot, slot size per buffer)."""
    d = 2 * tile
    size = {"x": d * d * 4, "dy": d * d * 4, "wt": d * d * 4, "w": d * d * 4, "m": d * d * 4,
            "val": d * tile * 4, "idx": d * row_bytes(d, 2, 4), "y": d * d * 4, "dw": d * d * 4,
            "yv": d * d * 4, "hp": 32}
    offset, slot = {}, {}
    for buf, names in _SLOT.items():
        top = 0
        for nm in names:
            offset[nm] = top
            top += -(-size[nm] // 64) * 64
        slot[buf] = top
    return offset, slot


def synthetic_program(cfg: HardwareConfig, layers: int, *, streams: int = 2, tile: int = 8,
                      slots: int = 4, seed: int = 0) -> tuple[Program, list[str]]:
    """A ``layers``-layer synthetic training step and one label per instruction (``L3/ff/...``)."""
    if layers < 1 or streams < 1 or slots < 1 or tile < 1:
        raise ScheduleError("synthetic_program needs layers, streams, slots and tile >= 1")
    off, slot = _slot_layout(tile)
    for b in BUFFERS:
        if slot[b] * slots > cfg.buffer_bytes[b]:
            raise ScheduleError(f"{slots} slots of {slot[b]} bytes do not fit the {b} buffer of "
                                f"{cfg.name}; use fewer slots or a smaller tile")
    rng = np.random.default_rng(seed)
    d, t = 2 * tile, tile
    b = ProgramBuilder(cfg)
    labels: list[str] = []
    ys = []

    def at(buf: str, layer: int, name: str) -> int:
        return (layer % slots) * slot[buf] + off[name]

    def emit(label: str, _index: int) -> None:
        labels.append(label)

    rand = lambda: rng.standard_normal((d, d)).astype(np.float32) * 0.25   # noqa: E731
    for layer in range(layers):
        p = f"L{layer}"
        x = ys[layer - streams] if layer >= streams else b.alloc(f"x{layer}", (d, d), init=rand())
        w = b.alloc(f"w{layer}", (d, d), init=rand())
        mom = b.alloc(f"m{layer}", (d, d), init=rand())
        dy = b.alloc(f"dy{layer}", (d, d), init=rand())
        hp = b.alloc(f"hp{layer}", 8, init=hp_record("sgd", lr=0.1, momentum=0.9, weight_decay=1e-4))
        y = b.alloc(f"y{layer}", (d, d))
        ys.append(y)
        w_out, m_out = b.alloc(f"w_new{layer}", (d, d)), b.alloc(f"m_new{layer}", (d, d))
        vals = b.alloc(f"w_val{layer}", (d, t))
        idx = b.alloc(f"w_idx{layer}", (d, row_bytes(d, 2, 4)), "u8")
        for mi in range(2):
            emit(f"{p}/ff/load_x{mi}", b.load("act", at("act", layer, "x") + mi * t * d * 4,
                                               x.addr + mi * t * d * 4, t, d))
        for ni in range(2):
            emit(f"{p}/ff/load_w{ni}", b.load("wgt", at("wgt", layer, "wt") + ni * d * t * 4,
                                               w.addr + ni * t * 4, d, t, dram_row_stride=d))
        for mi in range(2):
            for ni in range(2):
                o = (mi * t * d + ni * t) * 4
                emit(f"{p}/ff/gemm{mi}{ni}", b.gemm(
                    t, t, d, a_buf="act", a_addr=at("act", layer, "x") + mi * t * d * 4,
                    b_buf="wgt", b_addr=at("wgt", layer, "wt") + ni * d * t * 4,
                    c_addr=at("acc", layer, "y") + o, c_stride=d))
                emit(f"{p}/ff/relu{mi}{ni}", b.vec(
                    "relu", t, t, s0_buf="acc", s0_addr=at("acc", layer, "y") + o, s0_stride=d,
                    d_buf="vec", d_addr=at("vec", layer, "yv") + o, d_stride=d))
                emit(f"{p}/ff/store{mi}{ni}", b.store("vec", at("vec", layer, "yv") + o, y.addr + o,
                                                      t, t, dram_row_stride=d, buf_row_stride=d))
        emit(f"{p}/wu/load_dy", b.load("act", at("act", layer, "dy"), dy.addr, d, d))
        for ki in range(2):
            for ni in range(2):
                emit(f"{p}/wu/gemm{ki}{ni}", b.gemm(
                    t, t, d, a_buf="act", a_addr=at("act", layer, "x") + ki * t * 4, a_stride=d,
                    trans_a=True, b_buf="act", b_addr=at("act", layer, "dy") + ni * t * 4, b_stride=d,
                    c_addr=at("acc", layer, "dw") + (ki * t * d + ni * t) * 4, c_stride=d))
        emit(f"{p}/wu/load_w", b.load("wgt", at("wgt", layer, "w"), w.addr, d, d))
        emit(f"{p}/wu/load_m", b.load("wgt", at("wgt", layer, "m"), mom.addr, d, d))
        emit(f"{p}/wu/load_hp", b.load("vec", at("vec", layer, "hp"), hp.addr, 1, 8))
        emit(f"{p}/wu/sgd", b.wuve("sgd", d * d, w_buf="wgt", w_addr=at("wgt", layer, "w"),
                                   g_buf="acc", g_addr=at("acc", layer, "dw"), m_buf="wgt",
                                   m_addr=at("wgt", layer, "m"), hp_buf="vec",
                                   hp_addr=at("vec", layer, "hp")))
        emit(f"{p}/wu/store_w", b.store("wgt", at("wgt", layer, "w"), w_out.addr, d, d))
        emit(f"{p}/wu/store_m", b.store("wgt", at("wgt", layer, "m"), m_out.addr, d, d))
        emit(f"{p}/wu/prune", b.sore(2, 4, d, d, src_buf="wgt", src_addr=at("wgt", layer, "w"),
                                     val_buf="wgt", val_addr=at("wgt", layer, "val"), idx_buf="wgt",
                                     idx_addr=at("wgt", layer, "idx")))
        emit(f"{p}/wu/store_val", b.store("wgt", at("wgt", layer, "val"), vals.addr, d, t))
        emit(f"{p}/wu/store_idx", b.store("wgt", at("wgt", layer, "idx"), idx.addr, d,
                                          row_bytes(d, 2, 4), dtype="u8"))
    return retoken(b.build()), labels
