"""AdamW on the WUVE (PyTorch semantics: decoupled weight decay, bias-corrected moments).

``adamw(w, g, exp_avg, exp_avg_sq, step)`` updates the fp32 master weight
and both moments in place (their state storages), chunk by chunk, with the
WUVE ``adamw`` rule. Its 8-word hyper-parameter record
``[lr, beta1, beta2, eps, weight_decay, 1-beta1^t, 1-beta2^t, 0]`` starts
as a DRAM constant with zero bias corrections; the vector unit fills them
in on chip from the step counter state ``t`` (``1 - exp(t * ln beta)``), so
the same program serves every step: the counter is data, not code.
"""

from __future__ import annotations

import math

from satc.backends.sat.codegen.lowering import LowerCtx, chunks, lowering
from satc.backends.sat.codegen.update import _flat, load_hp_record, wuve_chunks
from satc.backends.sat.wuve import HP_FIELDS
from satc.ir.graph import Node

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
