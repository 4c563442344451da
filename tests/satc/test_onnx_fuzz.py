"""Fuzzing the ONNX importer: every damaged model gets a satc error naming the culprit.

Two small models exported by ``torch.onnx.export`` (an MLP and a conv net with
BatchNorm and max pooling, opset 13) are truncated, bit-flipped, replaced by
random bytes, and edited as protobufs: an initializer dropped, a name
duplicated, a cycle made, dims made zero, negative or huge (bound, declared
or on an initializer), a weight made NaN or infinite, an op renamed, the
opset changed, an attribute given a random value. The only outcomes allowed
are a :class:`~satc.errors.SatcError` whose message names the culprit (node,
initializer, input or file) or -- for an edit that leaves a valid model -- a
graph that also builds its training step. A case may not allocate more than
``MEMORY_HEADROOM`` bytes nor run longer than ``CASE_SECONDS``.
``COUNTS`` tallies the outcomes (printed with ``-s``).
"""

from __future__ import annotations

import io
import resource
import signal
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from satc.passes.autodiff import build_training_graph
from torch import nn

import satc
from satc.errors import SatcError
from satc.frontend.onnx_import import ONNX_HANDLERS, import_onnx

COUNTS: Counter = Counter()
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CASE_SECONDS = 20
MEMORY_HEADROOM = 3 << 30
SHAPES = {"mlp": (2, 12), "conv": (2, 1, 8, 8)}
DIMS = st.sampled_from([0, -1, -7, 1, 2, 3, 10 ** 9, 2 ** 40, 2 ** 63 - 1])


class Hang(Exception):
    """A case ran past CASE_SECONDS."""


def _export(model: nn.Module, shape: Sequence[int]) -> onnx.ModelProto:
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(shape),), f, dynamo=False, opset_version=13,
                          training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    return onnx.load_from_string(f.getvalue())


@pytest.fixture(scope="module")
def models() -> dict[str, onnx.ModelProto]:
    """The two valid models the cases start from."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3))
    return {"mlp": _export(mlp, SHAPES["mlp"]), "conv": _export(conv, SHAPES["conv"])}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """The file the byte-level cases write."""
    return tmp_path_factory.mktemp("onnx_fuzz") / "case.onnx"


@pytest.fixture(scope="module", autouse=True)
def report():
    """Print the tally of outcomes after the module."""
    yield
    print(f"\nONNX fuzz: {sum(COUNTS.values())} cases, " +
          ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items())))


def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


@contextmanager
def _bounded() -> Iterator[None]:
    """At most MEMORY_HEADROOM more address space and CASE_SECONDS of wall time."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_bytes() + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))

    def alarm(*_):
        raise Hang(f"a case ran past {CASE_SECONDS} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(CASE_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _import(model, culprits: Sequence[str], must_fail: bool = False, **kw) -> None:
    """Import ``model`` (and build its training step); tally a clear error naming one of
    ``culprits`` or a valid model."""
    _outcome(lambda: build_training_graph(import_onnx(model, **kw)), culprits, must_fail)


def _outcome(run: Callable[[], object], culprits: Sequence[str], must_fail: bool) -> None:
    try:
        with _bounded():
            run()
    except SatcError as e:
        msg = str(e)
        assert msg and "Traceback" not in msg
        assert any(c in msg for c in culprits), f"the error names none of {list(culprits)}: {msg}"
        COUNTS["clear error"] += 1
        return
    assert not must_fail, "a damaged model was imported"
    COUNTS["imported (valid edit)"] += 1


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def _shape(name: str) -> dict[str, tuple[int, ...]]:
    return {"input_shapes": {"x": SHAPES[name]}}


NAMES = st.sampled_from(sorted(SHAPES))


def test_the_models_import_and_compile(models, scratch):
    for name, proto in models.items():
        g = import_onnx(proto, **_shape(name))
        assert g.params and g.outputs
    onnx.save(models["mlp"], scratch)
    prog = satc.compile(str(scratch), input_shapes={"x": SHAPES["mlp"]})
    assert np.isfinite(prog.step(np.zeros(SHAPES["mlp"], np.float32), np.zeros(2, np.int64)).loss)


# ------------------------------------------------------------------ bytes
@FAST
@given(NAMES, st.data())
def test_truncated(models, scratch, name, data):
    blob = models[name].SerializeToString()
    scratch.write_bytes(blob[:data.draw(st.integers(0, len(blob) - 1))])
    _import(scratch, [str(scratch)], **_shape(name))


@FAST
@given(NAMES, st.data())
def test_flipped_bits(models, scratch, name, data):
    b = bytearray(models[name].SerializeToString())
    for _ in range(data.draw(st.integers(1, 8))):
        b[data.draw(st.integers(0, len(b) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    scratch.write_bytes(bytes(b))
    _import(scratch, [str(scratch)], **_shape(name))


@FAST
@given(st.binary(max_size=2000))
def test_random_bytes(scratch, blob):
    scratch.write_bytes(blob)
    _import(scratch, [str(scratch)])


# ------------------------------------------------------------------ protobuf edits
@FAST
@given(NAMES, st.data())
def test_missing_initializer(models, name, data):
    p = _copy(models[name])
    i = data.draw(st.integers(0, len(p.graph.initializer) - 1))
    gone = p.graph.initializer[i].name
    del p.graph.initializer[i]
    _import(p, [f"reads {gone!r}, which no graph input, initializer or node defines"], must_fail=True,
            **_shape(name))


@FAST
@given(NAMES, st.data())
def test_duplicate_name(models, name, data):
    p = _copy(models[name])
    nodes = p.graph.node
    i = data.draw(st.integers(0, len(nodes) - 1))
    taken = [o for n in nodes for o in n.output] + [t.name for t in p.graph.initializer] + ["x"]
    dup = data.draw(st.sampled_from([t for t in taken if t != nodes[i].output[0]]))
    nodes[i].output[0] = dup
    _import(p, [repr(dup)], must_fail=True, **_shape(name))


@FAST
@given(NAMES, st.data())
def test_cycle_or_unsorted(models, name, data):
    p = _copy(models[name])
    nodes = p.graph.node
    i = data.draw(st.integers(0, len(nodes) - 1))
    later = data.draw(st.integers(i, len(nodes) - 1))
    slot = data.draw(st.integers(0, len(nodes[i].input) - 1)) if nodes[i].input else None
    if slot is None:
        nodes[i].input.append(nodes[later].output[0])
    else:
        nodes[i].input[slot] = nodes[later].output[0]
    _import(p, ["has a cycle", "not in topological order"], must_fail=True, **_shape(name))


@FAST
@given(NAMES, st.data())
def test_bound_dims(models, name, data):
    shape = list(SHAPES[name])
    for _ in range(data.draw(st.integers(1, 2))):
        shape[data.draw(st.integers(0, len(shape) - 1))] = data.draw(DIMS)
    if data.draw(st.booleans()):
        shape = data.draw(st.sampled_from([shape[:-1], shape + [2], [float(s) for s in shape], "2,12",
                                           [str(s) for s in shape], [True] + shape[1:]]))
    _import(models[name], ["input 'x'", "node"], input_shapes={"x": shape})


@FAST
@given(NAMES, st.data())
def test_declared_dims(models, name, data):
    p = _copy(models[name])
    dims = p.graph.input[0].type.tensor_type.shape.dim
    d = dims[data.draw(st.integers(0, len(dims) - 1))]
    d.dim_value = data.draw(DIMS)
    _import(p, ["input 'x'", "fails onnx.checker", "node"], input_shapes=None)


@FAST
@given(NAMES, st.data())
def test_initializer_dims(models, name, data):
    p = _copy(models[name])
    t = p.graph.initializer[data.draw(st.integers(0, len(p.graph.initializer) - 1))]
    if t.dims and data.draw(st.booleans()):
        t.dims[data.draw(st.integers(0, len(t.dims) - 1))] = data.draw(DIMS)
    else:
        t.dims.append(data.draw(DIMS))
    _import(p, [repr(t.name), "node '"], **_shape(name))


@FAST
@given(NAMES, st.data(), st.sampled_from([np.nan, np.inf, -np.inf]))
def test_nonfinite_weight(models, name, data, bad):
    p = _copy(models[name])
    floats = [t for t in p.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    t = data.draw(st.sampled_from(floats))
    arr = numpy_helper.to_array(t).copy()
    arr.reshape(-1)[data.draw(st.integers(0, arr.size - 1))] = bad
    t.CopyFrom(numpy_helper.from_array(arr, t.name))
    _import(p, [f"{t.name!r} holds"], must_fail=True, **_shape(name))


@FAST
@given(NAMES, st.data(), st.sampled_from(sorted(ONNX_HANDLERS)) | st.text(min_size=1, max_size=8),
       st.sampled_from(["", "", "com.microsoft", "x"]))
def test_op_renamed(models, name, data, op, domain):
    p = _copy(models[name])
    node = p.graph.node[data.draw(st.integers(0, len(p.graph.node) - 1))]
    node.op_type, node.domain = op, domain
    _import(p, ["node '", "fails onnx.checker", "input 'x'"], **_shape(name))


@FAST
@given(NAMES, st.integers(-3, 30))
def test_opset(models, name, version):
    p = _copy(models[name])
    p.opset_import[0].version = version
    _import(p, [f"opset {version}", "fails onnx.checker", "node"], **_shape(name))


ATTR_VALUES = st.sampled_from([0, -1, -3, 1, 2, 5, 10 ** 9, 2 ** 62])


def _edit_attribute(p: onnx.ModelProto, data) -> onnx.NodeProto:
    """Give a random int / ints / float attribute of ``p`` a random value; the node edited."""
    attrs = [(n, a) for n in p.graph.node for a in n.attribute
             if a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS, onnx.AttributeProto.FLOAT)]
    node, a = data.draw(st.sampled_from(attrs))
    if a.type == onnx.AttributeProto.INTS:
        a.ints[:] = data.draw(st.lists(ATTR_VALUES, min_size=0, max_size=5))
    elif a.type == onnx.AttributeProto.INT:
        a.i = data.draw(ATTR_VALUES)
    else:
        a.f = data.draw(st.sampled_from([0.0, -1.0, 1e30, float("nan"), float("inf")]))
    return node


@FAST
@given(NAMES, st.data())
def test_attribute_values(models, name, data):
    p = _copy(models[name])
    _edit_attribute(p, data)
    _import(p, ["node '", "fails onnx.checker"], **_shape(name))


def test_a_zero_stride_conv_names_the_node(models):
    p = _copy(models["conv"])
    conv = next(n for n in p.graph.node if n.op_type == "Conv")
    next(a for a in conv.attribute if a.name == "strides").ints[:] = [0, 1]
    with pytest.raises(SatcError, match=rf"node '{conv.name}' \(Conv.*strides \[0, 1\]: give two integers >= 1"):
        import_onnx(p, **_shape("conv"))


def test_a_huge_batch_is_refused_before_allocating(models, scratch):
    onnx.save(models["mlp"], scratch)
    with _bounded(), pytest.raises(SatcError, match=r"input 'x' of shape \(1000000000, 12\) holds "
                                                    r"48000000000 bytes"):
        satc.compile(str(scratch), input_shapes={"x": (10 ** 9, 12)})


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(NAMES, st.data())
def test_compile_after_an_attribute_edit(models, scratch, name, data):
    """A few edits go all the way through satc.compile (tiling, codegen, the program check)."""
    p = _copy(models[name])
    _edit_attribute(p, data)
    onnx.save(p, scratch)
    _outcome(lambda: satc.compile(str(scratch), input_shapes={"x": SHAPES[name]}),
             ["node '", "fails onnx.checker"], must_fail=False)


@pytest.mark.slow
@MANY
@given(NAMES, st.data())
def test_flipped_bits_many(models, scratch, name, data):
    test_flipped_bits.hypothesis.inner_test(models, scratch, name, data)


@pytest.mark.slow
@MANY
@given(NAMES, st.data())
def test_attribute_values_many(models, name, data):
    test_attribute_values.hypothesis.inner_test(models, name, data)


@pytest.mark.slow
@MANY
@given(NAMES, st.data())
def test_truncated_many(models, scratch, name, data):
    test_truncated.hypothesis.inner_test(models, scratch, name, data)
