"""satc.coverage: every op of a model with its status (SAT, interpreter only, unsupported)."""

from __future__ import annotations

import torch
import torch.nn as nn

from satc.coverage import coverage, format_coverage, graph_coverage
from satc.frontend.torch_import import import_torch
from tests.satc.test_new_ops_compile import MobileBlockNet


def _status(rows):
    return {r.op: r.status for r in rows}


def test_zoo_cnn_is_all_sat():
    rows = coverage("cnn", input_shapes={"x": (2, 1, 8, 8)}, sparsity="bdwp:2:8")
    st = _status(rows)
    assert set(st.values()) == {"sat"}
    assert {"conv2d", "conv2d_grad_input", "nm_prune", "srste_grad", "sgd"} <= set(st)
    conv = next(r for r in rows if r.op == "conv2d")
    assert conv.stages == ("FF",) and conv.count == 3


def test_activation_model_is_all_sat_and_counts_nodes():
    x = torch.randn(2, 3, 8, 8)
    rows = coverage(MobileBlockNet(), example_inputs=(x,))
    st = _status(rows)
    assert st["silu"] == st["silu_grad"] == st["hardtanh_grad"] == st["mul"] == "sat"
    assert set(st.values()) == {"sat"}
    text = format_coverage(rows)
    assert "silu_grad" in text and text.splitlines()[-1].startswith("ops: ")


def test_interpreter_only_ops_are_named():
    class Pool(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            h = torch.cat([x[:, :, :2], x[:, :, 2:]], 2)
            return self.fc(torch.flatten(nn.functional.avg_pool2d(h, 2), 1))

    g = import_torch(Pool(), (torch.randn(2, 2, 4, 4),))
    st = _status(graph_coverage(g))
    assert st["avgpool2d"] == "interpreter" and st["matmul"] == "sat"
    assert st["concat"] == st["slice"] == "sat"


def test_unsupported_ops_are_rows_with_their_nodes():
    class Bad(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, 1) + torch.sort(x, 1)[0]

    rows = coverage(Bad(), example_inputs=(torch.randn(2, 4),))
    assert {r.op: r.status for r in rows} == {"aten.cumsum.default": "unsupported",
                                            "aten.sort.default": "unsupported"}
    assert "node 'cumsum'" in next(r.note for r in rows if r.op == "aten.cumsum.default")


def test_unsupported_onnx_nodes_are_rows(tmp_path):
    from onnx import TensorProto, helper, save

    nodes = [helper.make_node("Hardmax", ["x"], ["h"], name="first_bad"),
             helper.make_node("Relu", ["h"], ["r"], name="fine"),
             helper.make_node("LpNormalization", ["r"], ["y"], name="second_bad")]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    path = tmp_path / "bad.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    rows = coverage(str(path))
    assert [(r.op, r.status) for r in rows] == [("Hardmax", "unsupported"),
                                                ("LpNormalization", "unsupported")]
    assert "first_bad" in rows[0].note
