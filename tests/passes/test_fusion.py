"""fuse_batchnorm: batchnorm's gradient pair becomes one node, batchnorm -> [add ->] relu
becomes batchnorm_relu; fuse_matmul_bias: matmul -> bias_add becomes matmul_bias and the
weight-gradient matmul with its bias_grad matmul_bias_grad. The
interpreted step is the same and the SAT program moves fewer bytes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

import pytest
import torch
from torch import nn

import satc
from satc.backends.sat.codegen import generate
from satc.backends.sat.config import load_hardware
from satc.passes.fusion import fuse_batchnorm, fuse_matmul_bias
from tests.passes import assert_same_interpretation


class _Block(nn.Module):
    """A ResNet basic block with a projection shortcut, and a BN whose output is read twice."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.sc, self.bs = nn.Conv2d(4, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.c3, self.b3 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.b1(self.c1(x)))
        h = torch.relu(self.b2(self.c2(h)) + self.bs(self.sc(x)))
        t = self.b3(self.c3(h))                     # read by the relu and by the add: not fused
        return self.fc((torch.relu(t) + t).flatten(1))


def _training_graph():
    torch.manual_seed(0)
    x = torch.randn(4, 4, 4, 4) * 2 + 0.5
    tg = satc.build_training_graph(satc.import_torch(_Block(), (x,)))
    return tg, {"x": x.numpy(), "y": np.array([1, 0, 3, 9])}


def test_fusion_rewrites_the_block_and_keeps_every_number():
    tg, feeds = _training_graph()
    fg = fuse_batchnorm(tg)
    ops = [n.op for n in fg.nodes]
    fused = [n for n in fg.nodes if n.op == "batchnorm_relu"]
    # b1 + relu; b2 + add(shortcut BN) + relu; b3 (two readers) and the shortcut BN stay
    assert sorted(len(n.inputs) for n in fused) == [5, 6]
    assert ops.count("batchnorm") == 2
    residual = next(n for n in fused if len(n.inputs) == 6).inputs[5]
    assert residual.producer.op == "batchnorm" and residual.producer.layer == "bs"
    # every gradient pair merged: one batchnorm_grad per BN, no halves left
    assert ops.count("batchnorm_grad") == 4
    assert "batchnorm_grad_input" not in ops and "batchnorm_grad_params" not in ops
    # the relu_grads of h1 (c2's input) and h2 (c3's input) fold into those input gradients;
    # relu(t)'s gradient comes from the add, not from a conv, and stays
    folded = [n for n in fg.nodes if n.op == "conv2d_grad_input" and n.attrs.get("relu_grad")]
    assert sorted(n.layer for n in folded) == ["c2", "c3"]
    assert [len(n.inputs) for n in folded] == [3, 3]
    assert ops.count("relu_grad") == 1
    # 8 gradient halves -> 4 nodes; b1 + relu (2 -> 1), b2 + add + relu (3 -> 1), 2 relu_grads
    assert len(fg.nodes) == len(tg.nodes) - 4 - 1 - 2 - 2
    assert_same_interpretation(tg, fg, feeds)


def test_fusion_is_idempotent_and_leaves_a_lone_gradient_half():
    tg, _ = _training_graph()
    once = fuse_batchnorm(tg)
    assert [n.op for n in fuse_batchnorm(once).nodes] == [n.op for n in once.nodes]
    # a BN on the graph input has no input gradient: its parameter half stays as it is
    x = torch.randn(4, 4, 2, 2)
    model = nn.Sequential(nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(16, 10))
    g = fuse_batchnorm(satc.build_training_graph(satc.import_torch(model, (x,))))
    ops = [n.op for n in g.nodes]
    assert "batchnorm_grad_params" in ops and "batchnorm_grad" not in ops
    assert "batchnorm_relu" in ops


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_fused_block_trains_like_the_interpreter_and_moves_fewer_bytes(sparsity):
    from tests.satc.test_compile import check_steps
    torch.manual_seed(0)
    x, y = torch.randn(4, 4, 4, 4) * 2 + 0.5, torch.randint(0, 10, (4,))
    prog = satc.compile(_Block(), example_inputs=(x,), sparsity=sparsity, hw="sat-small")
    assert "batchnorm_relu" in {n.op for n in prog.graph.nodes}
    check_steps(prog, x.numpy(), y.numpy(), 2)
    # the same training graph without the fusion stores the BN and add outputs as well
    cfg = load_hardware("sat-small")
    tg = satc.sparsify(satc.build_training_graph(satc.import_torch(_Block(), (x,))), sparsity)
    plain = generate(tg, cfg).program.instructions
    dram = sum(i.rows * i.cols * max(i.planes, 1) for i in plain if i.op == "store")
    fused = sum(i.rows * i.cols * max(i.planes, 1) for i in prog.program.instructions
                if i.op == "store")
    assert fused < dram


class _Skip(nn.Module):
    """A relu output read by the next conv and by an identity skip: its gradient is a sum
    read only by the relu_grad."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.b1(self.c1(x)))
        return self.fc(torch.relu(self.b2(self.c2(h)) + h).flatten(1))


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_gradient_sum_folds_into_its_relu_grad(sparsity):
    """The skip's gradient sum (c2's input gradient + the block tail's relu_grad) is read only
    by h's relu_grad, which becomes relu_grad(dy, y, term) and then folds into c2's input
    gradient: conv2d_grad_input(dy, w, h, term). The step trains like the interpreter and
    stores neither the sum nor c2's unmasked dX."""
    from tests.satc.test_compile import check_steps
    from satc.passes.fusion import _fuse_gradient_sums
    torch.manual_seed(0)
    x, y = torch.randn(4, 4, 4, 4) * 2 + 0.5, torch.randint(0, 10, (4,))
    tg = satc.build_training_graph(satc.import_torch(_Skip(), (x,)))
    summed = tg.clone()
    _fuse_gradient_sums(summed)
    assert sorted(len(n.inputs) for n in summed.nodes if n.op == "relu_grad") == [2, 3]
    fg = fuse_batchnorm(tg)
    assert [len(n.inputs) for n in fg.nodes if n.op == "relu_grad"] == [2]    # the tail's
    (conv,) = [n for n in fg.nodes if n.op == "conv2d_grad_input" and n.attrs.get("relu_grad")]
    assert conv.layer == "c2" and [v.name for v in conv.inputs[2:3]] == ["relu"]
    assert conv.inputs[3].producer.op == "relu_grad" and len(conv.inputs) == 4
    assert "sum" in {n.op for n in tg.nodes} and "sum" not in {n.op for n in fg.nodes}
    assert [n.op for n in fuse_batchnorm(fg).nodes] == [n.op for n in fg.nodes]
    assert_same_interpretation(tg, fg, {"x": x.numpy(), "y": y.numpy()})
    assert_same_interpretation(tg, summed, {"x": x.numpy(), "y": y.numpy()})
    prog = satc.compile(_Skip(), example_inputs=(x,), sparsity=sparsity, hw="sat-small")
    check_steps(prog, x.numpy(), y.numpy(), 2)
    # c2's input gradient loads the term into its C tiles and masks them by h before the
    # store; nothing else stores or reads h's gradient
    ins = prog.program.instructions
    c2 = [i for i, lab in zip(ins, prog.labels) if lab == "c2/BP/conv2d_grad_input"]
    assert {i.func for i in c2 if i.op == "vec"} == {"relu_grad"}
    assert sum(i.op == "load" and i.buf == "acc" for i in c2) >= 1
    stored = {lab.split("/")[2] for i, lab in zip(ins, prog.labels) if i.op == "store"}
    assert "sum" not in stored


class _Linears(nn.Module):
    """A conv with a bias (axis 1: not a matmul, not fused), then two Linears with biases."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(4 * 4 * 4, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1))))


def _linears_graph():
    torch.manual_seed(0)
    x = torch.randn(4, 2, 4, 4)
    tg = satc.build_training_graph(satc.import_torch(_Linears(), (x,)))
    return x, tg, {"x": x.numpy(), "y": np.array([1, 0, 3, 9])}


def test_matmul_bias_fusion_merges_each_linear_and_keeps_every_number():
    x, tg, feeds = _linears_graph()
    fg = fuse_matmul_bias(tg)
    fused = [n for n in fg.nodes if n.op == "matmul_bias"]
    assert sorted(n.layer for n in fused) == ["fc1", "fc2"]
    assert all(n.attrs.get("trans_b") for n in fused)
    # each Linear's weight gradient takes its bias gradient; the conv's bias (axis 1) becomes
    # the conv's third input, its bias_grad stays, as do the input-gradient matmuls (fc1, fc2 BP)
    grads = [n for n in fg.nodes if n.op == "matmul_bias_grad"]
    assert sorted(n.layer for n in grads) == ["fc1", "fc2"]
    assert [tuple(v.shape) for n in grads for v in n.outputs] == [(10, 32), (10,), (32, 64), (32,)]
    assert not [n for n in fg.nodes if n.op == "bias_add"]
    (conv,) = [n for n in fg.nodes if n.op == "conv2d"]
    assert conv.layer == "conv" and conv.inputs[2].name == "conv.bias"
    assert [n.layer for n in fg.nodes if n.op == "bias_grad"] == ["conv"]
    assert [n.stage for n in fg.nodes if n.op == "matmul"] == ["BP", "BP"]
    assert len(fg.nodes) == len(tg.nodes) - 5
    # every reader of a fused output comes after the node that now defines it
    pos = {id(n): i for i, n in enumerate(fg.nodes)}
    for n in grads:
        for r in (u for u in fg.nodes for v in n.outputs if v in u.inputs):
            assert pos[id(r)] > pos[id(n)]
    assert [n.op for n in fuse_matmul_bias(fg).nodes] == [n.op for n in fg.nodes]
    assert_same_interpretation(tg, fg, feeds)


def test_forward_matmul_row_tiles_are_bounded_to_a_quarter_of_m():
    """Hand count: 2080 forward rows may take M tiles of at most 2080 // 4 = 520 rows (the
    search's power-of-two candidates: 512); 300 rows at most 256; a BP / WU node and a
    forward node of at most 256 rows are not bounded."""
    from satc.backends.sat.codegen.tiling import FF_MIN_ROW_TILE, ff_row_tile_bound
    from satc.ir.types import Stage
    ff, bp, wu = (SimpleNamespace(stage=s) for s in (Stage.FF, Stage.BP, Stage.WU))
    assert ff_row_tile_bound(ff, 2080) == 520
    assert ff_row_tile_bound(ff, 300) == FF_MIN_ROW_TILE == 256
    assert ff_row_tile_bound(ff, 256) == 0
    assert ff_row_tile_bound(bp, 2080) == 0 == ff_row_tile_bound(wu, 2080)


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_matmul_bias_trains_like_the_interpreter(sparsity):
    """Forward bias added in the accumulators, bias gradient from the weight gradient's dy
    tiles: two emulated steps equal the interpreter (every gradient, all state)."""
    from tests.satc.test_compile import check_steps
    x, _, feeds = _linears_graph()
    prog = satc.compile(_Linears(), example_inputs=(x,), sparsity=sparsity, hw="sat-small")
    assert {n.layer for n in prog.graph.nodes if n.op == "matmul_bias"} == {"fc1", "fc2"}
    check_steps(prog, feeds["x"], feeds["y"], 2)
    ins = prog.program.instructions
    # each bias is loaded once, one row into vec, and added to every C tile in the accumulators
    assert not [i for i in ins if i.op == "load" and i.buf == "acc" and i.dram_row_stride == 0]
    for sp in (sp for sp in prog.spans if sp.node.op == "matmul_bias"):
        own = ins[sp.start:sp.end]
        c_stores = [i for i in own if i.op == "store" and i.buf == "acc"]
        bias_adds = [i for i in own if i.op == "vec" and i.func == "add" and i.bcast == "row"
                     and i.d_buf == "acc"]
        assert c_stores and len(bias_adds) == len(c_stores)
        assert [i.rows for i in own if i.op == "load" and i.buf == "vec"] == [1]
    assert {n.layer for n in prog.graph.nodes if n.op == "matmul_bias_grad"} == {"fc1", "fc2"}
    # the bias gradients are column sums of the dy tiles in the GEMM's A buffer
    assert any(i.op == "vec" and i.func == "reduce_sum" and i.axis == 0 and i.s0_buf == "act"
               for i in ins)
    # unfused, the same graph adds each bias as a node of its own: the product's round trip
    # through DRAM (a store and a load of it more)
    cfg = load_hardware("sat-small")
    tg = satc.sparsify(satc.build_training_graph(satc.import_torch(_Linears(), (x,))), sparsity)
    plain = generate(tg, cfg).program.instructions
    dma = lambda prog: sum(i.op in ("load", "store") for i in prog)   # noqa: E731
    assert dma(ins) < dma(plain)


class _PreNorm(nn.Module):
    """An input Linear, a pre-norm residual MLP block on tokens, a final norm and a
    token-mean head: norm1's dx is read only by the residual gradient sum; the final norm's
    by that sum and by fc2's gradients (not folded)."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.inp, self.norm1, self.norm = nn.Linear(d, d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.fc1, self.fc2, self.head = nn.Linear(d, 16), nn.Linear(16, d), nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.fc2(torch.relu(self.fc1(self.norm1(h))))
        return self.head(self.norm(h).mean(1))


def _prenorm_graph():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 8) * 3 + 1.0
    return x, satc.build_training_graph(satc.import_torch(_PreNorm(), (x,)))


def test_layernorm_gradient_pairs_and_sums_fuse_and_keep_every_number():
    from satc.passes.fusion import fuse_layernorm
    x, tg = _prenorm_graph()
    y = np.array([1, 0, 3, 9])
    fg = fuse_layernorm(tg)
    grads = {n.layer: len(n.inputs) for n in fg.nodes if n.op == "layernorm_grad"}
    assert grads == {"norm": 5, "norm1": 6}        # norm1: dx + the residual's term
    ops = [n.op for n in fg.nodes]
    assert not {"layernorm_grad_input", "layernorm_grad_params"} & set(ops)
    # 2 pairs -> 2 nodes, one sum folded
    assert len(fg.nodes) == len(tg.nodes) - 3
    pos = {id(n): i for i, n in enumerate(fg.nodes)}
    for n in fg.nodes:                             # every value defined before it is read
        for v in n.inputs:
            assert v.producer is None or pos[id(v.producer)] < pos[id(n)], (n.name, v.name)
    assert [n.op for n in fuse_layernorm(fg).nodes] == ops
    assert_same_interpretation(tg, fg, {"x": x.numpy(), "y": y})


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_fused_layernorm_trains_like_the_interpreter(sparsity):
    """Two emulated steps of the fused program equal the interpreter (every gradient, all
    state); the folded sum is never stored and the norm's backward reads x and dy once."""
    from tests.satc.test_compile import check_steps
    x, _ = _prenorm_graph()
    y = np.array([1, 0, 3, 9])
    prog = satc.compile(_PreNorm(), example_inputs=(x,), sparsity=sparsity, hw="sat-small")
    check_steps(prog, x.numpy(), y, 2)
    ins = prog.program.instructions
    vec = [i.func for i, lab in zip(ins, prog.labels)
           if i.op == "vec" and lab.startswith("norm1/") and lab.endswith("/layernorm_grad")
           and i.rows * i.cols == 24 * 8]
    # xhat, (dbeta, dgamma) sums, g = dy * gamma, row sums, dx affine, dx += g * invstd
    assert vec == ["affine", "reduce_sum_dot", "mul", "reduce_sum_dot", "affine", "mul"]
    fwd = [i.func for i, lab in zip(ins, prog.labels)
           if i.op == "vec" and lab == "norm1/FF/layernorm" and i.rows * i.cols == 24 * 8]
    assert fwd == ["reduce_sum", "reduce_sqdev", "affine", "affine"]


class _Residual(nn.Module):
    """A residual MLP block whose second Linear's output passes a dropout (the identity in
    the compiled step) before the residual add."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.inp, self.fc1, self.fc2 = nn.Linear(d, d), nn.Linear(d, 16), nn.Linear(16, d)
        self.drop, self.head = nn.Dropout(0.1), nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.drop(self.fc2(torch.relu(self.fc1(h))))
        return self.head(h.mean(1))


def _token_graphs(model: nn.Module):
    """(x, the training graph of ``model`` on [4, 6, 8] tokens, that graph after fuse_matmul_bias)."""
    torch.manual_seed(0)
    x = torch.randn(4, 6, 8)
    tg = satc.build_training_graph(satc.import_torch(model, (x,)))
    return x, tg, fuse_matmul_bias(tg)


def test_residual_add_folds_into_matmul_bias():
    x, tg, fg = _token_graphs(_Residual())
    fc2 = next(n for n in fg.nodes if n.layer == "fc2" and n.op == "matmul_bias")
    h = next(n for n in fg.nodes if n.layer == "inp" and n.op == "matmul_bias").outputs[0]
    assert len(fc2.inputs) == 4 and fc2.inputs[3] is h          # a @ W + b + residual
    ff = [n.op for n in fg.nodes if str(n.stage) == "FF"]
    assert "add" not in ff and "dropout" not in ff              # both folded into fc2's node
    assert sum(n.op == "matmul_bias" and len(n.inputs) == 4 for n in fg.nodes) == 1
    assert_same_interpretation(tg, fg, {"x": x.numpy(), "y": np.array([1, 0, 3, 9])})


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_residual_matmul_bias_trains_like_the_interpreter(sparsity):
    """Two emulated steps equal the interpreter; fc2's C tiles start as the residual rows (a
    DMA of rows of 8, not a repeated bias row) and its bias is added on the vector unit."""
    from tests.satc.test_compile import check_steps
    torch.manual_seed(0)
    x = torch.randn(4, 6, 8)
    prog = satc.compile(_Residual(), example_inputs=(x,), sparsity=sparsity, hw="sat-small")
    check_steps(prog, x.numpy(), np.array([1, 0, 3, 9]), 2)
    fc2 = [i for i, lab in zip(prog.program.instructions, prog.labels) if lab == "fc2/FF/matmul_bias"]
    assert any(i.op == "load" and i.buf == "acc" and i.dram_row_stride == 8 for i in fc2)
    assert not any(i.op == "load" and i.buf == "acc" and i.dram_row_stride == 0 for i in fc2)
    assert any(i.op == "vec" and i.func == "add" and i.bcast == "row" and i.d_buf == "acc"
               for i in fc2)
    assert not any(lab.endswith("/FF/add") for lab in prog.labels)


class _GeluMLP(nn.Module):
    """Linear, exact GELU, Linear: the GELU's input is also read by its gradient."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, 16), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x))).mean(1)


def test_gelu_becomes_a_matmul_bias_epilogue():
    x, tg, fg = _token_graphs(_GeluMLP())
    fc1 = next(n for n in fg.nodes if n.layer == "fc1" and n.op == "matmul_bias")
    assert fc1.attrs["gelu"] and len(fc1.outputs) == 2
    users = fg.users()
    assert {u.op for u in users[id(fc1.outputs[0])]} == {"gelu_grad"}     # the product
    assert "matmul_bias" in {u.op for u in users[id(fc1.outputs[1])]}      # gelu -> fc2
    assert "gelu" not in [n.op for n in fg.nodes]
    assert [n.op for n in fuse_matmul_bias(fg).nodes] == [n.op for n in fg.nodes]
    assert_same_interpretation(tg, fg, {"x": x.numpy(), "y": np.array([1, 0, 3, 9])})


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_gelu_epilogue_trains_like_the_interpreter(sparsity):
    """Two emulated steps equal the interpreter; fc1 stores each C tile twice, the product
    and its GELU computed in place in the accumulators, and nothing loads the product in FF."""
    from tests.satc.test_compile import check_steps
    torch.manual_seed(0)
    x = torch.randn(4, 6, 8)
    prog = satc.compile(_GeluMLP(), example_inputs=(x,), sparsity=sparsity, hw="sat-small")
    check_steps(prog, x.numpy(), np.array([1, 0, 3, 9]), 2)
    fc1 = [i for i, lab in zip(prog.program.instructions, prog.labels) if lab == "fc1/FF/matmul_bias"]
    gelus = [i for i in fc1 if i.op == "vec" and i.func == "gelu"]
    assert gelus and all(i.s0_buf == i.d_buf == "acc" for i in gelus)
    assert sum(i.op == "store" for i in fc1) == 2 * len(gelus)
    assert not any("/FF/gelu" in lab for lab in prog.labels)


class _Streamed(nn.Module):
    """BN-ReLU-conv chains whose batchnorm tensors do not fit sat-small's 64 KiB vector buffer
    (4 x 32 x 16 x 16 fp32 = 128 KiB): a stride-1 input gradient (c2) and a strided one (c3)
    fold the relu_grad and compute the sums of the batchnorm before them (b1, b2)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.c2, self.b2 = nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.c3, self.b3 = nn.Conv2d(32, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.b1(self.c1(x)))
        h = torch.relu(self.b2(self.c2(h)))
        return self.fc(torch.relu(self.b3(self.c3(h))).flatten(1))


def test_batchnorm_grad_stats_fold_only_where_the_tensors_stream():
    """fuse_batchnorm_grad_stats moves the sums of b1 and b2 into the input gradients of c2 and
    c3 when x and dy exceed the on-chip bytes, and leaves the graph alone when they fit; the
    interpreted step is unchanged (the sums as computed in the conv equal the batchnorm's)."""
    from satc.passes.fusion import fuse_batchnorm_grad_stats
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    tg = fuse_batchnorm(satc.build_training_graph(satc.import_torch(_Streamed(), (x,))))
    fg = fuse_batchnorm_grad_stats(tg, 64 * 1024)
    convs = {n.layer: n for n in fg.nodes if n.op == "conv2d_grad_input"}
    assert {k for k, n in convs.items() if n.attrs.get("bn_stats")} == {"c2", "c3"}
    for conv, bn in (("c2", "b1"), ("c3", "b2")):
        node = convs[conv]
        (grad,) = [n for n in fg.nodes if n.op == "batchnorm_grad" and n.layer == bn]
        assert grad.inputs[0] is node.outputs[0] and grad.inputs[5] is node.outputs[1]
        assert list(node.inputs[3:6]) == [grad.inputs[1], grad.inputs[3], grad.inputs[4]]
        assert tuple(node.outputs[1].shape) == (32, 2)
    (b3,) = [n for n in fg.nodes if n.op == "batchnorm_grad" and n.layer == "b3"]
    assert len(b3.inputs) == 5                          # dy from the fc: no conv to fold into
    assert [n.op for n in fuse_batchnorm_grad_stats(tg, 1 << 20).nodes] == [n.op for n in tg.nodes]
    assert all(not n.attrs.get("bn_stats") for n in fuse_batchnorm_grad_stats(tg, 1 << 20).nodes)
    # the sums are fp32 values now (the batchnorm kept them in fp64): equal to fp32 rounding
    state, feeds = tg.initial_state(), {"x": x.numpy(), "y": y.numpy()}
    a, b = satc.interpret(tg, feeds, state), satc.interpret(fg, feeds, state)
    assert a.new_state.keys() == b.new_state.keys()
    for k in a.new_state:
        np.testing.assert_allclose(b.new_state[k], a.new_state[k], rtol=1e-5, atol=1e-7, err_msg=k)
    np.testing.assert_allclose(b.outputs["loss"], a.outputs["loss"], rtol=1e-6)


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_batchnorm_grad_stats_train_like_the_interpreter(sparsity):
    """Compiled for sat-small, the folded sums (stride-1 and strided input gradients) train
    like the interpreter, and each folded batchnorm_grad loads x and dy once: the loads of
    b1's and b2's gradients are exactly one pass over the two tensors plus the vectors."""
    from tests.satc.test_compile import check_steps
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    prog = satc.compile(_Streamed(), example_inputs=(x,), sparsity=sparsity, hw="sat-small",
                        exclude=["fc"])          # 2048-wide rows: over sat-small's SORE tiles
    assert {n.layer for n in prog.graph.nodes if n.attrs.get("bn_stats")} == {"c2", "c3"}
    check_steps(prog, x.numpy(), y.numpy(), 2)
    ins = prog.program.instructions
    for bn in ("b1", "b2"):
        loads = [i for i, lab in zip(ins, prog.labels)
                 if lab == f"{bn}/BP/batchnorm_grad" and i.op == "load"]
        planes = sum(i.rows * i.cols * i.planes for i in loads if i.planes > 1)
        # x and dy (4 x 32 x 16 x 16 each) once; gamma, mean, invstd (32 each), the sums (32 x 2)
        assert planes == 2 * 4 * 32 * 16 * 16
        assert sorted((i.rows, i.cols) for i in loads if i.cols in (2, 32)) == \
            [(1, 32)] * 3 + [(32, 2)]


class _Scores(nn.Module):
    """Attention scores with the query scaled (0.125, exact in fp32, so the fold is
    bit-identical) and a scale of a product whose other reader keeps it (0.3: not folded)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (self.q(x) * 0.125) @ self.k(x).transpose(1, 2)
        h = torch.softmax(s, -1) @ self.v(x)
        return self.head((h * 0.3 + h).mean(1))


def test_scales_fold_into_their_matmuls():
    """Q * 0.125 is read by S = Q K^T and by the gradient dK = dS^T Q: both take alpha 0.125
    and read Q; dQ = scale(dS @ K) becomes that matmul with alpha 0.125; the scaled context
    (read by an add) and its gradient (an operand of the add's gradient sum) stay, as does
    the token mean's gradient scale."""
    from satc.passes.fusion import fold_matmul_scales
    x, tg, fg = _token_graphs(_Scores())
    sg = fold_matmul_scales(fg)
    mean = 1 / 6                                  # the token mean's gradient: not a matmul's
    assert sorted(n.attrs["factor"] for n in fg.nodes if n.op == "scale") == \
        [0.125, 0.125, mean, 0.3, 0.3]
    assert sorted(n.attrs["factor"] for n in sg.nodes if n.op == "scale") == [mean, 0.3, 0.3]
    scaled = [n for n in sg.nodes if n.op == "matmul" and "alpha" in n.attrs]
    assert [n.attrs["alpha"] for n in scaled] == [0.125] * 3
    q = next(n for n in sg.nodes if n.layer == "q" and n.op == "matmul_bias").outputs[0]
    assert sorted(str(n.stage) for n in scaled if q in n.inputs) == ["BP", "FF"]
    assert [n.op for n in fold_matmul_scales(sg).nodes] == [n.op for n in sg.nodes]
    assert_same_interpretation(fg, sg, {"x": x.numpy(), "y": np.array([1, 0, 3, 9])})


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_folded_scales_train_like_the_interpreter(sparsity):
    """Two emulated steps equal the interpreter; each matmul with alpha multiplies every C
    tile by it in the accumulators before the store (one mul_imm per tile store), and no
    node of its own loads and stores the scaled query."""
    from tests.satc.test_compile import check_steps
    torch.manual_seed(0)
    x = torch.randn(4, 6, 8)
    prog = satc.compile(_Scores(), example_inputs=(x,), sparsity=sparsity, hw="sat-small")
    check_steps(prog, x.numpy(), np.array([1, 0, 3, 9]), 2)
    ins = prog.program.instructions
    alpha = [sp for sp in prog.spans if sp.node.attrs.get("alpha")]
    assert len(alpha) == 3
    for sp in alpha:
        body = ins[sp.start:sp.end]
        scales = [i for i in body if i.op == "vec" and i.func == "mul_imm"]
        assert scales and all(i.s0_buf == i.d_buf == "acc" and i.imm == 0.125 for i in scales)
        assert len(scales) == sum(i.op == "store" for i in body)
    assert sorted(sp.node.attrs["factor"] for sp in prog.spans if sp.node.op == "scale") \
        == [1 / 6, 0.3, 0.3]


class _Pooled(nn.Module):
    """conv -> BN -> relu -> maxpool -> conv, with a 2x2 and an overlapping padded 3x3 pool."""

    def __init__(self, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(kernel, stride, padding)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.c2(self.pool(torch.relu(self.b1(self.c1(x)))))).flatten(1))


@pytest.mark.parametrize("pool", [(2, 2, 0), (3, 2, 1)])
@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_relu_mask_moves_before_the_maxpool_gradient(pool, sparsity):
    """relu_grad(maxpool2d_grad(dz, y), y) becomes maxpool2d_grad(relu_grad(dz, p), y) with
    p = maxpool2d(y), and that relu_grad folds into c2's input gradient: bit-identical
    steps (many relu outputs are 0, so pool windows tie), and the SAT step trains like the
    interpreter."""
    from tests.satc.test_compile import check_steps
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 8, 8) - 0.5, torch.randint(0, 10, (4,))
    tg = satc.build_training_graph(satc.import_torch(_Pooled(*pool), (x,)))
    fg = fuse_batchnorm(tg)
    (mp,) = [n for n in fg.nodes if n.op == "maxpool2d_grad"]
    conv = mp.inputs[0].producer
    assert conv.op == "conv2d_grad_input" and conv.attrs.get("relu_grad") and conv.layer == "c2"
    assert conv.inputs[2].producer.op == "maxpool2d"           # masked by the pooled map
    assert mp.inputs[1].producer.op == "batchnorm_relu"
    assert [n.op for n in fg.nodes].count("relu_grad") == 1      # c2's relu (fed by fc) only
    assert_same_interpretation(tg, fg, {"x": x.numpy(), "y": y.numpy()})
    prog = satc.compile(_Pooled(*pool), example_inputs=(x,), sparsity=sparsity, hw="sat-small")
    check_steps(prog, x.numpy(), y.numpy(), 2)
