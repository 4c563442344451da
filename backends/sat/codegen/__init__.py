"""Code generation for SAT: a tiled training graph in, a SAT Program out.

Pipeline (:func:`generate`): plan the GEMM tiles (:mod:`.tiling`) and DRAM
(:mod:`.plan`, storages in :mod:`.memory`; on-chip buffer windows in
:mod:`.partition`), lower every node through the lowering table
(:data:`.lowering.LOWERINGS`; one module per IR op family: :mod:`.conv`,
:mod:`.tensor`, :mod:`.norm`, :mod:`.pool`, :mod:`.loss`, :mod:`.optim`, :mod:`.sparse`), then derive
the dependency tokens from memory hazards (:mod:`.tokens`). Consumes IR and a HardwareConfig only; never imports a
frontend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from satc.backends.sat.builder import ProgramBuilder
from satc.backends.sat.codegen import conv, loss, norm, optim, pool, sparse, tensor  # noqa: F401  (register lowerings)
from satc.backends.sat.codegen.lowering import LOWERINGS, LowerCtx
from satc.backends.sat.codegen.norm import conv_stats_values
from satc.backends.sat.codegen.plan import MemoryPlan, plan_memory
from satc.backends.sat.codegen.tiling import TilePlan, plan_tiles
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
    """What :func:`generate` returns: the program, its memory and tile plans and node spans."""

    program: Program
    plan: MemoryPlan
    tiles: TilePlan
    spans: list[NodeSpan]


def generate(graph: Graph, cfg: HardwareConfig, state: Mapping[str, np.ndarray] | None = None,
             interleave: bool = True, tiles: TilePlan | None = None) -> Codegen:
    """Lower a training graph to a SAT program whose DRAM starts from ``state``.

    ``interleave=False``: no interleave mapping (an ablation); ``tiles``: a tile plan
    made beforehand by :func:`~.tiling.plan_tiles` (made here when None)."""
    if tiles is None:
        tiles = plan_tiles(graph, cfg, interleave)
    b = ProgramBuilder(cfg)
    conv_stats = conv_stats_values(graph, tiles)
    plan = plan_memory(graph, b, dict(state) if state is not None else graph.initial_state(),
                       conv_stats)
    ctx = LowerCtx(cfg, b, plan.storage, tiles, interleave)
    ctx.conv_stats = conv_stats
    ctx.graph_constants = {k: graph.initializers[k] for k in graph.constants}
    spans = []
    updates = {id(n) for n in graph.weight_update_nodes()}   # own buffer slice (partition.py)
    for i, node in enumerate(graph.nodes):
        start = len(b.instructions)
        ctx.begin(node, i, id(node) in updates)
        LOWERINGS[node.op].emit(ctx, node)
        spans.append(NodeSpan(node, start, len(b.instructions)))
    raw = b.build()
    sizes = {"dram": raw.dram_size, **cfg.buffer_bytes}
    program = Program(cfg, tuple(insert_tokens(raw.instructions, sizes)), raw.regions,
                      raw.dram_size)
    return Codegen(program, plan, tiles, spans)


__all__ = ["generate", "Codegen", "NodeSpan", "MemoryPlan", "TilePlan", "plan_tiles", "LOWERINGS"]
