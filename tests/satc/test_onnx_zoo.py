"""ONNX model-zoo graphs shipped with the onnx wheel (``onnx/backend/test/data/light``: real
SqueezeNet, DenseNet-121, ResNet-50, ... graphs whose weights are ConstantOfShape fills): each
imports, its eval-mode forward in the interpreter equals onnx's own reference evaluator
(``onnx.reference``, on the model converted to opset 15 by ``onnx.version_converter``: the
evaluator implements today's semantics, and opset 9's Softmax and BatchNormalization differ)
and, where it is installed, onnxruntime's; and it builds a BDWP training graph. The constant
fills are replaced by seeded random tensors first, so the outputs are not the uniform softmax
that constant weights give."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import onnx
from onnx import numpy_helper, version_converter
from onnx.reference import ReferenceEvaluator

import satc
from satc.pipeline import CompileOptions, run_passes

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
# The LRN models (AlexNet, Inception v1, ZFNet) build training graphs in test_lrn.py; their
# forward has not been run against onnxruntime, so they are not listed here.
MODELS = ["squeezenet", "densenet121", "resnet50", "shufflenet",
          pytest.param("inception_v2", marks=pytest.mark.slow),  # 19 s in onnx.reference
          pytest.param("vgg19", marks=pytest.mark.slow)]         # vgg19: 20 s on 2 cores


def _randomized(path: Path, seed: int = 0) -> tuple[onnx.ModelProto, str, np.ndarray]:
    """The model with every ConstantOfShape weight an initializer of seeded random values
    (He-scaled weights; BN scales / variances and Mul factors in [0.5, 1.5]; other vectors
    small), only its data input left as a graph input; and a random input for it."""
    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    unit = {n.input[i] for n in m.graph.node if n.op_type == "BatchNormalization" for i in (1, 4)}
    unit |= {i for n in m.graph.node if n.op_type == "Mul" for i in n.input}
    rng = np.random.default_rng(seed)
    filled, kept = [], []
    for n in m.graph.node:
        if n.op_type != "ConstantOfShape":
            kept.append(n)
            continue
        shape = tuple(int(s) for s in inits[n.input[0]])
        if len(shape) >= 2:
            arr = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif n.output[0] in unit:
            arr = rng.uniform(0.5, 1.5, shape)
        else:
            arr = 0.1 * rng.standard_normal(shape)
        filled.append(numpy_helper.from_array(arr.astype(np.float32), n.output[0]))
    made = {o for n in m.graph.node for o in n.output}
    data = [i for i in m.graph.input if i.name not in inits and i.name not in made]
    used = {i for n in kept for i in n.input}
    weights = [t for t in m.graph.initializer if t.name in used] + filled
    del m.graph.node[:], m.graph.initializer[:], m.graph.input[:]
    m.graph.node.extend(kept)
    m.graph.initializer.extend(weights)
    m.graph.input.extend(data)
    m.ir_version = max(m.ir_version, 4)        # IR 4+: initializers need not be graph inputs
    (inp,) = data
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    return m, inp.name, rng.standard_normal(shape).astype(np.float32)


@pytest.fixture(params=MODELS)
def zoo_model(request):
    path = LIGHT / f"light_{request.param}.onnx"
    if not path.exists():
        pytest.skip(f"{path.name} is not in this onnx wheel")
    return request.param, _randomized(path)


def _assert_eval_forward_matches(name: str, model: onnx.ModelProto, x: np.ndarray,
                                 ref: np.ndarray) -> None:
    g = satc.import_onnx(model, bn_training=False)
    (ours,) = satc.interpret(g, {g.inputs[0].name: x}).outputs.values()
    scale = float(np.abs(ref).max())
    assert ref.max() - ref.min() > 1e-3 * scale, "the random weights should give a non-uniform output"
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def test_eval_forward_matches_the_onnx_reference_evaluator(zoo_model):
    name, (model, input_name, x) = zoo_model
    assert model.opset_import[0].version < 13        # the old-opset rules are what is checked
    (ref,) = ReferenceEvaluator(version_converter.convert_version(model, 15)).run(None, {input_name: x})
    _assert_eval_forward_matches(name, model, x, ref)


def test_eval_forward_matches_onnxruntime(zoo_model):
    ort = pytest.importorskip("onnxruntime")
    name, (model, input_name, x) = zoo_model
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (ref,) = sess.run(None, {input_name: x})
    _assert_eval_forward_matches(name, model, x, ref)


def test_builds_a_bdwp_training_graph(zoo_model):
    name, (model, _, _) = zoo_model
    fwd = satc.import_onnx(model)
    tg = run_passes(fwd, CompileOptions(sparsity="bdwp:2:8"))
    ops = {n.op for n in tg.nodes}
    assert {"cross_entropy", "conv2d_grad_weight", "sgd", "nm_prune", "srste_grad"} <= ops, name
    assert {f"grad/{p}" for p in fwd.params} <= set(tg.outputs), name
    assert any(k.endswith(".ff") for k in tg.state), name
