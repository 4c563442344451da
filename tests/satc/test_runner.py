"""Program files with an I/O manifest: the runner trains from the file alone, like prog.step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import satc
from satc.backends.sat import Program
from satc.data import batches, digits
from satc.errors import ProgramFileError, ShapeError
from satc.models import get_model
from satc.runner import ProgramRunner, with_manifest


def test_runner_from_file_equals_compiled_step(tmp_path):
    torch.manual_seed(0)
    x_tr, y_tr, _, _ = digits()
    it = batches(x_tr, y_tr, 8, seed=0)
    data = [next(it) for _ in range(3)]
    prog = satc.compile(get_model("cnn"), example_inputs=(torch.from_numpy(data[0][0]),),
                        sparsity="bdwp:2:8", hw="sat-small", optimizer=satc.SGD(lr=0.05, momentum=0.9))
    path = tmp_path / "cnn.satbin"
    with_manifest(prog).save(path)
    runner = ProgramRunner.load(path)
    from_file = [runner.step(x, y) for x, y in data]
    compiled = [prog.step(x, y).loss for x, y in data]
    assert from_file == compiled
    assert len(runner.labels) == len(runner.program.instructions)
    assert runner.labels[0].endswith("/FF/conv2d")
    with pytest.raises(ShapeError, match="compiled for"):
        runner.step(np.zeros((3, 1, 8, 8), np.float32), np.zeros(3, np.int64))


def test_runner_needs_a_manifest():
    prog = satc.compile("mlp", input_shapes={"x": [2, 1, 8, 8]}, hw="sat-small")
    with pytest.raises(ProgramFileError, match="no satc I/O manifest"):
        ProgramRunner(prog.program)
    blob = with_manifest(prog).to_bytes()
    assert Program.from_bytes(blob).meta["satc"]["input_order"] == ["x", "y"]


def test_prog_schedule_and_save_carry_the_manifest(tmp_path):
    prog = satc.compile("mlp", input_shapes={"x": [4, 1, 8, 8]}, hw="sat-small", sparsity="bdwp:2:8")
    result = prog.schedule("list")
    result.check()
    assert result.makespan <= prog.timing.total_cycles
    assert any("/WU/" in t.label for t in result.graph.tasks)
    prog.save(tmp_path / "p.satbin")
    assert ProgramRunner.load(tmp_path / "p.satbin").labels == result.graph.program.meta["satc"]["labels"]
