"""Checkpoint and resume of training on a program file (what ``satc run`` calls).

A checkpoint is a program file: the program with the training state after
step k in its state regions and, in ``meta``, the step count and a
fingerprint of the program it came from. :func:`train` writes it
atomically (:mod:`satc.atomic`) after every ``every`` steps, so Ctrl-C or a
crash leaves the last whole checkpoint; :func:`open_run` resumes from it
(from step k, with the state of step k) when it exists and belongs to the
same program, and refuses one of another program.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from satc.backends.sat.isa import encode_all
from satc.backends.sat.program import Program
from satc.errors import ProgramFileError
from satc.runtime.session import Session

CHECKPOINT_KEY = "satc_checkpoint"
Batch = tuple[np.ndarray, np.ndarray]


def fingerprint(program: Program) -> str:
    """SHA-256 of what a checkpoint must share with its program: instructions, DRAM layout, config."""
    layout = json.dumps({"config": program.config.to_dict(), "dram_size": program.dram_size,
                         "regions": [[r.name, r.addr, list(r.shape), r.dtype] for r in program.regions]},
                        sort_keys=True)
    return hashlib.sha256(encode_all(program.instructions) + layout.encode()).hexdigest()


def save_checkpoint(session: Session, path: str | Path, step: int) -> None:
    """Atomically write ``session``'s program with its current state as the checkpoint after
    ``step`` steps."""
    prog = session.program_with_state()
    meta = {**prog.meta, CHECKPOINT_KEY: {"step": step}}
    prog.with_contents(meta=meta).save(path)


def open_run(program: str | Path, checkpoint: str | Path | None = None) -> tuple[Session, int]:
    """(session, first step) to train ``program`` from: the checkpoint's state and step when
    ``checkpoint`` exists, else the program file's state and step 0."""
    base = Program.load(program)
    if checkpoint is None or not Path(checkpoint).exists():
        return Session.from_program(base), 0
    ckpt = Program.load(checkpoint)
    info = ckpt.meta.get(CHECKPOINT_KEY)
    if not isinstance(info, dict) or fingerprint(ckpt) != fingerprint(base):
        raise ProgramFileError(f"checkpoint {checkpoint} is not a checkpoint of {program} (another "
                               "program, or not a checkpoint); fix: delete it to start over, or "
                               "pass the program it was written for")
    step = info.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ProgramFileError(f"checkpoint {checkpoint}: step {step!r} is not a count of steps; "
                               "fix: delete it to start over")
    return Session.from_program(ckpt), step


def train(session: Session, stream: Iterator[Batch], start: int, stop: int, *,
          checkpoint: str | Path | None = None, every: int = 1,
          on_step: Callable[[int, float, float], None] | None = None) -> list[float]:
    """Run steps ``start .. stop-1`` on ``session``, the batches from ``stream`` (whose first
    ``start`` batches are skipped, so a resumed run sees the same data); the losses.

    With ``checkpoint``, the state after every ``every`` steps (and after the last) is saved
    there. ``on_step(step, loss, seconds)`` reports each step.
    """
    if every < 1:
        raise ValueError(f"checkpoint every {every} steps: use every >= 1")
    for _ in range(start):
        next(stream)
    losses = []
    for step in range(start, stop):
        xb, yb = next(stream)
        t = time.perf_counter()
        loss = session.step(xb, yb, outputs=()).loss
        losses.append(loss)
        if checkpoint is not None and ((step + 1 - start) % every == 0 or step + 1 == stop):
            save_checkpoint(session, checkpoint, step + 1)
        if on_step is not None:
            on_step(step, loss, time.perf_counter() - t)
    return losses
