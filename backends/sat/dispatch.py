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

from typing import Sequence

from satc.backends.sat.isa import ENGINE_NUMBER, ENGINES, MASK_ENGINES, Instruction
from satc.errors import EmulatorError


def issue_order(instrs: Sequence[Instruction]) -> list[int]:
    """Program indices in a dependency-respecting execution order.

    Raises EmulatorError naming the instruction that can never start when the
    tokens deadlock (a wait that no remaining instruction will satisfy).
    """
    n, ne = len(instrs), len(ENGINES)
    engine = [ENGINE_NUMBER[ins.engine] for ins in instrs]
    waits = [MASK_ENGINES[ins.raw["wait"]] for ins in instrs]
    signals = [MASK_ENGINES[ins.raw["signal"]] for ins in instrs]
    queues: list[list[int]] = [[] for _ in ENGINES]
    for i, e in enumerate(engine):
        queues[e].append(i)
    for q in queues:
        q.append(n)                               # past the end: never the lowest ready head
    heads = [0] * ne
    tokens = [[0] * ne for _ in ENGINES]          # tokens[src][dst]: in the FIFO src -> dst
    order: list[int] = []
    while len(order) < n:
        best = n
        for e, q in enumerate(queues):
            i = q[heads[e]]
            if i < best and (not waits[i] or all(tokens[s][e] for s in waits[i])):
                best = i
        if best == n:
            raise EmulatorError(_deadlock_message(queues, heads, engine, waits, tokens))
        e = engine[best]
        for s in waits[best]:
            tokens[s][e] -= 1
        for d in signals[best]:
            tokens[e][d] += 1
        heads[e] += 1
        order.append(best)
    return order


def _deadlock_message(queues, heads, engine, waits, tokens) -> str:
    stuck = sorted(q[heads[e]] for e, q in enumerate(queues) if q[heads[e]] < len(engine))
    first = stuck[0]
    e = engine[first]
    missing = [ENGINES[s] for s in waits[first] if tokens[s][e] == 0]
    others = ", ".join(f"instruction {i} ({ENGINES[engine[i]]})" for i in stuck[1:]) or "none"
    return (f"instruction {first}: deadlock: the {ENGINES[e]} queue waits for a token from "
            f"{'/'.join(missing)} that no instruction can still push (other blocked queue heads: "
            f"{others}); add the matching signal or remove the wait")
