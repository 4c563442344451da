"""satc.compile on the CNN zoo: ResNet-18/50 (CIFAR and ImageNet stems) and VGG-16-BN.

Width-reduced models (``width=8``), batch 2, small images, on the fp32
``sat-small`` config: one emulated training step equals the reference
interpreter for the loss, every gradient and every updated state tensor
(weights, momentum, BN running stats, compressed W_ff / W_bp).

Tolerances: rtol 1e-4, atol 1e-5 (fp32 against fp32). Two models need
more, and the tests below show why fp32-against-fp32 at 1e-5 is
impossible for them (the fp32 reference itself is farther than that from
the exact result, so any other summation order differs by as much):

* ImageNet stem (and the third step of a chain, whose momentum carries two
  steps of such sums): the stem's weight gradient sums 2*32*32 products
  per element; atol is 1e-5 of the tensor's largest magnitude (when above 1);
* ResNet-50: the deep bottleneck stack amplifies rounding (the fp32
  reference is 1e-4 to 4e-2 of a tensor's scale off the float64 result,
  depending on the data); the step is compared against the float64
  interpreter.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch

import satc
from satc.backends.sat.codegen.tokens import unordered_hazards
from satc.ir.interpreter import interpret
from satc.ir.nm import nm_mask
from satc.models import get_model

RTOL, ATOL = 1e-4, 1e-5
# model -> (factory kwargs, image size)
CASES = {
    "resnet18_cifar": ({"width": 8}, 16),
    "vgg16_bn": ({"width": 8}, 32),
    "resnet18": ({"width": 8, "num_classes": 10}, 64),
    "resnet50_cifar": ({"width": 8}, 16),
}


def _data(name: str):
    torch.manual_seed(0)
    hw = CASES[name][1]
    return torch.randn(2, 3, hw, hw), torch.randint(0, 10, (2,))


@lru_cache(maxsize=None)
def _compiled(name: str, sparsity: str):
    torch.manual_seed(0)
    model = get_model(name, **CASES[name][0])
    x, _ = _data(name)
    return satc.compile(model, example_inputs=(x,), sparsity=sparsity, hw="sat-small",
                        optimizer=satc.SGD(lr=0.05, momentum=0.9, weight_decay=5e-4))


def _step(name: str, sparsity: str, state=None):
    """(program, step result, feeds, state the step started from)."""
    prog = _compiled(name, sparsity)
    state = prog.graph.initial_state() if state is None else state
    prog.state = {k: v.copy() for k, v in state.items()}
    x, y = _data(name)
    return prog, prog.step(x, y), {"x": x.numpy(), "y": y.numpy()}, state


def _check_step(prog, res, ref, scaled_atol: bool = False, what: str = "") -> None:
    def close(got, want, label):
        atol = ATOL * max(1.0, float(np.abs(want).max())) if scaled_atol else ATOL
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=atol, err_msg=f"{what} {label}")
    close(res.loss, ref.loss, "loss")
    assert res.grads.keys() == ref.grads.keys()
    for k, g in ref.grads.items():
        close(res.grads[k], g, f"grad {k}")
    assert prog.state.keys() == ref.new_state.keys()
    for k, v in ref.new_state.items():
        close(prog.state[k], v, f"state {k}")


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
@pytest.mark.parametrize("name", ["resnet18_cifar", "vgg16_bn"])
def test_one_step_matches_interpreter(name, sparsity):
    prog, res, feeds, state = _step(name, sparsity)
    _check_step(prog, res, interpret(prog.graph, feeds, state), what=name)


def test_resnet18_cifar_three_steps_bdwp():
    """Three steps, each from the reference's state: the program's own fp32 trajectory
    drifts from the reference's by rounding, and a drift of 1e-7 can flip a ReLU or an N:M
    mask one step later (then a gradient moves by that element's product, far above 1e-5)."""
    prog = _compiled("resnet18_cifar", "bdwp:2:8")
    state = prog.graph.initial_state()
    x, y = _data("resnet18_cifar")
    feeds = {"x": x.numpy(), "y": y.numpy()}
    for step in range(3):
        prog.state = {k: v.copy() for k, v in state.items()}
        res = prog.step(x, y)
        ref = interpret(prog.graph, feeds, state)
        _check_step(prog, res, ref, scaled_atol=step > 0, what=f"step {step}")
        state = ref.new_state


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_resnet18_imagenet_stem(sparsity):
    """7x7/2 stem, 3x3/2 padded max-pool, strided 3x3 and 1x1 convs (64x64 images)."""
    prog, res, feeds, state = _step("resnet18", sparsity)
    ops = {n.op for n in prog.graph.nodes}
    assert {"maxpool2d", "maxpool2d_grad", "global_avgpool", "global_avgpool_grad"} <= ops
    _check_step(prog, res, interpret(prog.graph, feeds, state), scaled_atol=True, what="resnet18")


def test_imagenet_stem_gradient_is_order_limited():
    """Why the ImageNet stem needs a scaled atol: the fp32 reference's stem gradient is
    more than 1e-5 off the float64 result, and the emulator is as close to it (within 1.2x:
    which of the two fp32 sums is closer depends on the CPU's BLAS; 1.04x on an AVX2 EPYC)."""
    prog, res, feeds, state = _step("resnet18", "dense")
    r32 = interpret(prog.graph, feeds, state)
    r64 = interpret(prog.graph, feeds, state, compute_dtype="float64")
    k = "stem.0.weight"
    ref_err = np.abs(r32.grads[k] - r64.grads[k]).max()
    ours_err = np.abs(res.grads[k] - r64.grads[k]).max()
    assert ref_err > ATOL and ours_err < 1.2 * ref_err


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_resnet50_cifar_against_float64(sparsity):
    """Bottleneck blocks, strided 1x1 shortcuts. The fp32 reference is itself farther than the
    fp32 tolerance from the float64 result, so the step is checked against float64: every
    gradient and state within 5e-4 of the tensor's scale and no more than twice as far as the
    fp32 reference; the pruned W_ff / W_bp (whose masks flip on any rounding) must equal
    prune(our own new weight) exactly."""
    prog, res, feeds, state = _step("resnet50_cifar", sparsity)
    r32 = interpret(prog.graph, feeds, state)
    r64 = interpret(prog.graph, feeds, state, compute_dtype="float64")
    ours_worst = ref_worst = 0.0
    for kind, got, ref32, exact in (("grad", res.grads, r32.grads, r64.grads),
                                    ("state", prog.state, r32.new_state, r64.new_state)):
        for k, want in exact.items():
            if k.endswith((".ff", ".bp")):
                w = prog.state[k[:-3]]
                pruned = np.where(nm_mask(w, 2, 8, 1 if k.endswith(".ff") else 0), w, 0)
                np.testing.assert_array_equal(got[k], pruned, err_msg=f"{kind} {k}")
                continue
            scale = max(1.0, float(np.abs(want).max()))
            ours = float(np.abs(got[k] - want).max()) / scale
            assert ours <= 5e-4, f"{kind} {k}: {ours:.2e} of its scale off float64"
            ours_worst = max(ours_worst, ours)
            ref_worst = max(ref_worst, float(np.abs(ref32[k] - want).max()) / scale)
    assert ref_worst > ATOL and ours_worst <= 2 * ref_worst
    assert abs(res.loss - r64.loss) <= 1e-4 * abs(r64.loss)


def test_strided_programs_order_every_hazard_and_reuse_dram():
    """Tokens order every memory hazard (DRAM reuse included) and the pool is smaller than
    one region per intermediate would be."""
    prog = _compiled("resnet18", "bdwp:2:8")
    p = prog.program
    assert unordered_hazards(p.instructions, {"dram": p.dram_size, **p.config.buffer_bytes}) == []
    made = sum(int(np.prod(v.shape)) * 4 for n in prog.graph.nodes for v in n.outputs)
    assert 0 < prog.plan.pool_bytes < made / 2


def test_compile_is_deterministic_with_strides():
    torch.manual_seed(0)
    model = get_model("resnet18", **CASES["resnet18"][0])
    x, _ = _data("resnet18")
    again = satc.compile(model, example_inputs=(x,), sparsity="bdwp:2:8", hw="sat-small",
                         optimizer=satc.SGD(lr=0.05, momentum=0.9, weight_decay=5e-4))
    first = _compiled("resnet18", "bdwp:2:8")
    first.state = again.graph.initial_state()          # other tests step the cached program
    assert again.program.to_bytes() == first.program.to_bytes()


@pytest.mark.slow
def test_resnet50_imagenet_batch8_compiles_for_vcu1525():
    """ResNet-50 at 224x224, batch 8, bdwp:2:8 fits the 4 GiB DRAM of sat-vcu1525."""
    prog = satc.compile("resnet50", input_shapes={"x": (8, 3, 224, 224)}, sparsity="bdwp:2:8",
                        hw="sat-vcu1525", optimizer=satc.SGD(lr=0.1, momentum=0.9))
    assert prog.program.dram_size < prog.config.dram_bytes
    assert len(prog.program.instructions) > 0
