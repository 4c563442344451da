"""fold_transposes: attention's head split / merge and K^T transposes become GEMM flags and
GEMM store layouts; the interpreted step is the same and the SAT program trains like it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import satc
from satc.errors import ShapeError
from satc.passes.fusion import fuse_matmul_bias
from satc.passes.layout import fold_transposes
from tests.passes import assert_same_interpretation

B, T, D, H = 3, 4, 16, 2


class _Heads(nn.Module):
    """Tokens -> q, k, v Linears -> heads (q scaled after the split, as the zoo's ViT) ->
    softmax(q k^T) v -> merged heads -> proj -> token mean -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.proj = (nn.Linear(D, D) for _ in range(4))
        self.head = nn.Linear(D, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def split(t):
            return t.reshape(B, T, H, D // H).transpose(1, 2)
        q, k, v = split(self.q(x)) * (D // H) ** -0.5, split(self.k(x)), split(self.v(x))
        att = torch.softmax(q @ k.transpose(-2, -1), -1)
        out = (att @ v).transpose(1, 2).reshape(B, T, D)
        return self.head(self.proj(out).mean(1))


def _graph():
    torch.manual_seed(0)
    x = torch.randn(B, T, D)
    tg = fuse_matmul_bias(satc.build_training_graph(satc.import_torch(_Heads(), (x,))))
    return x, tg, {"x": x.numpy(), "y": np.array([1, 0, 3])}


def test_every_attention_transpose_folds_and_the_numbers_stay():
    x, tg, feeds = _graph()
    assert sum(n.op == "transpose" for n in tg.nodes) >= 10
    fg = fold_transposes(tg)
    assert [n for n in fg.nodes if n.op == "transpose"] == []
    ff = [n for n in fg.nodes if n.stage == "FF"]
    assert sorted(n.layer for n in ff if n.attrs.get("split_heads") == H) == ["k", "q", "v"]
    assert sum(bool(n.attrs.get("merge_heads")) for n in ff) == 1
    # K^T became the scores GEMM's trans_b; q k^T reads k [B, H, T, d] as it is stored
    scores = next(n for n in ff if n.op == "matmul" and not n.attrs.get("merge_heads"))
    assert scores.attrs.get("trans_b") is True and tuple(scores.inputs[1].shape) == (B, H, T, D // H)
    # the backward transposes went too: the proj input gradient stores split heads
    assert any(n.stage == "BP" and n.layer == "proj" and n.attrs.get("split_heads") for n in fg.nodes)
    assert [n.op for n in fold_transposes(fg).nodes] == [n.op for n in fg.nodes]
    assert_same_interpretation(tg, fg, feeds)


def test_a_folded_layout_refuses_autodiff_with_the_reason():
    from satc.ir.ops.registry import get_op
    _, tg, _ = _graph()
    node = next(n for n in fold_transposes(tg).nodes if n.attrs.get("merge_heads"))
    with pytest.raises(ShapeError, match="differentiate the graph before the fold"):
        get_op("matmul").grad(None, node, [None])


@pytest.mark.parametrize("sparsity", ["dense", "bdwp:2:8"])
def test_folded_attention_trains_like_the_interpreter_with_strided_stores(sparsity):
    from tests.satc.test_compile import check_steps
    x, _, feeds = _graph()
    prog = satc.compile(_Heads(), example_inputs=(x,), sparsity=sparsity, hw="sat-small")
    assert "transpose" not in {n.op for n in prog.graph.nodes}
    check_steps(prog, feeds["x"], feeds["y"], 2)
    stores = [i for i in prog.program.instructions if i.op == "store" and i.buf == "acc"]
    # merged heads: rows of d = 8 at a row stride of H * d; split heads: heads as planes
    assert any(i.cols == D // H and i.dram_row_stride == D for i in stores)
    assert any(i.planes == H and i.dram_plane_stride == T * (D // H) for i in stores)
