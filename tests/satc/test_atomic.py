"""Atomic writes (an interrupted write leaves the old file or the whole new one) and
checkpoint / resume of training on a program file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import satc
from satc.atomic import atomic_write, write_bytes, write_text
from satc.data import batches
from satc.errors import ProgramFileError, SatcError
from satc.runtime import open_run, train


def test_write_replaces_whole_and_cleans_up(tmp_path):
    p = tmp_path / "out.txt"
    write_text(p, "old")
    with pytest.raises(RuntimeError), atomic_write(p, "w") as f:
        f.write("half")
        raise RuntimeError("crash mid-write")
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
    write_bytes(p, b"new")
    assert p.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.txt"]
    with pytest.raises(SatcError, match="folder .* does not exist"):
        write_text(tmp_path / "missing" / "x.txt", "")


WRITER = textwrap.dedent("""
    import sys
    from satc.atomic import write_bytes
    path = sys.argv[1]
    k = 0
    print("ready", flush=True)
    while True:
        write_bytes(path, bytes([k % 256]) * (8 << 20))
        k += 1
""")


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.45])
def test_sigint_during_writes_leaves_only_whole_files(tmp_path, delay):
    target = tmp_path / "big.bin"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode != 0                                      # it was interrupted
    assert os.listdir(tmp_path) in ([], ["big.bin"])                 # no temporary file left
    if target.exists():
        data = target.read_bytes()
        assert len(data) == 8 << 20 and data == data[:1] * len(data)  # one whole version


# ---------------------------------------------------------------- checkpoint / resume

@pytest.fixture(scope="module")
def program_file(tmp_path_factory):
    """An mlp program file (batch 8) and a synthetic data set for it."""
    path = tmp_path_factory.mktemp("prog") / "mlp.satbin"
    satc.compile("mlp", input_shapes={"x": (8, 64)}, sparsity="bdwp:2:8").save(path)
    return path


def _stream():
    rng = np.random.default_rng(0)
    return batches(rng.standard_normal((40, 64)).astype(np.float32), rng.integers(0, 10, 40), 8, seed=0)


def _state(session):
    return {k: np.array(v) for k, v in session.state.items()}


def test_resume_continues_from_the_checkpoint(program_file, tmp_path):
    session, start = open_run(program_file)
    full = train(session, _stream(), start, 4)
    want = _state(session)
    ckpt = tmp_path / "run.ckpt"
    session, start = open_run(program_file, ckpt)
    assert start == 0
    assert train(session, _stream(), 0, 2, checkpoint=ckpt) == full[:2]
    session, start = open_run(program_file, ckpt)
    assert start == 2
    assert train(session, _stream(), start, 4, checkpoint=ckpt) == full[2:]
    for k, v in _state(session).items():
        np.testing.assert_array_equal(v, want[k])


RUNNER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from satc.data import batches
    from satc.runtime import open_run, train
    prog, ckpt, stop_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(0)
    stream = batches(rng.standard_normal((40, 64)).astype(np.float32), rng.integers(0, 10, 40), 8, seed=0)
    session, start = open_run(prog, ckpt)
    def on_step(step, loss, seconds):
        print(step, repr(loss), flush=True)
        if step + 1 == stop_after:
            os.kill(os.getpid(), signal.SIGINT)
    train(session, stream, start, 5, checkpoint=ckpt, on_step=on_step)
""")


def test_sigint_then_resume_loses_nothing(program_file, tmp_path):
    session, _ = open_run(program_file)
    full = train(session, _stream(), 0, 5)
    ckpt = tmp_path / "run.ckpt"
    out = subprocess.run([sys.executable, "-c", RUNNER, str(program_file), str(ckpt), "3"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "KeyboardInterrupt" in out.stderr
    assert [float(line.split()[1]) for line in out.stdout.split("\n") if line] == full[:3]
    out = subprocess.run([sys.executable, "-c", RUNNER, str(program_file), str(ckpt), "0"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert [int(line.split()[0]) for line in out.stdout.split("\n") if line] == [3, 4]
    assert [float(line.split()[1]) for line in out.stdout.split("\n") if line] == full[3:]
    assert sorted(os.listdir(tmp_path)) == ["run.ckpt"]


def test_a_checkpoint_of_another_program_is_refused(program_file, tmp_path):
    other = tmp_path / "cnn.satbin"
    satc.compile("cnn", input_shapes={"x": (4, 1, 8, 8)}).save(other)
    with pytest.raises(ProgramFileError, match="is not a checkpoint of"):
        open_run(program_file, other)
