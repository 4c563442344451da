"""hoist_updates: each layer's optimizer / pre-generation moves next to its gradient; same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import satc
from satc.backends.sat.codegen import generate
from satc.backends.sat.codegen.partition import buffer_windows
from satc.backends.sat.config import load_hardware
from satc.backends.sat.access import accesses
from satc.ir.types import Stage
from satc.models import get_model, get_spec
from satc.passes.ordering import hoist_updates
from tests.passes import assert_same_interpretation


def _training_graph(spec: str, optimizer):
    torch.manual_seed(0)
    zoo = get_spec("cnn")
    x = torch.randn(4, *zoo.input_shape)
    tg = satc.build_training_graph(satc.import_torch(get_model("cnn"), (x,)), optimizer=optimizer)
    feeds = {"x": x.numpy(), "y": np.array([1, 0, 3, 9])}
    return satc.sparsify(tg, spec), feeds


OPTIMIZERS = [satc.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4), satc.AdamW(lr=1e-3)]


@pytest.mark.parametrize("spec", ["dense", "bdwp:2:8", "ff:2:8"])
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=["sgd", "adamw"])
def test_updates_move_next_to_their_gradient_and_results_stay_equal(spec, opt):
    tg, feeds = _training_graph(spec, opt)
    h = hoist_updates(tg)
    assert sorted(n.name for n in h.nodes) == sorted(n.name for n in tg.nodes)
    pos = {n.name: i for i, n in enumerate(h.nodes)}
    last_bp = max(pos[n.name] for n in h.nodes if n.stage == Stage.BP)
    head = [n for n in h.nodes if n.stage == Stage.OPT and n.layer == "classifier.2"]
    assert head and all(pos[n.name] < last_bp for n in head)     # the last layer updates during BP
    for n in h.nodes:                                            # and right after its inputs
        if n.stage == Stage.OPT and n.inputs[1].producer is not None:
            assert pos[n.name] > pos[n.inputs[1].producer.name]
    assert_same_interpretation(tg, h, feeds)


def test_update_nodes_touch_only_their_buffer_slice():
    cfg = load_hardware("sat-small")
    tg, _ = _training_graph("bdwp:2:8", OPTIMIZERS[0])
    g = hoist_updates(tg)
    code = generate(g, cfg)
    updates = {id(n) for n in g.weight_update_nodes()}
    upd = [n for n in g.nodes if id(n) in updates]
    assert {n.name for n in g.nodes if n.stage == Stage.OPT} <= {n.name for n in upd}
    pregen = [n for n in upd if n.stage == Stage.SORE]         # next step's weights, from new ones
    assert pregen and all(n.inputs[0].producer.stage in (Stage.OPT, Stage.SORE) for n in pregen)
    assert all(n.stage in (Stage.OPT, Stage.SORE) for n in upd)
    inside = {True: buffer_windows(cfg, True), False: buffer_windows(cfg, False)}
    for span in code.spans:
        win = inside[id(span.node) in updates]
        for ins in code.program.instructions[span.start:span.end]:
            for a in accesses(ins):
                if a.space != "dram" and a.extent[1] > a.extent[0]:
                    lo, hi = win[a.space]
                    assert lo <= a.extent[0] and a.extent[1] <= hi, (span.node.name, ins)
