"""The same model and options give byte-identical program files and schedules in fresh
processes, whatever PYTHONHASHSEED is."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import hashlib, satc
    from satc.passes.schedule import emit_program
    prog = satc.compile("cnn", input_shapes={"x": (4, 1, 8, 8)}, sparsity="bdwp:2:8")
    sched = prog.schedule("list")
    print(hashlib.sha256(prog.program.to_bytes()).hexdigest())
    print(hashlib.sha256(emit_program(sched).to_bytes()).hexdigest())
    print(sched.makespan, hashlib.sha256(sched.starts.tobytes()).hexdigest())
""")


def _digests(seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")


def test_program_and_schedule_bytes_do_not_depend_on_the_hash_seed():
    first = _digests("0")
    assert len(first[0]) == 64
    assert _digests("4242") == first


@pytest.mark.slow
@pytest.mark.parametrize("seed", ["1", "random"])
def test_more_hash_seeds(seed):
    assert _digests(seed) == _digests("0")
