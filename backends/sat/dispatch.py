"""Dependency-token dispatch shared by the emulator and the cycle model.

Instructions go, in program order, to one in-order queue per engine. Every
ordered engine pair (src, dst) has a token FIFO: an instruction may start
once, for each engine in its ``wait`` mask, the FIFO ``src -> self`` holds a
token; it pops them, runs, and pushes one token into ``self -> dst`` for
each engine in ``signal``. The order in which engines are simulated does not
change which token an instruction pops (pushes on one FIFO happen in the
pushing engine's program order), so one deterministic issue order -- the
ready queue head with the lowest program index first -- serves both the
functional emulator and the timing model.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from satc.backends.sat.isa import ENGINES, Instruction
from satc.errors import EmulatorError


def issue_order(instrs: Sequence[Instruction]) -> list[int]:
    """Program indices in a dependency-respecting execution order.

    Raises EmulatorError naming the instruction that can never start when the
    tokens deadlock (a wait that no remaining instruction will satisfy).
    """
    queues: dict[str, list[int]] = {e: [] for e in ENGINES}
    meta = []
    for i, ins in enumerate(instrs):
        queues[ins.engine].append(i)
        meta.append((ins.engine, ins.wait, ins.signal))
    heads = {e: 0 for e in ENGINES}
    tokens: Counter[tuple[str, str]] = Counter()
    order: list[int] = []
    while len(order) < len(instrs):
        best = None
        for e in ENGINES:
            q, h = queues[e], heads[e]
            if h < len(q) and (best is None or q[h] < best):
                eng, wait, _ = meta[q[h]]
                if all(tokens[(s, eng)] > 0 for s in wait):
                    best = q[h]
        if best is None:
            raise EmulatorError(_deadlock_message(queues, heads, meta, tokens))
        eng, wait, signal = meta[best]
        for s in wait:
            tokens[(s, eng)] -= 1
        for d in signal:
            tokens[(eng, d)] += 1
        heads[eng] += 1
        order.append(best)
    return order


def _deadlock_message(queues, heads, meta, tokens) -> str:
    stuck = sorted(queues[e][heads[e]] for e in ENGINES if heads[e] < len(queues[e]))
    first = stuck[0]
    eng, wait, _ = meta[first]
    missing = [s for s in wait if tokens[(s, eng)] == 0]
    others = ", ".join(f"instruction {i} ({meta[i][0]})" for i in stuck[1:]) or "none"
    return (f"instruction {first}: deadlock: the {eng} queue waits for a token from "
            f"{'/'.join(missing)} that no instruction can still push (other blocked queue heads: "
            f"{others}); add the matching signal or remove the wait")
