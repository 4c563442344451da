"""satc.pipeline: the one pass list, the one model loader, verification between passes."""

from __future__ import annotations

import gc

import pytest
import torch

import satc
import satc.backends.sat.codegen as codegen_pkg
from satc.errors import CompileError, IRError
from satc.ir.graph import Graph
from satc.models import get_model
from satc.pipeline import IR_PASSES, CompileOptions, codegen, load_model, run_passes


def _forward() -> Graph:
    return load_model("mlp", input_shapes={"x": (4, 1, 8, 8)}).graph


def test_print_after_shows_every_pass_and_the_tile_plan(capsys):
    options = CompileOptions(sparsity="bdwp:2:8", hw="sat-small", print_after=True)
    g = run_passes(_forward(), options)
    codegen(g, options)
    out = capsys.readouterr().out
    for p in IR_PASSES:
        assert f"// ----- IR after {p.name} -----" in out
    assert "// ----- tile plan -----" in out
    assert out.count("matmul") > 0


def test_run_passes_until_stops_after_that_pass():
    g = run_passes(_forward(), CompileOptions(sparsity="bdwp:2:8"), until="sparsify")
    assert g.meta["sparsity"].format()
    with pytest.raises(CompileError, match="no pass named 'tile'"):
        run_passes(_forward(), CompileOptions(), until="tile")


def test_a_ready_training_graph_refuses_sparsity_and_optimizer():
    tg = run_passes(_forward(), CompileOptions(sparsity="bdwp:2:8"), until="sparsify")
    with pytest.raises(CompileError, match="already a training graph"):
        satc.compile(tg, sparsity="bdwp:2:4", hw="sat-small")
    with pytest.raises(CompileError, match="already a training graph"):
        satc.compile(tg, optimizer=satc.SGD(lr=0.1), hw="sat-small")
    prog = satc.compile(tg, hw="sat-small")          # as it is: fine
    # the graph as built, but each Linear's matmul + bias_add and its weight-gradient
    # matmul + bias_grad merged by fuse_matmul_bias (three Linears)
    built = {n.name: n for n in tg.nodes}
    fused = [n for n in prog.graph.nodes if n.op in ("matmul_bias", "matmul_bias_grad")]
    assert sorted(n.op for n in fused) == ["matmul_bias"] * 3 + ["matmul_bias_grad"] * 3
    kept = {n.name for n in prog.graph.nodes} - {n.name for n in fused}
    gone = set(built) - kept
    assert kept <= set(built) and len(gone) == 2 * len(fused)
    assert sorted(built[name].op for name in gone) == ["bias_add"] * 3 + ["bias_grad"] * 3 \
        + ["matmul"] * 6


def test_the_verifier_names_the_pass_that_broke_the_ir(monkeypatch):
    import satc.pipeline as pipeline

    def broken(g, o):
        g = g.clone()
        g.nodes.reverse()                            # uses before definitions
        return g
    monkeypatch.setattr(pipeline, "IR_PASSES", (pipeline.Pass("reverse", broken),))
    with pytest.raises(IRError, match="reverse"):
        run_passes(_forward(), CompileOptions())


def test_one_loader_for_zoo_names_modules_and_graphs():
    by_name = load_model("mlp", batch=4)
    torch.manual_seed(0)
    by_module = load_model(get_model("mlp"), example_inputs=(torch.zeros(4, 1, 8, 8),))
    assert by_name.num_classes == by_module.num_classes == 10
    assert [v.shape for v in by_name.graph.inputs] == [v.shape for v in by_module.graph.inputs]
    assert load_model(by_name.graph).graph is by_name.graph
    with pytest.raises(CompileError, match="example_inputs"):
        load_model(get_model("mlp"))


@pytest.mark.parametrize("enabled", [True, False])
def test_codegen_pauses_the_cyclic_gc_and_restores_its_state(monkeypatch, enabled):
    seen = []
    real = codegen_pkg.generate
    monkeypatch.setattr(codegen_pkg, "generate",
                        lambda *a, **k: seen.append(gc.isenabled()) or real(*a, **k))
    options = CompileOptions(sparsity="bdwp:2:8", hw="sat-small")
    g = run_passes(_forward(), options)
    (gc.enable if enabled else gc.disable)()
    try:
        code = codegen(g, options)
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
    assert seen == [False] and len(code.program.instructions) > 0
