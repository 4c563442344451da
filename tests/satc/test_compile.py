"""satc.compile end to end: emulated training steps equal the reference interpreter."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import pytest
import torch

import satc
from satc.backends.sat.codegen import LOWERINGS
from satc.backends.sat.codegen.tokens import unordered_hazards
from satc.backends.sat.program import Program
from satc.errors import CompileError
from satc.ir.interpreter import interpret
from satc.ir.nm import nm_mask
from satc.ir.ops import registry
from satc.models import get_model

RTOL, ATOL = 1e-4, 1e-5
BATCH = {"mlp": 8, "cnn": 4}


def _data(name: str):
    torch.manual_seed(0)
    x = torch.randn(BATCH[name], 1, 8, 8)
    y = torch.randint(0, 10, (BATCH[name],))
    return x, y


@lru_cache(maxsize=None)
def _module(name: str):
    torch.manual_seed(0)
    return get_model(name)


def _compile(name: str, sparsity: str, hw: str = "sat-small"):
    x, _ = _data(name)
    return satc.compile(_module(name), example_inputs=(x,), sparsity=sparsity, hw=hw,
                        optimizer=satc.SGD(lr=0.05, momentum=0.9, weight_decay=5e-4))


def _close(got, want, what):
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=what)


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8", "ff:2:8", "bdwp-nested:2:8"])
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_three_steps_match_interpreter(name, sparsity):
    x, y = _data(name)
    check_steps(_compile(name, sparsity), x.numpy(), y.numpy(), 3)


def check_steps(prog, x, y, steps: int, extra: dict | None = None) -> None:
    """``steps`` emulated steps equal the interpreter: loss, logits, every gradient, all state
    (``extra``: the program's other inputs by name, such as an attention mask)."""
    feeds = {"x": np.asarray(x), **(extra or {}), "y": np.asarray(y)}
    state = prog.graph.initial_state()
    prog.state = {k: v.copy() for k, v in state.items()}
    for step in range(steps):
        res = prog.step(feeds)
        ref = interpret(prog.graph, feeds, state)
        _close(res.loss, ref.loss, f"step {step} loss")
        _close(res.outputs["logits"], ref.outputs["logits"], f"step {step} logits")
        assert res.grads.keys() == ref.grads.keys()
        for k, g in ref.grads.items():
            _close(res.grads[k], g, f"step {step} grad {k}")
        assert prog.state.keys() == ref.new_state.keys()
        for k, v in ref.new_state.items():       # weights, momentum, BN stats, W_ff / W_bp
            _close(prog.state[k], v, f"step {step} state {k}")
        state = ref.new_state


def test_sparse_gemms_read_the_compressed_state():
    """FF/BP read W_ff / W_bp from their compressed DRAM regions, not from the dense weight."""
    prog = _compile("mlp", "bdwp:2:8")
    names = {r.name for r in prog.program.regions}
    assert {"features.2.weight.ff#val", "features.2.weight.ff#idx",
            "features.2.weight.bp#val", "features.2.weight.bp#idx"} <= names
    assert "features.2.weight.ff" not in names
    assert any(i.op == "gemm" and i.n == 2 and i.m == 8 for i in prog.program.instructions)
    # a W_ff that is NOT prune(W): the step must follow the state, as the interpreter does
    rng = np.random.default_rng(1)
    state = prog.graph.initial_state()
    other = rng.standard_normal(state["features.2.weight"].shape).astype(np.float32)
    state["features.2.weight.ff"] = np.where(nm_mask(other, 2, 8, 1), other, 0).astype(np.float32)
    prog.state = {k: v.copy() for k, v in state.items()}
    x, y = _data("mlp")
    res = prog.step(x, y)
    ref = interpret(prog.graph, {"x": x.numpy(), "y": y.numpy()}, state)
    _close(res.loss, ref.loss, "loss with a foreign W_ff")
    _close(prog.state["features.2.weight.ff"], ref.new_state["features.2.weight.ff"], "new W_ff")


def test_compile_is_deterministic(tmp_path):
    a, b = _compile("cnn", "bdwp:2:8"), _compile("cnn", "bdwp:2:8")
    assert a.program.to_bytes() == b.program.to_bytes()
    a.save(tmp_path / "cnn.satbin")
    b.save(tmp_path / "again.satbin")
    assert (tmp_path / "cnn.satbin").read_bytes() == (tmp_path / "again.satbin").read_bytes()
    assert Program.load(tmp_path / "cnn.satbin").instructions == a.program.instructions


def test_tokens_order_every_memory_hazard():
    prog = _compile("cnn", "bdwp:2:8").program
    sizes = {"dram": prog.dram_size, **prog.config.buffer_bytes}
    assert unordered_hazards(prog.instructions, sizes) == []


def test_cycles_and_per_layer_table():
    prog = _compile("cnn", "bdwp:2:8")
    x, y = _data("cnn")
    res = prog.step(x, y)
    assert res.cycles == res.timing.total_cycles > 0
    stages = {r.stage for r in res.per_layer}
    assert stages == {"FF", "BP", "WU", "OPT", "SORE"}
    assert sum(r.macs for r in res.per_layer) == res.timing.stce_dense_equiv_macs
    assert sum(r.instructions for r in res.per_layer) == len(prog.program.instructions)
    for r in res.per_layer:
        assert r.cycles > 0 and 0.0 <= r.utilisation <= 1.0
    conv = next(r for r in res.per_layer if r.layer == "features.3" and r.stage == "FF")
    assert conv.macs > 0 and conv.ops == ("conv2d",)
    assert "features.3" in satc.compiler.format_per_layer(res.per_layer)


def test_too_small_buffers_name_the_layer_and_the_fix(tmp_path):
    text = (satc.backends.sat.config.PRESET_DIR / "sat-small.toml").read_text()
    for buf in ("act", "wgt", "acc", "vec"):
        text = text.replace(f"{buf}_buffer_bytes = 65536", f"{buf}_buffer_bytes = 256")
    toml = tmp_path / "tiny.toml"
    toml.write_text(text.replace('name = "sat-small"', 'name = "sat-tiny"'))
    x, _ = _data("mlp")
    with pytest.raises(CompileError) as e:
        satc.compile(_module("mlp"), example_inputs=(x,), hw=str(toml))
    msg = str(e.value)
    # the first layer's matmul fits in small tiles; its bias row (128 fp32, added to each C
    # tile on the vector unit) does not fit the 256-byte vec buffer
    assert "layer 'features.0'" in msg and "matmul_bias" in msg and "bias row needs 512" in msg
    assert "fix: raise vec_buffer_bytes" in msg


def test_unsupported_op_is_a_compile_error(monkeypatch):
    g = _compile("mlp", "dense").graph.clone()
    monkeypatch.delitem(LOWERINGS, "relu")      # a forward op without a SAT lowering
    with pytest.raises(CompileError, match="no SAT lowering"):
        satc.compile(g, hw="sat-small")


def _fp16_gemm_reference(monkeypatch):
    """The interpreter with every GEMM operand rounded to fp16 (fp32 accumulate), as SAT does."""
    def r16(a):
        return a.astype(np.float16).astype(np.float32) if a.dtype == np.float32 else a
    for op in ("matmul", "conv2d", "conv2d_grad_input", "conv2d_grad_weight"):
        d = registry.OPS[op]
        monkeypatch.setitem(registry.OPS, op, dataclasses.replace(
            d, kernel=lambda xs, a, k=d.kernel: k([r16(x) for x in xs], a)))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_mixed_precision_vcu1525(name, monkeypatch):
    """sat-vcu1525 (fp16 multiply, fp32 accumulate) vs an fp16-casting reference, each step
    from the same state. Tolerance: 2e-3 of the tensor's largest magnitude (a few fp16 ulps:
    a value that lands on the other side of an fp16 rounding boundary moves by one ulp)."""
    prog = _compile(name, "bdwp:2:8", hw="sat-vcu1525")
    _fp16_gemm_reference(monkeypatch)
    x, y = _data(name)
    check_mixed_steps(prog, x, y, grad_floor=0.0, state_floor=1e-7, check_pruned=True)


def check_mixed_steps(prog, x, y, grad_floor: float, state_floor: float, check_pruned: bool) -> None:
    """Two mixed-precision steps, each from the reference's state: loss within 2e-3 relative,
    every grad / state within 2e-3 of the tensor's largest magnitude plus a floor; the fp16
    ``.ff`` / ``.bp`` values (``check_pruned``) equal the N:M prune of the step's new weight."""
    feeds = {"x": np.asarray(x), "y": np.asarray(y)}
    state = prog.graph.initial_state()
    for step in range(2):
        prog.state = {k: v.copy() for k, v in state.items()}
        res = prog.step(x, y)
        ref = interpret(prog.graph, feeds, state)
        assert abs(res.loss - ref.loss) <= 2e-3 * abs(ref.loss)
        for k, g in ref.grads.items():
            np.testing.assert_allclose(res.grads[k], g, rtol=0,
                                       atol=2e-3 * np.abs(g).max() + grad_floor,
                                       err_msg=f"step {step} grad {k}")
        for k, v in ref.new_state.items():
            if not k.endswith((".ff", ".bp")):
                np.testing.assert_allclose(prog.state[k], v, rtol=0,
                                           atol=2e-3 * np.abs(v).max() + state_floor,
                                           err_msg=f"step {step} state {k}")
            elif check_pruned:                  # fp16 values, pruned from our own new weight
                w = prog.state[k[:-3]]
                axis = 1 if k.endswith(".ff") else 0
                want = np.where(nm_mask(w, 2, 8, axis), w, 0)
                np.testing.assert_allclose(prog.state[k], want, rtol=1e-3, atol=1e-6)
        state = ref.new_state


@pytest.mark.parametrize("model,mode", [("mlp", "bdwp:2:8"), ("cnn", "bdwp:2:8"), ("cnn", "ff:2:8"),
                                        ("cnn", "bdwp-nested:2:8")])
def test_without_pregeneration_sore_runs_inside_the_step_with_the_same_numbers(model, mode):
    """The pre-generation ablation: nm_prune outputs that are not state get their own regions."""
    from satc.passes.sparsify import sparsify

    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    y = np.arange(8) % 10
    tg = satc.build_training_graph(satc.import_torch(get_model(model), (x,)),
                                   optimizer=satc.SGD(lr=0.05, momentum=0.9))
    late = sparsify(tg, mode, pregenerate=False)
    prog = satc.compile(late, hw="sat-small")
    regions = [r for r in prog.program.regions if r.name.endswith(("#val", "#idx"))]
    assert regions and len({r.addr for r in regions}) == len(regions), "each has its own DRAM"
    state = late.initial_state()
    for _ in range(2):
        res = prog.step(x.numpy(), y)
        ref = satc.interpret(late, {"x": x.numpy(), "y": y}, state)
        state = ref.new_state
        assert res.loss == pytest.approx(ref.loss, rel=1e-5)
    for k, v in state.items():
        np.testing.assert_allclose(prog.state[k], v, rtol=1e-4, atol=1e-5, err_msg=k)


def test_nested_bp_weights_are_pruned_from_the_ff_weights():
    """bdwp-nested's W_bp, made on SAT from the compressed W_ff via a DRAM scratch, is
    N:M along Co, zero wherever W_ff is zero, and differs from plain bdwp's W_bp."""
    x, y = _data("mlp")
    progs = {mode: _compile("mlp", mode) for mode in ("bdwp:2:8", "bdwp-nested:2:8")}
    for prog in progs.values():
        prog.step(x.numpy(), y.numpy())
    name = "features.2.weight"
    ff, bp = progs["bdwp-nested:2:8"].state[f"{name}.ff"], progs["bdwp-nested:2:8"].state[f"{name}.bp"]
    assert np.all(bp[ff == 0] == 0)
    assert np.all(nm_mask(bp, 2, 8, 0) | (bp == 0))
    assert not np.array_equal(bp, progs["bdwp:2:8"].state[f"{name}.bp"])


def test_interleave_mapping_saves_stce_cycles_and_keeps_the_numbers():
    """The ablation compiles every GEMM with interleave=0: same results, more STCE cycles."""
    x, y = _data("cnn")
    on = _compile("cnn", "bdwp:2:8", hw="sat-vcu1525")
    off = satc.compile(_module("cnn"), example_inputs=(x,), sparsity="bdwp:2:8", hw="sat-vcu1525",
                       optimizer=satc.SGD(lr=0.05, momentum=0.9, weight_decay=5e-4), interleave=False)
    gemms = [[i for i in p.program.instructions if i.op == "gemm"] for p in (on, off)]
    assert gemms[0] and all(i.interleave == 1 for i in gemms[0])
    assert all(i.interleave == 0 for i in gemms[1])
    r_on, r_off = on.step(x, y), off.step(x, y)
    assert r_on.timing.busy_cycles["stce"] < r_off.timing.busy_cycles["stce"]
    assert r_on.cycles < r_off.cycles
    _close(r_on.loss, r_off.loss, "loss")
    for k, v in off.state.items():
        _close(on.state[k], v, k)
