"""SHA-256 of compiled zoo programs: the check that a refactor leaves every program byte-identical.

For each ``model:batch:sparsity[:optimizer]`` row it compiles the training step on
``sat-vcu1525`` and prints the hash of the program file without its tool notes (header,
instructions and DRAM image; the I/O manifest and labels are left out) and of the
instruction stream alone. Run it before and after a change
and diff the two outputs.

Usage: ``.venv/bin/python bench/program_hashes.py [--rows mlp:16:dense,cnn:16:bdwp:2:8:adamw]``
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import tempfile
from pathlib import Path

from satc.backends.sat.isa import encode_all
from satc.models import ZOO

import satc

DEFAULT_ROWS = ",".join(
    f"{m}:{b}:{s}" for m, b in (("mlp", 16), ("cnn", 16), ("resnet18_cifar", 32), ("vgg16_bn", 8),
                                ("vit_tiny", 8), ("resnet50", 2))
    for s in ("dense", "bdwp:2:8")) + ",cnn:16:ff:2:8,cnn:16:bdwp:2:8:adamw"


def parse_row(row: str) -> tuple[str, int, str, str]:
    """``model:batch:sparsity[:optimizer]`` -> (model, batch, sparsity, optimizer)."""
    model, batch, *rest = row.split(":")
    optimizer = rest.pop() if rest[-1] in ("sgd", "adamw") else "sgd"
    return model, int(batch), ":".join(rest), optimizer


def program_hashes(model: str, batch: int, sparsity: str, optimizer: str) -> tuple[str, str, int]:
    """(file hash, instruction-stream hash, instruction count) of one compiled step."""
    opt = (satc.AdamW(lr=1e-3) if optimizer == "adamw"
           else satc.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4))
    prog = satc.compile(model, input_shapes={"x": (batch, *ZOO[model].input_shape)},
                        sparsity=sparsity, optimizer=opt)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.satbin"
        dataclasses.replace(prog.program, meta={}).save(path)
        file_hash = hashlib.sha256(path.read_bytes()).hexdigest()
    stream = encode_all(prog.program.instructions)
    return file_hash, hashlib.sha256(stream).hexdigest(), len(prog.program.instructions)


def main() -> None:
    """Print one line per row: hashes and instruction count."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=DEFAULT_ROWS)
    args = ap.parse_args()
    for row in args.rows.split(","):
        f, s, n = program_hashes(*parse_row(row))
        print(f"{row:<32} file {f[:16]}  stream {s[:16]}  {n:>7} instrs", flush=True)


if __name__ == "__main__":
    main()
