"""ONNX frontend: same training step as the torch path, hand-written graphs, and its errors.

Name matching with torch: models are exported with ``training=TrainingMode.TRAINING``
and ``do_constant_folding=False``, so every ONNX initializer is named after its
``state_dict`` key and the ONNX graph's params and buffers have exactly the torch
frontend's names (checked, not assumed). Exporting in training mode runs one
forward pass that moves the BN running stats, so each comparison starts from the
module's state after export, which equals the initializers (checked too).
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from satc.errors import FrontendError, ShapeError, UnsupportedOpError
from satc.frontend.onnx_import import import_onnx
from satc.frontend.torch_import import import_torch
from satc.ir.interpreter import interpret
from satc.passes.autodiff import build_training_graph
from satc.passes.optimizer import SGD
from tests.torch_reference import assert_close, torch_sgd_step

LR, MOMENTUM, WD = 0.1, 0.9, 1e-3


# ------------------------------------------------------------------ helpers
def _export(model: nn.Module, x: torch.Tensor, opset: int, train: bool = True) -> onnx.ModelProto:
    f = io.BytesIO()
    mode = torch.onnx.TrainingMode.TRAINING if train else torch.onnx.TrainingMode.EVAL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), f, dynamo=False, opset_version=opset, training=mode,
                          do_constant_folding=False)
    return onnx.load_from_string(f.getvalue())


def _vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _const(name, value):
    return helper.make_node("Constant", [], [name], name=name,
                            value=numpy_helper.from_array(np.asarray(value)))


def _model(nodes, inputs, outputs, opset, inits=None):
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    graph = helper.make_graph(nodes, "handmade", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _reference(model, **feeds):
    return ReferenceEvaluator(model).run(None, feeds)


def _forward(g, x):
    return interpret(g, {"x": x}).outputs["output"]


def _step(g, x, y):
    tg = build_training_graph(g, optimizer=SGD(lr=LR, momentum=MOMENTUM, weight_decay=WD))
    return tg, interpret(tg, {"x": x, "y": y}, tg.initial_state())


def _assert_same_step(onnx_g, torch_g, model, x, y):
    """One SGD step of the ONNX graph equals the torch frontend's and torch autograd's."""
    assert set(onnx_g.params) == set(torch_g.params)
    assert set(onnx_g.buffers) == set(torch_g.buffers)
    _, r_onnx = _step(onnx_g, x, y)
    _, r_torch = _step(torch_g, x, y)
    losses, grads, state = torch_sgd_step(model, torch.from_numpy(x), torch.from_numpy(y),
                                          LR, MOMENTUM, WD)
    assert_close(r_onnx.loss, r_torch.loss, "loss vs torch frontend")
    assert_close(r_onnx.loss, losses[0], "loss vs autograd")
    assert set(r_onnx.grads) == set(grads) == set(onnx_g.params)
    for k, gk in grads.items():
        assert_close(r_onnx.grads[k], r_torch.grads[k], f"grad {k} vs torch frontend")
        assert_close(r_onnx.grads[k], gk, f"grad {k} vs autograd")
    for k in onnx_g.state:
        assert_close(r_onnx.new_state[k], r_torch.new_state[k], f"new {k} vs torch frontend")
        assert_close(r_onnx.new_state[k], state[k], f"new {k} vs autograd")
    return r_onnx


def _check_initializers_are_state(proto, model):
    sd = model.state_dict()
    for t in proto.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(t), sd[t.name].numpy(), err_msg=t.name)


# ------------------------------------------------------------------ torch-exported models
class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.c1(x))))
        x = torch.relu(x + self.bn2(self.c2(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TinyBlock(nn.Module):
    def __init__(self, approximate="none", d=16, heads=2):
        super().__init__()
        self.heads, self.approximate = heads, approximate
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.proj = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2, self.head = nn.Linear(d, 32), nn.Linear(32, d), nn.Linear(d, 5)

    def forward(self, x):
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = (m(h).reshape(b, t, self.heads, d // self.heads).permute(0, 2, 1, 3)
                   for m in (self.q, self.k, self.v))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate=self.approximate))
        return self.head(x.mean(1))


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_cnn_step_matches_torch_frontend_and_autograd(opset):
    torch.manual_seed(0)
    model = SmallCNN()
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    y = np.array([0, 3, 1, 4])
    proto = _export(model, torch.from_numpy(x), opset)
    _check_initializers_are_state(proto, model)
    g = import_onnx(proto)
    tg = import_torch(copy.deepcopy(model), (torch.from_numpy(x),))
    assert Counter(n.op for n in g.nodes) == Counter(n.op for n in tg.nodes)
    assert [v.name for v in g.inputs] == ["x"] and list(g.outputs) == ["output"]
    assert set(g.buffers) == {"bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"}
    bn = next(n for n in g.nodes if n.op == "batchnorm")
    assert bn.attrs == {"training": True, "momentum": 0.1, "eps": 1e-5}
    assert bn.layer == "/bn1/BatchNormalization"
    _assert_same_step(g, tg, model, x, y)


@pytest.mark.parametrize("opset,approximate", [(11, "none"), (13, "tanh"), (17, "none"), (20, "tanh")])
def test_transformer_block_step_matches_torch(opset, approximate):
    torch.manual_seed(1)
    model = TinyBlock(approximate)
    x = np.random.default_rng(1).standard_normal((3, 4, 16)).astype(np.float32)
    y = np.array([0, 4, 2])
    proto = _export(model, torch.from_numpy(x), opset)
    g = import_onnx(proto)
    ops = Counter(n.op for n in g.nodes)
    # LayerNorm (written out before opset 17) and GELU (a pattern before opset 20) are one op each
    assert ops["layernorm"] == 2 and ops["gelu"] == 1 and ops["softmax"] == 1
    assert next(n for n in g.nodes if n.op == "gelu").attrs == {"approximate": approximate}
    # Linear on 3-D input: MatMul(x, Transpose(W)) + Add(b) -> matmul(trans_b) on the stored W + bias_add
    assert ops["bias_add"] == 7 and ops["matmul"] == 9 and "q.weight" in g.params
    assert g.params["q.weight"].shape == (16, 16)
    tg = import_torch(copy.deepcopy(model), (torch.from_numpy(x),))
    _assert_same_step(g, tg, model, x, y)


def test_dynamic_axes_export_binds_shapes_and_folds_shape_arithmetic():
    torch.manual_seed(3)
    model = TinyBlock()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 3, 16),), f, dynamo=False, opset_version=13,
                          input_names=["tokens"], dynamic_axes={"tokens": {0: "batch", 1: "seq"}})
    proto = onnx.load_from_string(f.getvalue())
    assert {"Shape", "Gather", "Concat"} <= {n.op_type for n in proto.graph.node}
    with pytest.raises(FrontendError, match=r"'tokens'.*dim 0 \('batch'\), dim 1 \('seq'\).*"
                                            r"--input-shape tokens=batch,seq,16"):
        import_onnx(proto)
    g = import_onnx(proto, input_shapes={"tokens": [5, 6, 16]})
    assert g.inputs[0].shape == (5, 6, 16)
    assert next(n for n in g.nodes if n.op == "reshape").attrs["shape"] == [5, 6, 2, 8]
    x = torch.randn(5, 6, 16)
    assert_close(_forward(g, x.numpy()), model(x).detach().numpy(), "forward at the bound shape")


@pytest.mark.parametrize("opset", [9, 15])
def test_eval_exported_batchnorm_becomes_training_batchnorm(opset):
    # BN after ReLU is not fused into the conv by the eval-mode exporter
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(36, 3))
    model[2].running_mean.uniform_(-1, 1)
    model[2].running_var.uniform_(0.5, 2)
    x = np.random.default_rng(2).standard_normal((4, 3, 5, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 1])
    proto = _export(model.eval(), torch.from_numpy(x), opset, train=False)
    bn_node = next(n for n in proto.graph.node if n.op_type == "BatchNormalization")
    assert len(bn_node.output) == 1
    g = import_onnx(proto)
    assert set(g.buffers) == {"2.running_mean", "2.running_var"}
    _assert_same_step(g, import_torch(copy.deepcopy(model), (torch.from_numpy(x),)), model, x, y)
    # bn_training=False: inference batchnorm from the running stats, like the module in eval mode
    inference = import_onnx(proto, bn_training=False)
    assert next(n for n in inference.nodes if n.op == "batchnorm").attrs["training"] is False
    assert not inference.state_updates
    assert_close(_forward(inference, x), model.eval()(torch.from_numpy(x)).detach().numpy(), "eval forward")


# ------------------------------------------------------------------ hand-written graphs
def test_constant_subgraph_weights_bn_as_mul_add_and_sum_residual():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
    fc = rng.standard_normal((3, 4)).astype(np.float32)          # stored [out, in]
    scale = rng.uniform(0.5, 2, (4, 1, 1)).astype(np.float32)
    shift = rng.standard_normal((4, 1, 1)).astype(np.float32)
    nodes = [
        _const("w_flat", w.reshape(-1)), _const("w_shape", np.array(w.shape, np.int64)),
        helper.make_node("Reshape", ["w_flat", "w_shape"], ["conv_w"], name="w_reshape"),
        helper.make_node("Conv", ["input", "conv_w"], ["c"], name="conv", pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3]),
        _const("bn_scale", scale), _const("bn_shift", shift),
        helper.make_node("Mul", ["c", "bn_scale"], ["s"], name="bn_mul"),
        helper.make_node("Add", ["bn_shift", "s"], ["t"], name="bn_add"),
        helper.make_node("Relu", ["t"], ["r"], name="relu"),
        helper.make_node("Sum", ["input", "r"], ["res"], name="residual"),
        helper.make_node("GlobalAveragePool", ["res"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Transpose", ["fc.weight"], ["fc_wt"], name="fc_t", perm=[1, 0]),
        helper.make_node("Gemm", ["flat", "fc_wt", "fc.bias"], ["out"], name="fc"),
    ]
    proto = _model(nodes, [_vi("input", [2, 4, 5, 5])], [_vi("out", [2, 3])], 9,
                   {"fc.weight": fc, "fc.bias": np.arange(3, dtype=np.float32)})
    g = import_onnx(proto)
    assert [n.op for n in g.nodes] == ["conv2d", "mul", "add", "relu", "sum", "global_avgpool", "reshape",
                                       "matmul", "bias_add"]
    # weights computed by constant subgraphs are params named after their value; one param for
    # the transposed Gemm weight, in its stored layout, with the transpose folded into trans_b
    assert set(g.params) == {"conv_w", "fc.weight", "fc.bias"}
    assert g.params["fc.weight"].shape == (3, 4)
    assert next(n for n in g.nodes if n.op == "matmul").attrs == {"trans_b": True}
    assert {"bn_scale", "bn_shift"} <= set(g.constants)
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    assert_close(_forward(g, x), _reference(proto, input=x)[0], "forward")
    tg, res = _step(g, x, np.array([0, 2]))
    assert set(res.grads) == {"conv_w", "fc.weight", "fc.bias"}
    assert not np.allclose(res.new_state["conv_w"], g.initializers["conv_w"])


def test_matmul_weight_from_constant_arithmetic():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((6, 4)).astype(np.float32)
    nodes = [_const("a", a), _const("b", b),
             helper.make_node("Mul", ["a", "b"], ["w"], name="w_mul"),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    proto = _model(nodes, [_vi("x", [3, 6])], [_vi("y", [3, 4])], 12)
    g = import_onnx(proto)
    assert list(g.params) == ["w"] and not g.constants
    assert_close(g.initializers["w"], a * b, "folded weight")
    x = rng.standard_normal((3, 6)).astype(np.float32)
    assert_close(_forward(g, x), x @ (a * b), "forward")


@pytest.mark.parametrize("op,attrs", [
    ("Conv", dict(auto_pad="SAME_UPPER", strides=[2, 2], dilations=[2, 2], group=2)),
    ("Conv", dict(auto_pad="SAME_LOWER", group=2)),
    ("Conv", dict(auto_pad="VALID", strides=[2, 1], dilations=[1, 2], group=2)),
    ("Conv", dict(pads=[1, 0, 2, 1], strides=[2, 2], group=2)),
    ("MaxPool", dict(pads=[1, 1, 1, 0], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    ("MaxPool", dict(pads=[1, 1, 1, 1], dilations=[2, 1])),
    ("AveragePool", dict(pads=[1, 1, 1, 1], strides=[2, 2])),  # count_include_pad=0 by default
    ("AveragePool", dict(pads=[1, 0, 1, 1], strides=[2, 2], count_include_pad=1)),
    ("AveragePool", dict(strides=[2, 2], ceil_mode=1)),  # ceil_mode that does not change the size
])
def test_conv_and_pool_attributes(op, attrs):
    rng = np.random.default_rng(13)
    inputs, inits = ["x"], {}
    if op == "Conv":
        inputs, inits = ["x", "w", "b"], {"w": rng.standard_normal((6, 2, 3, 3)).astype(np.float32),
                                          "b": rng.standard_normal(6).astype(np.float32)}
    node = helper.make_node(op, inputs, ["y"], name="layer", kernel_shape=[3, 3], **attrs)
    proto = _model([node], [_vi("x", [2, 4, 7, 7])], [_vi("y", ["n", "c", "h", "w"])], 13, inits)
    x = rng.standard_normal((2, 4, 7, 7)).astype(np.float32)
    assert_close(_forward(import_onnx(proto), x), _reference(proto, x=x)[0], f"{op} {attrs}")


def test_pool_variants_satc_cannot_take_are_named():
    node = helper.make_node("AveragePool", ["x"], ["y"], name="avg", kernel_shape=[3, 3], strides=[2, 2],
                            ceil_mode=1)
    proto = _model([node], [_vi("x", [1, 1, 8, 8])], [_vi("y", [1, 1, 4, 4])], 13)
    with pytest.raises(UnsupportedOpError, match=r"node 'avg' \(AveragePool, opset 13\): .*ceil_mode=1"):
        import_onnx(proto)


def test_channel_shuffle_with_shape_subgraph():
    groups, c = 3, 6
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),  # Shape of an activation folds too
        helper.make_node("Shape", ["r"], ["shp"], name="shape"),
        _const("zero", np.array(0, np.int64)),
        helper.make_node("Gather", ["shp", "zero"], ["n"], name="gather_n", axis=0),
        helper.make_node("Unsqueeze", ["n"], ["n1"], name="unsq_n", axes=[0]),
        _const("rest", np.array([groups, c // groups, 4, 4], np.int64)),
        helper.make_node("Concat", ["n1", "rest"], ["split_shape"], name="cat_shape", axis=0),
        helper.make_node("Reshape", ["r", "split_shape"], ["r5"], name="to5d"),
        helper.make_node("Transpose", ["r5"], ["t5"], name="shuffle", perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t5", "shp"], ["y"], name="to4d"),
    ]
    proto = _model(nodes, [_vi("x", [2, c, 4, 4])], [_vi("y", [2, c, 4, 4])], 11)
    g = import_onnx(proto)
    assert [(n.op, n.layer) for n in g.nodes] == [("relu", "relu"), ("reshape", "to5d"),
                                                  ("transpose", "shuffle"), ("reshape", "to4d")]
    assert g.nodes[1].attrs["shape"] == [2, groups, c // groups, 4, 4]
    x = np.random.default_rng(5).standard_normal((2, c, 4, 4)).astype(np.float32)
    expected = (np.maximum(x, 0).reshape(2, groups, c // groups, 4, 4).transpose(0, 2, 1, 3, 4)
                .reshape(2, c, 4, 4))
    np.testing.assert_array_equal(_forward(g, x), expected)


def test_opset9_batchnorm_with_all_outputs():
    rng = np.random.default_rng(6)
    c = 3
    gamma, beta = rng.uniform(0.5, 1.5, c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    mean, var = rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32)
    bn = helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y", "rm", "rv", "sm", "sv"],
                          name="bn", epsilon=1e-3, momentum=0.8)
    inits = {"g": gamma, "b": beta, "m": mean, "v": var}
    proto = _model([bn], [_vi("x", [4, c, 2, 2])], [_vi("y", [4, c, 2, 2])], 9, inits)
    reads_saved = _model([bn, helper.make_node("Relu", ["sv"], ["z"], name="uses_saved")],
                         [_vi("x", [4, c, 2, 2])], [_vi("z", [c])], 9, inits)
    with pytest.raises(UnsupportedOpError, match=r"node 'uses_saved'.*reads 'sv', output 4 of node 'bn'"):
        import_onnx(reads_saved)
    x = rng.standard_normal((4, c, 2, 2)).astype(np.float32)
    g = import_onnx(proto)
    assert set(g.params) == {"g", "b"} and set(g.buffers) == {"m", "v"}
    assert g.nodes[0].attrs == {"training": True, "momentum": pytest.approx(0.2), "eps": 1e-3}
    res = interpret(g, {"x": x})
    rm, rv = torch.from_numpy(mean.copy()), torch.from_numpy(var.copy())
    expected = F.batch_norm(torch.from_numpy(x), rm, rv, torch.from_numpy(gamma), torch.from_numpy(beta),
                            training=True, momentum=0.2, eps=1e-3)
    assert_close(res.outputs["output"], expected.numpy(), "training forward")
    assert_close(res.new_state["m"], rm.numpy(), "running mean")
    assert_close(res.new_state["v"], rv.numpy(), "running var")
    inference = import_onnx(proto, bn_training=False)
    view = (1, c, 1, 1)
    expected = ((x - mean.reshape(view)) / np.sqrt(var.reshape(view) + 1e-3) * gamma.reshape(view)
                + beta.reshape(view))
    assert_close(_forward(inference, x), expected, "inference forward")


@pytest.mark.parametrize("c_shape", [(4,), (1, 4), (2, 4)])
def test_gemm_trans_b_alpha_beta(c_shape):
    rng = np.random.default_rng(7)
    w, c = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(c_shape).astype(np.float32)
    gemm = helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="gemm", transB=1, alpha=0.5, beta=2.0)
    proto = _model([gemm], [_vi("x", [2, 3])], [_vi("y", [2, 4])], 11, {"w": w, "c": c})
    g = import_onnx(proto)
    assert set(g.params) == {"w", "c"} and g.params["c"].shape == c_shape
    ops = [n.op for n in g.nodes]
    assert ops[:2] == ["matmul", "scale"] and "scale" in ops[2:]
    assert ops[-1] == ("add" if c_shape == (2, 4) else "bias_add")
    x = rng.standard_normal((2, 3)).astype(np.float32)
    assert_close(_forward(g, x), _reference(proto, x=x)[0], "forward")
    y = np.array([1, 3])
    _, res = _step(g, x, y)
    wt, ct = torch.from_numpy(w).requires_grad_(), torch.from_numpy(c).requires_grad_()
    F.cross_entropy(0.5 * torch.from_numpy(x) @ wt.T + 2.0 * ct, torch.from_numpy(y)).backward()
    assert_close(res.grads["w"], wt.grad.numpy(), "grad w")
    assert_close(res.grads["c"], ct.grad.numpy(), "grad c (stored shape)")


def _gelu_erf(order):
    """x * 0.5 * (1 + erf(x / sqrt 2)) in three orderings."""
    pre = ([_const("k", np.float32(1.4142135)), helper.make_node("Div", ["h", "k"], ["u"])]
           if order != "mul-0.7071" else
           [_const("k", np.float32(0.70710677)), helper.make_node("Mul", ["h", "k"], ["u"])])
    first, second = {"half-last": (["h", "s"], ["p", "half"]),      # (x * s) * 0.5
                     "mul-0.7071": (["half", "h"], ["p", "s"]),     # (0.5 * x) * s
                     "half-times-s": (["s", "half"], ["h", "p"])}[order]  # x * (s * 0.5)
    tail = [helper.make_node("Mul", first, ["p"]), helper.make_node("Mul", second, ["y"])]
    return pre + [helper.make_node("Erf", ["u"], ["e"]), _const("one", np.float32(1.0)),
                  helper.make_node("Add", ["one", "e"], ["s"]), _const("half", np.float32(0.5))] + tail


def _gelu_tanh(cube):
    if cube == "pow":
        powr = [_const("three", np.float32(3.0)), helper.make_node("Pow", ["h", "three"], ["h3"])]
    else:
        powr = [helper.make_node("Mul", ["h", "h"], ["h2"]), helper.make_node("Mul", ["h", "h2"], ["h3"])]
    return powr + [
        _const("c", np.float32(0.044715)), helper.make_node("Mul", ["h3", "c"], ["q"]),
        helper.make_node("Add", ["h", "q"], ["inner"]),
        _const("k", np.float32(math.sqrt(2 / math.pi))), helper.make_node("Mul", ["k", "inner"], ["u"]),
        helper.make_node("Tanh", ["u"], ["t"]), _const("one", np.float32(1.0)),
        helper.make_node("Add", ["t", "one"], ["s"]), _const("half", np.float32(0.5)),
        helper.make_node("Mul", ["half", "h"], ["hh"]), helper.make_node("Mul", ["hh", "s"], ["y"])]


@pytest.mark.parametrize("pattern,approximate", [
    (_gelu_erf("half-last"), "none"), (_gelu_erf("mul-0.7071"), "none"),
    (_gelu_erf("half-times-s"), "none"), (_gelu_tanh("pow"), "tanh"), (_gelu_tanh("mul"), "tanh")])
def test_gelu_patterns_become_one_gelu(pattern, approximate):
    rng = np.random.default_rng(8)
    w = rng.standard_normal((5, 6)).astype(np.float32)
    proto = _model([helper.make_node("MatMul", ["x", "w"], ["h"], name="fc")] + pattern,
                   [_vi("x", [3, 5])], [_vi("y", [3, 6])], 12, {"w": w})
    g = import_onnx(proto)
    assert [n.op for n in g.nodes] == ["matmul", "gelu"]
    assert g.nodes[1].attrs == {"approximate": approximate}
    x = rng.standard_normal((3, 5)).astype(np.float32) * 2
    xt, wt = torch.from_numpy(x), torch.from_numpy(w).requires_grad_()
    expected = F.gelu(xt @ wt, approximate=approximate)
    assert_close(_forward(g, x), expected.detach().numpy(), "forward")
    assert_close(_forward(g, x), _reference(proto, x=x)[0], "forward vs onnx reference")
    y = np.array([0, 5, 2])
    _, res = _step(g, x, y)
    F.cross_entropy(expected, torch.from_numpy(y)).backward()
    assert_close(res.grads["w"], wt.grad.numpy(), "grad through gelu")


def test_gelu_pattern_with_a_shared_intermediate_is_not_fused():
    nodes = _gelu_erf("half-last") + [helper.make_node("Add", ["y", "e"], ["z"])]  # erf read twice
    proto = _model(nodes, [_vi("h", [2, 3])], [_vi("z", [2, 3])], 13)
    with pytest.raises(UnsupportedOpError, match=r"\(Erf, opset 13\): only inside the exact GELU pattern"):
        import_onnx(proto)


@pytest.mark.parametrize("opset", [9, 12, 13])
def test_dropout_identity_unsqueeze_constantofshape(opset):
    if opset < 12:
        drop = [helper.make_node("Dropout", ["x"], ["d", "mask"], name="drop", ratio=0.25)]
    else:
        drop = [_const("ratio", np.float32(0.25)), _const("train", np.array(False)),
                helper.make_node("Dropout", ["x", "ratio", "train"], ["d", "mask"], name="drop")]
    if opset < 13:
        unsq = [helper.make_node("Unsqueeze", ["i"], ["u"], name="unsq", axes=[1])]
        sq = [helper.make_node("Squeeze", ["sum"], ["y"], name="sq", axes=[1])]
    else:
        unsq = [_const("ax", np.array([1], np.int64)),
                helper.make_node("Unsqueeze", ["i", "ax"], ["u"], name="unsq")]
        sq = [helper.make_node("Squeeze", ["sum", "ax"], ["y"], name="sq")]
    nodes = drop + [helper.make_node("Identity", ["d"], ["i"], name="id")] + unsq + [
        helper.make_node("Shape", ["u"], ["us"]),
        helper.make_node("ConstantOfShape", ["us"], ["fill"],
                         value=numpy_helper.from_array(np.array([1.5], np.float32))),
        helper.make_node("Add", ["u", "fill"], ["sum"], name="plus")] + sq
    proto = _model(nodes, [_vi("x", [2, 3, 4])], [_vi("y", [2, 3, 4])], opset)
    g = import_onnx(proto)
    assert [n.op for n in g.nodes] == ["dropout", "reshape", "add", "reshape"]
    assert g.nodes[0].attrs == {"p": 0.25} and g.nodes[1].attrs["shape"] == [2, 1, 3, 4]
    x = np.random.default_rng(9).standard_normal((2, 3, 4)).astype(np.float32)
    assert_close(_forward(g, x), x + 1.5, "forward")
    assert_close(_forward(g, x), _reference(proto, x=x)[0], "forward vs onnx reference")


def test_split_slice_gather_reduce_mean():
    nodes = [_const("sizes", np.array([2, 4], np.int64)),
             helper.make_node("Split", ["x", "sizes"], ["a", "b"], name="split", axis=1),
             _const("st", np.array([1], np.int64)), _const("en", np.array([-1], np.int64)),
             _const("axs", np.array([1], np.int64)),
             helper.make_node("Slice", ["b", "st", "en", "axs"], ["bs"], name="slice"),
             helper.make_node("Concat", ["bs", "a"], ["cat"], name="cat", axis=1),
             _const("idx", np.array(2, np.int64)),
             helper.make_node("Gather", ["cat", "idx"], ["gat"], name="gather", axis=2),
             helper.make_node("ReduceMean", ["gat"], ["y"], name="mean", axes=[0], keepdims=0)]
    proto = _model(nodes, [_vi("x", [2, 6, 3])], [_vi("y", [4])], 13)
    g = import_onnx(proto)
    x = np.random.default_rng(10).standard_normal((2, 6, 3)).astype(np.float32)
    assert_close(_forward(g, x), _reference(proto, x=x)[0], "forward")
    assert Counter(n.op for n in g.nodes) == Counter(slice=4, concat=1, reshape=1, reduce_mean=1)


def test_softmax_axis_semantics_by_opset():
    def model(opset, axis):
        node = helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=axis)
        return _model([node], [_vi("x", [2, 3, 4])], [_vi("y", [2, 3, 4])], opset)

    x = np.random.default_rng(11).standard_normal((2, 3, 4)).astype(np.float32)
    for opset, axis in ((11, 2), (11, -1), (13, 1)):
        proto = model(opset, axis)
        assert_close(_forward(import_onnx(proto), x), _reference(proto, x=x)[0], f"opset {opset} axis {axis}")
    # before opset 13 the input is coerced to 2-D at the axis: axis 1 of [2, 3, 4] is a softmax
    # over the 12 trailing elements of each row, axis 0 over all 24 (by hand: onnx's reference
    # evaluator applies the opset-13 rule to every opset)
    for opset, axis, rows in ((11, 1, 2), (9, 1, 2), (11, 0, 1)):
        flat = x.reshape(rows, -1)
        e = np.exp(flat - flat.max(1, keepdims=True))
        assert_close(_forward(import_onnx(model(opset, axis)), x),
                     (e / e.sum(1, keepdims=True)).reshape(2, 3, 4), f"opset {opset} axis {axis}")


def test_trailing_softmax_is_kept_and_dropped_by_the_loss():
    nodes = [helper.make_node("Gemm", ["x", "w"], ["z"], name="fc"),
             helper.make_node("Softmax", ["z"], ["p"], name="sm", axis=1)]
    proto = _model(nodes, [_vi("x", [2, 3])], [_vi("p", [2, 4])], 11, {"w": np.ones((3, 4), np.float32)})
    g = import_onnx(proto)
    assert g.outputs["output"].producer.op == "softmax"
    tg = build_training_graph(g)
    assert tg.outputs["logits"].producer.op == "matmul"
    assert all(n.op != "softmax" for n in tg.nodes)


def test_input_and_output_names():
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["r"])]
    proto = _model(nodes, [_vi("a", [2, 3]), _vi("b", [2, 3])], [_vi("s", [2, 3]), _vi("r", [2, 3])], 13)
    g = import_onnx(proto)
    assert [v.name for v in g.inputs] == ["a", "b"] and list(g.outputs) == ["output0", "output1"]
    assert [v.name for v in import_onnx(proto, input_names=["p", "q"]).inputs] == ["p", "q"]


# ------------------------------------------------------------------ shapes and errors
def _batch_model():
    node = helper.make_node("Gemm", ["input", "w"], ["y"], name="fc", transB=1)
    return _model([node], [_vi("input", ["batch", 3])], [_vi("y", ["batch", 2])], 13,
                  {"w": np.ones((2, 3), np.float32)})


def test_symbolic_dims_are_bound_by_input_shapes():
    proto = _batch_model()
    with pytest.raises(FrontendError,
                       match=r"input 'input'.*dim 0 \('batch'\).*input_shapes=.*--input-shape"):
        import_onnx(proto)
    for key in ("input", "x"):  # the ONNX name or the satc name
        g = import_onnx(proto, input_shapes={key: [5, 3]})
        assert g.inputs[0].shape == (5, 3) and g.outputs["output"].shape == (5, 2)
    with pytest.raises(ShapeError,
                       match=r"input 'input' dim 1: input_shapes gives 4, the model fixes it to 3"):
        import_onnx(proto, input_shapes={"input": [5, 4]})
    with pytest.raises(ShapeError, match="rank 3"):
        import_onnx(proto, input_shapes={"input": [5, 3, 1]})
    with pytest.raises(FrontendError, match=r"\['nope'\], which are not inputs"):
        import_onnx(proto, input_shapes={"nope": [1]})


def test_every_unsupported_node_is_listed_in_one_error():
    nodes = [helper.make_node("Hardmax", ["x"], ["h"], name="first_bad"),
             helper.make_node("Relu", ["h"], ["r"], name="fine"),
             helper.make_node("LpNormalization", ["r"], ["y"], name="second_bad")]
    proto = _model(nodes, [_vi("x", [2, 3])], [_vi("y", [2, 3])], 13)
    with pytest.raises(UnsupportedOpError) as e:
        import_onnx(proto)
    msg = str(e.value)
    assert "2 unsupported node(s)" in msg
    assert "node 'first_bad' (Hardmax, opset 13)" in msg
    assert "node 'second_bad' (LpNormalization, opset 13)" in msg
    assert "'fine'" not in msg


def test_opset_out_of_range():
    proto = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", [2])], 7)
    with pytest.raises(UnsupportedOpError, match="opset 7; satc imports opsets 9 to 21"):
        import_onnx(proto)


def test_malformed_files(tmp_path):
    good = tmp_path / "good.onnx"
    onnx.save(_batch_model(), good)
    assert import_onnx(good, input_shapes={"input": [1, 3]}).name == "good"
    data = good.read_bytes()
    cases = {"random.onnx": np.random.default_rng(12).bytes(300), "truncated.onnx": data[:len(data) // 2]}
    for fname, blob in cases.items():
        path = tmp_path / fname
        path.write_bytes(blob)
        with pytest.raises(FrontendError,
                           match=rf"ONNX file '.*{fname}' (is not a readable|fails onnx.checker)"):
            import_onnx(path)
    with pytest.raises(FrontendError, match="does not exist"):
        import_onnx(tmp_path / "missing.onnx")
    broken = _model([helper.make_node("Relu", ["undefined"], ["y"])], [_vi("x", [2])], [_vi("y", [2])], 13)
    onnx.save(broken, tmp_path / "broken.onnx")
    with pytest.raises(FrontendError, match=r"broken.onnx': node 0 'y' \(Relu\) reads 'undefined', "
                                            r"which no graph input, initializer or node defines"):
        import_onnx(tmp_path / "broken.onnx")


def test_zoo_vit_position_embedding_is_a_trained_param():
    """A learned tensor added in (ViT's position embedding) trains as in torch."""
    from satc.models import get_model

    torch.manual_seed(3)
    model = get_model("vit_tiny", depth=1, dim=48, heads=2)
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    y = np.array([1, 7])
    proto = _export(model, torch.from_numpy(x), 17)
    g = import_onnx(proto)
    learned = [k for k in g.params if "pos" in k]
    assert learned, f"position embedding must be a param, params: {sorted(g.params)}"
    _assert_same_step(g, import_torch(copy.deepcopy(model), (torch.from_numpy(x),)), model, x, y)


@pytest.mark.parametrize("softmax", [False, True])
def test_logits_with_trailing_singleton_dims_train_like_torch(softmax):
    """[N, C, 1, 1] logits (a 1x1-conv classifier, DenseNet / SqueezeNet style), optionally
    behind an opset-11 Softmax over axis 1: the loss reads them as [N, C]."""
    w = np.random.default_rng(12).standard_normal((4, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["z"], name="head")]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["p"], name="sm", axis=1))
    proto = _model(nodes, [_vi("x", [2, 3, 1, 1])], [_vi("p" if softmax else "z", [2, 4, 1, 1])],
                   11, {"w": w})
    tg = build_training_graph(import_onnx(proto), optimizer=SGD(lr=0.1))
    assert all(n.op != "softmax" for n in tg.nodes)
    x = np.random.default_rng(13).standard_normal((2, 3, 1, 1)).astype(np.float32)
    y = np.array([1, 3])
    out = interpret(tg, {"x": x, "y": y}, tg.initial_state())
    wt = torch.tensor(w, requires_grad=True)
    loss = F.cross_entropy(F.conv2d(torch.tensor(x), wt).flatten(1), torch.tensor(y))
    loss.backward()
    np.testing.assert_allclose(out.loss, loss.item(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.grads["w"], wt.grad.numpy(), rtol=1e-4, atol=1e-5)
