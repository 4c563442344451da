"""Program files with an I/O manifest: a runtime session trains from the file alone, like prog.step."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import satc
from satc.backends.sat import Program
from satc.backends.sat.codegen.memory import STORAGE_KINDS, storage_from_json
from satc.data import batches, digits
from satc.errors import ProgramFileError, ShapeError
from satc.models import get_model
from satc.runtime import MANIFEST_KEY, MANIFEST_VERSION, Manifest, Session


@pytest.fixture(scope="module")
def mlp():
    return satc.compile("mlp", input_shapes={"x": [2, 1, 8, 8]}, hw="sat-small", sparsity="bdwp:2:8")


def test_session_from_file_equals_compiled_step(tmp_path):
    torch.manual_seed(0)
    x_tr, y_tr, _, _ = digits()
    it = batches(x_tr, y_tr, 8, seed=0)
    data = [next(it) for _ in range(3)]
    prog = satc.compile(get_model("cnn"), example_inputs=(torch.from_numpy(data[0][0]),),
                        sparsity="bdwp:2:8", hw="sat-small", optimizer=satc.SGD(lr=0.05, momentum=0.9))
    path = tmp_path / "cnn.satbin"
    prog.save(path)
    session = Session.load(path)
    from_file = [session.step(x, y).loss for x, y in data]
    compiled = [prog.step(x, y).loss for x, y in data]
    assert from_file == compiled
    labels = session.manifest.labels
    assert len(labels) == len(session.program.instructions)
    assert labels[0].endswith("/FF/conv2d")
    for k in prog.state:                               # the file's state followed the same steps
        np.testing.assert_array_equal(session.state[k], prog.state[k], err_msg=k)


def test_same_wrong_shape_same_error_from_prog_and_file(mlp, tmp_path):
    mlp.save(tmp_path / "p.satbin")
    session = Session.load(tmp_path / "p.satbin")
    bad = (np.zeros((3, 1, 8, 8), np.float32), np.zeros(3, np.int64))
    errors = []
    for step in (mlp.step, session.step):
        with pytest.raises(ShapeError) as e:
            step(*bad)
        errors.append(str(e.value))
    assert errors[0] == errors[1]
    assert "'x'" in errors[0] and "(3, 1, 8, 8)" in errors[0] and "(2, 1, 8, 8)" in errors[0]
    assert "fix:" in errors[0]
    with pytest.raises(ShapeError, match="missing \\['y'\\]"):
        mlp.step({"x": np.zeros((2, 1, 8, 8), np.float32)})
    with pytest.raises(ShapeError, match="2 \\(x, y\\)"):
        session.step(bad[0])


def test_step_by_name_equals_positional(mlp):
    x, y = np.ones((2, 1, 8, 8), np.float32), np.array([1, 2])
    a = Session.from_program(mlp.program).step(x, y).loss
    b = Session.from_program(mlp.program).step({"y": y, "x": x}).loss
    assert a == b


def test_file_without_manifest_or_of_another_version(mlp):
    with pytest.raises(ProgramFileError, match="no satc I/O manifest.*satc compile"):
        Session.from_program(dataclasses.replace(mlp.program, meta={}))
    blob = mlp.program.to_bytes()
    assert Program.from_bytes(blob).meta[MANIFEST_KEY]["input_order"] == ["x", "y"]
    meta = mlp.program.meta[MANIFEST_KEY]
    old = {k: v for k, v in meta.items() if k != "version"}
    with pytest.raises(ProgramFileError, match=f"no version.*reads manifest version "
                                               f"{MANIFEST_VERSION}.*recompile.*satc compile"):
        Session.from_program(dataclasses.replace(mlp.program, meta={MANIFEST_KEY: old}))
    other = dict(meta, version=MANIFEST_VERSION + 1)
    with pytest.raises(ProgramFileError, match=f"version {MANIFEST_VERSION + 1}.*reads manifest "
                                               f"version {MANIFEST_VERSION}"):
        Session.from_program(dataclasses.replace(mlp.program, meta={MANIFEST_KEY: other}))


def test_manifest_round_trip(mlp):
    m = mlp.session.manifest
    d = m.to_json()
    assert d["version"] == MANIFEST_VERSION
    program = Program.from_bytes(mlp.program.to_bytes())
    back = Manifest.from_json(d, program)
    assert back.to_json() == d
    assert back == Manifest.from_program(program)
    assert {k: type(s) for k, s in back.state.items()} == {k: type(s) for k, s in m.state.items()}
    assert back.state_regions == m.state_regions and back.input_shapes == m.input_shapes
    kinds = {s["kind"] for part in ("inputs", "outputs", "state") for s in d[part].values()}
    assert kinds <= set(STORAGE_KINDS) and {"dense", "one_hot", "compressed"} <= kinds


def test_unknown_storage_kind_is_named():
    with pytest.raises(ProgramFileError, match="unknown storage kind 'Dense'"):
        storage_from_json({"kind": "Dense", "region": "x"}, lambda name: None)


def test_program_is_built_once_per_state_change(mlp):
    prog = satc.compile("mlp", input_shapes={"x": [2, 1, 8, 8]}, hw="sat-small")
    first = prog.program
    assert prog.program is first                       # no re-encoding without a change
    prog.step(np.zeros((2, 1, 8, 8), np.float32), np.zeros(2, np.int64))
    after = prog.program
    assert after is not first and prog.program is after
    k = next(iter(prog.state))
    prog.state[k] = np.asarray(prog.state[k]) * 0
    assert prog.program is not after
    region = prog.state._storages[k].regions[0].name
    assert not prog.program.region(region).array().any()


def test_file_program_unchanged_until_a_step(mlp):
    session = Session.from_program(mlp.program)
    assert session.program_with_state().to_bytes() == mlp.program.to_bytes()


def test_prog_schedule_and_save_carry_the_manifest(tmp_path):
    prog = satc.compile("mlp", input_shapes={"x": [4, 1, 8, 8]}, hw="sat-small", sparsity="bdwp:2:8")
    result = prog.schedule("list")
    result.check()
    assert result.makespan <= prog.timing.total_cycles
    assert any("/WU/" in t.label for t in result.graph.tasks)
    prog.save(tmp_path / "p.satbin")
    assert (list(Session.load(tmp_path / "p.satbin").manifest.labels)
            == result.graph.program.meta[MANIFEST_KEY]["labels"])
