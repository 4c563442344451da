"""Lowerings of the optimizer op family (``ir/ops/optim.py``) on the WUVE.

* ``sgd`` -- WUVE ``sgd`` over contiguous chunks of the fp32 master weight,
  its gradient and momentum, in place (the state's DRAM storage), with the
  hyper-parameters from an 8-word record in DRAM.
* ``adamw`` (PyTorch semantics: decoupled weight decay, bias-corrected
  moments) -- updates the fp32 master weight and both moments in place,
  chunk by chunk, with the WUVE ``adamw`` rule. Its 8-word hyper-parameter
  record ``[lr, beta1, beta2, eps, weight_decay, 1-beta1^t, 1-beta2^t, 0]``
  starts as a DRAM constant with zero bias corrections; the vector unit
  fills them in on chip from the step counter state ``t`` (``1 - exp(t * ln
  beta)``), so the same program serves every step: the counter is data, not code.
"""

from __future__ import annotations

import math

import numpy as np
from satc.backends.sat.codegen.lowering import MAX_ROWS, LowerCtx, chunks, lowering
from satc.backends.sat.codegen.memory import Dense, TapMajor
from satc.backends.sat.wuve import HP_BYTES, HP_FIELDS, hp_record
from satc.ir.graph import Node


def _flat(ctx: LowerCtx, v) -> tuple[int, int, str]:
    """(addr, numel, element order) of a contiguous tensor."""
    s = ctx.dense(v)
    if isinstance(s, Dense) and s.padded:
        raise ctx.fail(f"%{v.name} is padded", "optimizer operands must be contiguous")
    order = "taps" if isinstance(s, TapMajor) else "logical"
    return s.regions[0].addr, int(np.prod(v.shape)), order


def load_hp_record(ctx: LowerCtx, func: str, **hyper: float) -> int:
    """Load the WUVE hyper-parameter record of ``func`` (one read-only region per distinct
    record) into the vec buffer; returns its buffer address."""
    hp = hp_record(func, **hyper)
    key = "/".join(f"{k}={v!r}" for k, v in hyper.items())
    region = ctx.const(f"hp/{func}/{key}", hp)
    addr = ctx.alloc("vec", HP_BYTES, "hyper-parameters")
    ctx.b.load("vec", addr, region.addr, 1, hp.size)
    return addr


def wuve_chunks(ctx: LowerCtx, numel: int, wgt_roles: tuple[str, ...]
                ) -> tuple[int, list[tuple[int, ...]]]:
    """(chunk length, per-slot tiles) for a WUVE update of ``numel`` fp32 weights: each slot
    holds one ``wgt`` tile per role (weights, momentum, ...) and the gradient in ``vec``;
    two slots (double buffering) unless one chunk covers every weight."""
    k = len(wgt_roles)
    per = min(MAX_ROWS, (ctx.arena.free_bytes("wgt") - 2 * k * 64) // (2 * k * 4),
              (ctx.arena.free_bytes("vec") - 2 * 64) // 8)
    step, slots = (numel, 1) if per >= numel else (per, 2)
    if step < 1:
        raise ctx.fail("no room for a WUVE chunk", "raise wgt_buffer_bytes and vec_buffer_bytes")
    tiles = [tuple(ctx.alloc("wgt", step * 4, role) for role in wgt_roles)
             + (ctx.alloc("vec", step * 4, "gradient"),) for _ in range(slots)]
    return step, tiles


@lowering("sgd")
def lower_sgd(ctx: LowerCtx, node: Node) -> None:
    """SGD with momentum and weight decay on the WUVE, chunk by chunk, in place."""
    a = node.attrs
    if a.get("dampening", 0) != 0 or a.get("nesterov", False):
        raise ctx.fail("SGD with dampening or nesterov", "the WUVE implements plain momentum SGD; "
                       "use dampening=0 and nesterov=False")
    w, g = node.inputs[:2]
    mom = node.inputs[2] if len(node.inputs) == 3 else None
    views = [_flat(ctx, v) for v in (w, g) + ((mom,) if mom is not None else ())]
    outs = [_flat(ctx, v) for v in node.outputs]
    if len({(n, o) for _, n, o in views + outs}) != 1:
        raise ctx.fail("SGD operands differ in size or layout", "check the memory plan")
    numel = views[0][1]
    haddr = load_hp_record(ctx, "sgd", lr=a["lr"], momentum=a["momentum"],
                           weight_decay=a["weight_decay"])
    step, tiles = wuve_chunks(ctx, numel, ("weights", "momentum"))
    for i, (e0, e1) in enumerate(chunks(numel, step)):
        tw, tm, tg = tiles[i % len(tiles)]
        n = e1 - e0
        ctx.b.load("wgt", tw, views[0][0] + e0 * 4, 1, n)
        ctx.b.load("vec", tg, views[1][0] + e0 * 4, 1, n)
        if mom is not None:
            ctx.b.load("wgt", tm, views[2][0] + e0 * 4, 1, n)
        else:   # momentum 0: m = 0*m + g', any finite scratch will do; use the gradient
            ctx.b.vec("copy", 1, n, s0_addr=tg, d_buf="wgt", d_addr=tm)
        ctx.b.wuve("sgd", n, w_buf="wgt", w_addr=tw, g_buf="vec", g_addr=tg, m_buf="wgt",
                   m_addr=tm, hp_buf="vec", hp_addr=haddr)
        ctx.b.store("wgt", tw, outs[0][0] + e0 * 4, 1, n)
        if mom is not None:
            ctx.b.store("wgt", tm, outs[1][0] + e0 * 4, 1, n)


BC1 = HP_FIELDS["adamw"].index("bias_correction1")
BC2 = HP_FIELDS["adamw"].index("bias_correction2")


def _bias_corrections(ctx: LowerCtx, node: Node, haddr: int) -> None:
    """Write 1 - beta1^t and 1 - beta2^t into the record at ``haddr`` from the step state."""
    step = node.inputs[4]
    saddr, numel, _ = _flat(ctx, step)
    if numel != 1:
        raise ctx.fail(f"the AdamW step counter %{step.name} has {numel} elements",
                       "build the graph with satc.AdamW (one scalar step counter)")
    t = ctx.alloc("vec", 4, "step counter")
    ctx.b.load("vec", t, saddr, 1, 1)
    for word, beta in ((BC1, node.attrs["beta1"]), (BC2, node.attrs["beta2"])):
        if not 0.0 < beta < 1.0:
            raise ctx.fail(f"AdamW beta {beta}", "betas must lie in (0, 1)")
        d = haddr + word * 4
        ctx.b.vec("mul_imm", 1, 1, s0_addr=t, d_addr=d, imm=math.log(beta))
        ctx.b.vec("exp", 1, 1, s0_addr=d, d_addr=d)
        ctx.b.vec("mul_imm", 1, 1, s0_addr=d, d_addr=d, imm=-1.0)
        ctx.b.vec("add_imm", 1, 1, s0_addr=d, d_addr=d, imm=1.0)


@lowering("adamw")
def lower_adamw(ctx: LowerCtx, node: Node) -> None:
    """AdamW on the WUVE, chunk by chunk, in place; bias corrections computed on chip."""
    a = node.attrs
    w, g, m, v = node.inputs[:4]
    views = [_flat(ctx, x) for x in (w, g, m, v)]
    outs = [_flat(ctx, x) for x in node.outputs]
    if len({(n, o) for _, n, o in views + outs}) != 1:
        raise ctx.fail("AdamW operands differ in size or layout", "check the memory plan")
    if [o[0] for o in outs] != [views[0][0], views[2][0], views[3][0]]:
        raise ctx.fail("AdamW outputs are not the weight and moment states",
                       "the WUVE updates in place; the planner aliases state updates")
    numel = views[0][1]
    haddr = load_hp_record(ctx, "adamw", lr=a["lr"], beta1=a["beta1"], beta2=a["beta2"],
                           eps=a["eps"], weight_decay=a["weight_decay"], bias_correction1=0.0,
                           bias_correction2=0.0)
    _bias_corrections(ctx, node, haddr)
    step, tiles = wuve_chunks(ctx, numel, ("weights", "first moment", "second moment"))
    for i, (e0, e1) in enumerate(chunks(numel, step)):
        tw, tm, tv, tg = tiles[i % len(tiles)]
        n = e1 - e0
        for buf, tile, (addr, _, _) in (("wgt", tw, views[0]), ("vec", tg, views[1]),
                                        ("wgt", tm, views[2]), ("wgt", tv, views[3])):
            ctx.b.load(buf, tile, addr + e0 * 4, 1, n)
        ctx.b.wuve("adamw", n, w_buf="wgt", w_addr=tw, g_buf="vec", g_addr=tg, m_buf="wgt",
                   m_addr=tm, v_buf="wgt", v_addr=tv, hp_buf="vec", hp_addr=haddr)
        for tile, (addr, _, _) in zip((tw, tm, tv), outs):
            ctx.b.store("wgt", tile, addr + e0 * 4, 1, n)
