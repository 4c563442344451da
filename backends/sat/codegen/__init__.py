"""Code generation for SAT: a tiled training graph in, a SAT Program out.

Pipeline (:func:`generate`): plan DRAM (:mod:`.plan`, storages in
:mod:`.memory`), lower every node through the lowering table
(:data:`.lowering.LOWERINGS`; entries in :mod:`.gemm`, :mod:`.vector`,
:mod:`.norm`, :mod:`.pool`, :mod:`.update`, :mod:`.transformer`, :mod:`.adamw`), then derive
the dependency tokens from memory hazards (:mod:`.tokens`). Consumes IR and a HardwareConfig only; never imports a
frontend. The graph must have been through ``satc.passes.tiling.tile_gemms``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.codegen import (  # noqa: F401  (register lowerings)
    adamw, gemm, norm, pool, transformer, update, vector)
from satc.backends.sat.codegen.lowering import LOWERINGS, LowerCtx
from satc.backends.sat.codegen.plan import MemoryPlan, plan_memory, zero_halos
from satc.backends.sat.codegen.tokens import insert_tokens
from satc.backends.sat.config import HardwareConfig
from satc.backends.sat.program import Program
from satc.ir.graph import Graph, Node


@dataclass(frozen=True)
class NodeSpan:
    """The instructions ``[start, end)`` one IR node lowered to."""

    node: Node
    start: int
    end: int


@dataclass
class Codegen:
    """What :func:`generate` returns: the program, its memory plan and node spans."""

    program: Program
    plan: MemoryPlan
    spans: list[NodeSpan]


def generate(graph: Graph, cfg: HardwareConfig,
             state: Mapping[str, np.ndarray] | None = None) -> Codegen:
    """Lower a tiled training graph to a SAT program whose DRAM starts from ``state``."""
    b = ProgramBuilder(cfg)
    plan = plan_memory(graph, b, dict(state) if state is not None else graph.initial_state())
    ctx = LowerCtx(cfg, b, plan.storage, interleave=graph.meta.get("interleave", True))
    ctx.graph_constants = {k: graph.initializers[k] for k in graph.constants}
    spans = []
    updates = {id(n) for n in graph.weight_update_nodes()}   # own buffer slice (partition.py)
    for i, node in enumerate(graph.nodes):
        start = len(b.instructions)
        if i in plan.halos:
            ctx.begin(node, i, id(node) in updates)
            zero_halos(ctx, plan.halos[i])
        ctx.begin(node, i, id(node) in updates)
        LOWERINGS[node.op].emit(ctx, node)
        spans.append(NodeSpan(node, start, len(b.instructions)))
    raw = b.build()
    sizes = {"dram": raw.dram_size, **cfg.buffer_bytes}
    program = Program(cfg, tuple(insert_tokens(raw.instructions, sizes)), raw.regions,
                      raw.dram_size)
    return Codegen(program, plan, spans)


__all__ = ["generate", "Codegen", "NodeSpan", "MemoryPlan", "LOWERINGS"]
