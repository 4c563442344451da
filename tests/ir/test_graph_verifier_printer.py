"""Graph building, the verifier's error messages, the printer and interpreter input checks."""

from __future__ import annotations

import numpy as np
import pytest

from satc.errors import IRError, ShapeError
from satc.ir.graph import Graph, Value
from satc.ir.interpreter import interpret
from satc.ir.printer import format_graph
from satc.ir.types import Stage, TensorType, f32
from satc.ir.verifier import verify


def _tiny() -> Graph:
    g = Graph("tiny")
    x = g.add_input("x", f32(2, 3))
    w = g.add_param("w", np.arange(12, dtype=np.float32).reshape(4, 3))
    y = g.add1("matmul", [x, w], {"trans_b": True}, layer="fc")
    g.outputs["y"] = g.add1("relu", [y])
    return g


def test_shape_inference_and_interpretation():
    g = verify(_tiny())
    assert g.outputs["y"].type == f32(2, 4)
    x = np.array([[1, -1, 2], [0, 1, -3]], np.float32)
    out = interpret(g, {"x": x})
    np.testing.assert_array_equal(out.outputs["y"], np.maximum(x @ g.initializers["w"].T, 0))


def test_add_rejects_bad_shapes_naming_the_node():
    g = Graph("bad")
    a = g.add_input("a", f32(2, 3))
    b = g.add_input("b", f32(4, 5))
    with pytest.raises(ShapeError, match=r"node 'matmul' \(matmul\).*inner dims differ"):
        g.add("matmul", [a, b])


def test_verifier_names_use_before_definition():
    g = _tiny()
    g.nodes.reverse()
    with pytest.raises(IRError, match=r"node 0 'relu' \(relu\): input %fc.matmul is used before"):
        verify(g)


def test_verifier_names_wrong_recorded_type_and_pass():
    g = _tiny()
    g.nodes[0].outputs[0].type = f32(2, 5)
    with pytest.raises(IRError, match=r"after pass 'mypass'.*node 0 'fc.matmul'.*differ from inferred"):
        verify(g, after_pass="mypass")


def test_verifier_rejects_unknown_op_and_foreign_values():
    g = _tiny()
    g.nodes[1].op = "frobnicate"
    with pytest.raises(IRError, match="unknown op 'frobnicate'"):
        verify(g)
    g = _tiny()
    g.outputs["z"] = Value("ghost", f32(1))
    with pytest.raises(IRError, match="output 'z' refers to %ghost"):
        verify(g)


def test_state_update_type_must_match():
    g = _tiny()
    g.state_updates["w"] = g.outputs["y"]
    with pytest.raises(IRError, match="state update 'w' has type f32\\[2,4\\]"):
        verify(g)


def test_printer_shows_stages_types_and_filters():
    g = _tiny()
    g.add1("relu", [g.outputs["y"]], stage=Stage.BP)
    text = format_graph(g)
    assert "graph tiny(%x: f32[2,3])" in text
    assert "%fc.matmul = matmul(%x, %w) {trans_b=True} : f32[2,4]  # fc" in text
    assert "// ---- BP ----" in text
    only_ff = format_graph(g, stages=["FF"])
    assert "// ---- BP ----" not in only_ff and "matmul" in only_ff


def test_interpreter_input_errors():
    g = _tiny()
    with pytest.raises(ShapeError, match=r"missing graph inputs \['x'\]"):
        interpret(g, {})
    with pytest.raises(ShapeError, match=r"input 'x' has shape \(3, 3\), the graph expects \(2, 3\)"):
        interpret(g, {"x": np.zeros((3, 3), np.float32)})


def test_clone_is_independent():
    g = _tiny()
    c = g.clone()
    c.add1("relu", [c.outputs["y"]])
    assert len(g.nodes) == 2 and len(c.nodes) == 3
    verify(c)
    assert c.initializers["w"] is g.initializers["w"]


def test_tensor_type_validation():
    with pytest.raises(ShapeError, match="unknown dtype"):
        TensorType((2,), "float8")
    assert str(TensorType((2, 3), "int64")) == "i64[2,3]"
    assert f32(2, 3).nbytes == 24


def test_constants_with_the_same_hint_get_fresh_names():
    g = Graph("c")
    a = g.add_constant(np.ones(2, np.float32), "c")
    b = g.add_constant(np.zeros(2, np.float32), "c")
    assert a.name == "c" and b.name != "c" and set(g.constants) == {a.name, b.name}
    verify(g)
