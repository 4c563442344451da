"""Ctrl-C during every writing command leaves only whole files: absent, the old or the new version.

Each command runs in a subprocess (its own process group, as under a shell)
over outputs an earlier run left; SIGINT goes to the group at a random
moment after the first temporary file appears (the default cases: the
moment of writing) or anywhere in the run (the slow cases). Afterwards every
output is byte-equal to its old version or to the complete new one (made
in-process beforehand: program files and schedules are deterministic), and
no ``.tmp`` file is left.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from satc.backends.sat.program import Program

from satc.cli import main

CLI = "import sys; from satc.cli import main; sys.exit(main(sys.argv[1:]))"
COMPILE_NEW = ["--sparsity", "bdwp:2:8"]
COUNTS: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def report():
    """Print how the commands ended (interrupted or finished first) after the module."""
    yield
    print("\ninterrupts: " + ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items())))


def _cli(*args: str) -> None:
    assert main([str(a) for a in args]) == 0


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _interrupt(args: list[str], folder: Path, rng: random.Random, anywhere: bool) -> int:
    """Run ``satc ARGS``; SIGINT its group at a random moment: after a temporary file appears in
    ``folder`` (within 0.3 s) or, when ``anywhere``, up to 15 s after the start."""
    before = set(os.listdir(folder))
    proc = subprocess.Popen([sys.executable, "-c", CLI, *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if anywhere:
            time.sleep(rng.uniform(0, 15))
        else:
            while proc.poll() is None and not any(n.endswith(".tmp") for n in set(os.listdir(folder)) - before):
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.3))
        interrupted = proc.poll() is None
        if interrupted:
            os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=120)
        COUNTS[f"{args[0]}: {'interrupted' if interrupted else 'finished first'}, exit {rc}"] += 1
        return rc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)       # any worker the command left behind
        except ProcessLookupError:
            pass


def _check(folder: Path, old: dict[str, bytes], new: dict[str, bytes], same=lambda n, a, b: a == b) -> None:
    """Every file in ``folder`` is its old or its new version; none is partial or temporary."""
    now = _files(folder)
    assert not [n for n in now if n.endswith(".tmp")], f"temporary files left: {sorted(now)}"
    assert set(now) <= set(old) | set(new), sorted(now)
    for name, data in now.items():
        if not any(name in v and same(name, data, v[name]) for v in (old, new)):
            ref = new.get(name, b"").splitlines()
            diff = next((f"line {i}: {a!r} != new {b!r}" for i, (a, b) in
                         enumerate(zip(data.splitlines(), ref)) if a != b), "lengths differ")
            pytest.fail(f"{name} is neither the old nor the new version ({len(data)} bytes; {diff})")
    assert set(old) <= set(now), "an old output was removed"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """The outputs of ``satc compile mlp`` dense (the old ones) and bdwp:2:8 (the new ones)."""
    out = {}
    for key, extra in (("old", []), ("new", COMPILE_NEW)):
        folder = tmp_path_factory.mktemp(f"compile_{key}")
        _cli("compile", "mlp", "--batch", "4", "-o", folder, *extra)
        out[key] = _files(folder)
    return out


def _same_report(name: str, a: bytes, b: bytes) -> bool:
    """Equal, but for the compile time in a report."""
    if not name.endswith(".report.txt"):
        return a == b
    strip = [[ln for ln in x.decode().splitlines() if not ln.startswith("compiled in")] for x in (a, b)]
    return strip[0] == strip[1] and a.endswith(b"\n")


def _compile_case(tmp_path: Path, compiled, seed: int, anywhere: bool) -> None:
    for name, data in compiled["old"].items():
        (tmp_path / name).write_bytes(data)
    _interrupt(["compile", "mlp", "--batch", "4", "-o", str(tmp_path), *COMPILE_NEW], tmp_path,
               random.Random(seed), anywhere)
    _check(tmp_path, compiled["old"], compiled["new"], _same_report)
    Program.load(tmp_path / "mlp.satbin")


@pytest.fixture(scope="module")
def scheduled(compiled, tmp_path_factory) -> tuple[Path, dict[str, bytes], dict[str, bytes]]:
    """A program file, and the outputs of scheduling it in order (old) and by list (new, with a trace)."""
    folder = tmp_path_factory.mktemp("schedule")
    prog = folder / "prog.satbin"
    prog.write_bytes(compiled["new"]["mlp.satbin"])
    refs = []
    for method, extra in (("inorder", []), ("list", ["--trace", "OUT/trace.json"])):
        out = folder / method
        out.mkdir()
        _cli("schedule", prog, "--method", method, "--quiet", "-o", out / "s.satbin",
             *[e.replace("OUT", str(out)) for e in extra])
        refs.append(_files(out))
    return prog, refs[0], refs[1]


def _schedule_case(tmp_path: Path, scheduled, seed: int, anywhere: bool) -> None:
    prog, old, new = scheduled
    (tmp_path / "s.satbin").write_bytes(old["s.satbin"])
    _interrupt(["schedule", str(prog), "--method", "list", "--quiet", "-o", str(tmp_path / "s.satbin"),
                "--trace", str(tmp_path / "trace.json")], tmp_path, random.Random(seed), anywhere)
    _check(tmp_path, old, new)
    if (tmp_path / "trace.json").exists():
        json.loads((tmp_path / "trace.json").read_text())


@pytest.fixture(scope="module")
def checkpoints(compiled, tmp_path_factory) -> tuple[Path, dict[int, bytes]]:
    """A program file and its checkpoints after steps 2 to 6 of ``satc run --data synthetic``."""
    folder = tmp_path_factory.mktemp("run")
    prog = folder / "prog.satbin"
    prog.write_bytes(compiled["new"]["mlp.satbin"])
    refs = {}
    for steps in range(2, 7):
        ckpt = folder / f"ckpt{steps}.satbin"
        if steps > 2:
            shutil.copy(folder / f"ckpt{steps - 1}.satbin", ckpt)
        _cli("run", prog, "--steps", str(steps), "--data", "synthetic", "--checkpoint", ckpt)
        refs[steps] = ckpt.read_bytes()
    return prog, refs


def _run_case(tmp_path: Path, checkpoints, seed: int, anywhere: bool) -> None:
    prog, refs = checkpoints
    ckpt = tmp_path / "ckpt.satbin"
    ckpt.write_bytes(refs[2])
    _interrupt(["run", str(prog), "--steps", "6", "--data", "synthetic", "--checkpoint", str(ckpt)],
               tmp_path, random.Random(seed), anywhere)
    assert os.listdir(tmp_path) == ["ckpt.satbin"], os.listdir(tmp_path)
    assert ckpt.read_bytes() in refs.values(), "the checkpoint is not the one of a whole step"


def test_sigint_during_compile(tmp_path, compiled):
    _compile_case(tmp_path, compiled, 1, anywhere=False)


def test_sigint_during_schedule(tmp_path, scheduled):
    _schedule_case(tmp_path, scheduled, 2, anywhere=False)


def test_sigint_during_run_with_checkpoint(tmp_path, checkpoints):
    _run_case(tmp_path, checkpoints, 3, anywhere=False)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("anywhere", [False, True])
def test_sigint_during_writing_commands_many(tmp_path, compiled, scheduled, checkpoints, seed, anywhere):
    for i, case in enumerate((_compile_case, _schedule_case, _run_case)):
        folder = tmp_path / str(i)
        folder.mkdir()
        case(folder, (compiled, scheduled, checkpoints)[i], 10 * seed + i, anywhere)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2))
def test_sigint_during_sweep(tmp_path, seed):
    """A sweep keeps the rows finished before Ctrl-C: its CSV and PNG are whole files."""
    _interrupt(["sweep", "mlp", "--batch", "4", "--arrays", "4,8", "--sparsities", "bdwp:2:8",
                "--no-cache", "--quiet", "--workers", "1", "-o", str(tmp_path)], tmp_path,
               random.Random(seed), anywhere=True)
    names = sorted(os.listdir(tmp_path))
    assert set(names) <= {"sweep-mlp.csv", "sweep-mlp.png"}, names
    if "sweep-mlp.csv" in names:
        rows = list(csv.reader((tmp_path / "sweep-mlp.csv").open()))
        assert rows and rows[0][-2:] == ["pareto_energy", "pareto_memory"]
        assert all(len(r) == len(rows[0]) for r in rows)
    if "sweep-mlp.png" in names:
        png = (tmp_path / "sweep-mlp.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and png.endswith(b"IEND\xaeB`\x82")
