"""satc.sparsity: torch N:M masks and BDWP autograd (FF along Ci, BP along Co, dense WU)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from satc.errors import SparsityError
from satc.ir.nm import nm_mask as np_nm_mask
from satc.sparsity import SparseConv2d, SparseLinear, convert, nm_density, nm_mask, report

NM = [(1, 2), (2, 4), (1, 8), (2, 8), (3, 8), (4, 16)]


# Small integers (as floats, both signs, zero) make ties frequent.
@settings(max_examples=150, deadline=None)
@given(data=st.data(), nm=st.sampled_from(NM))
def test_mask_matches_numpy(data, nm):
    n, m = nm
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=11))
    w = data.draw(hnp.arrays(np.float32, shape, elements=st.integers(-3, 3).map(float)))
    axis = data.draw(st.integers(0, len(shape) - 1))
    expected = np_nm_mask(w, n, m, axis)
    got = nm_mask(torch.from_numpy(w), n, m, axis).numpy()
    np.testing.assert_array_equal(got, expected)


def test_mask_random_floats_and_negative_axis():
    w = torch.randn(6, 13, 3, 3)
    for axis in (0, 1, -1):
        np.testing.assert_array_equal(nm_mask(w, 2, 8, axis).numpy(),
                                      np_nm_mask(w.numpy(), 2, 8, axis))


def test_density():
    assert nm_density(16, 2, 8) == 0.25
    assert nm_density(6, 2, 4) == (2 + 2) / 6  # a 2-element tail group keeps both
    assert nm_density(3, 2, 8) == 2 / 3


def _group_counts(mask: torch.Tensor, m: int, axis: int) -> torch.Tensor:
    """Kept elements per group of M along ``axis`` (axis length divisible by M)."""
    x = mask.movedim(axis, -1)
    return x.reshape(*x.shape[:-1], -1, m).sum(-1)


def _conv(spec, ci=16, co=16, lam=None, bias=True):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, ci, 1), nn.Conv2d(ci, co, 3, padding=1, stride=2, bias=bias))
    convert(model, spec, srste_lambda=lam)
    return model[1]


def _run(layer, shape):
    x = torch.randn(*shape, requires_grad=True)
    y = layer(x)
    dy = torch.randn_like(y)
    y.backward(dy)
    return x, y, dy


@pytest.mark.parametrize("mode", ["bdwp", "bdwp-nested", "ff"])
def test_conv_ff_bp_wu(mode):
    layer = _conv(f"{mode}:2:8", lam=1e-2)
    assert isinstance(layer, SparseConv2d)
    w = layer.weight.detach().clone()
    x, y, dy = _run(layer, (2, 16, 9, 9))
    assert (layer.ff_density, layer.bp_density) == (0.25, 1.0 if mode == "ff" else 0.25)
    mask_ff = nm_mask(w, 2, 8, 1)
    w_ff = w * mask_ff
    bp_source = {"bdwp": w, "bdwp-nested": w_ff, "ff": None}[mode]
    w_bp = w_ff if bp_source is None else bp_source * nm_mask(bp_source, 2, 8, 0)
    conf = dict(stride=2, padding=1)
    # (a) FF is the conv with W * mask_ff
    torch.testing.assert_close(y, F.conv2d(x.detach(), w_ff, layer.bias.detach(), **conf))
    # (b) grad input is the transposed conv with W * mask_bp
    xr = x.detach().clone().requires_grad_()
    (F.conv2d(xr, w_bp, **conf) * dy).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    # (c) grad weight is the dense dW plus lambda * (1 - mask_ff) * W
    wr = w.clone().requires_grad_()
    (F.conv2d(x.detach(), wr, **conf) * dy).sum().backward()
    torch.testing.assert_close(layer.weight.grad, wr.grad + 1e-2 * (~mask_ff) * w)
    torch.testing.assert_close(layer.bias.grad, dy.sum((0, 2, 3)))


@pytest.mark.parametrize("mode", ["bdwp", "bdwp-nested", "ff"])
def test_linear_ff_bp_wu(mode):
    torch.manual_seed(1)
    layer = convert(nn.Linear(24, 16), f"{mode}:2:8", srste_lambda=1e-2)
    assert isinstance(layer, SparseLinear)
    w = layer.weight.detach().clone()
    x, y, dy = _run(layer, (5, 3, 24))
    mask_ff = nm_mask(w, 2, 8, 1)
    w_ff = w * mask_ff
    bp_source = {"bdwp": w, "bdwp-nested": w_ff, "ff": None}[mode]
    w_bp = w_ff if bp_source is None else bp_source * nm_mask(bp_source, 2, 8, 0)
    torch.testing.assert_close(y, F.linear(x.detach(), w_ff, layer.bias.detach()))
    torch.testing.assert_close(x.grad, dy @ w_bp)
    dw = dy.reshape(-1, 16).t() @ x.detach().reshape(-1, 24)
    torch.testing.assert_close(layer.weight.grad, dw + 1e-2 * (~mask_ff) * w)
    torch.testing.assert_close(layer.bias.grad, dy.reshape(-1, 16).sum(0))


@pytest.mark.parametrize("mode,true_gradient", [("ff", True), ("bdwp", False)])
def test_finite_differences_in_x(mode, true_gradient):
    """Mode ff back-propagates the true gradient of its sparse forward; BDWP does not (W_bp != W_ff)."""
    layer = _conv(f"{mode}:2:4", ci=4, co=4).double().requires_grad_(False)
    x = torch.randn(1, 4, 4, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), raise_exception=False) is true_gradient


def test_ff_and_bp_masks_run_along_different_axes():
    layer = _conv("bdwp:2:8")
    w = layer.weight.detach().clone()
    x, _, dy = _run(layer, (2, 16, 9, 9))
    mask_ff = nm_mask(w, 2, 8, 1)
    mask_bp = nm_mask(w, 2, 8, 0)
    assert (_group_counts(mask_ff, 8, 1) == 2).all()
    assert (_group_counts(mask_bp, 8, 0) == 2).all()
    assert not torch.equal(mask_ff, mask_bp)
    # BP really uses the Co-grouped weight: the Ci-grouped one gives another dX
    for mask, same in ((mask_bp, True), (mask_ff, False)):
        xr = x.detach().clone().requires_grad_()
        (F.conv2d(xr, w * mask, stride=2, padding=1) * dy).sum().backward()
        assert torch.allclose(x.grad, xr.grad, atol=1e-5) is same


def test_weight_update_is_not_pruned():
    layer = _conv("bdwp:2:8", lam=0.0)
    mask_ff = nm_mask(layer.weight, 2, 8, 1)
    _run(layer, (2, 16, 9, 9))
    pruned = layer.weight.grad[~mask_ff]
    assert pruned.numel() > 0 and (pruned != 0).float().mean() > 0.99


def test_padding_ci6_m4():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.Conv2d(6, 6, 3, padding=1, bias=False))
    layer = convert(model, "bdwp:2:4")[1]
    w = layer.weight.detach().clone()
    x, y, dy = _run(layer, (1, 6, 4, 4))
    mask_ff = nm_mask(w, 2, 4, 1)
    # groups along Ci: [0..3] keeps 2, the padded tail [4, 5] keeps both
    assert (mask_ff[:, :4].sum(1) == 2).all() and mask_ff[:, 4:].all()
    np.testing.assert_array_equal(mask_ff.numpy(), np_nm_mask(w.numpy(), 2, 4, 1))
    torch.testing.assert_close(y, F.conv2d(x.detach(), w * mask_ff, padding=1))
    assert layer.ff_density == layer.bp_density == 4 / 6


def test_masks_follow_the_weight_every_step():
    layer = _conv("bdwp:2:8")
    x = torch.randn(2, 16, 9, 9)
    before = layer(x)
    with torch.no_grad():
        layer.weight.mul_(torch.rand_like(layer.weight))
    after = layer(x)
    w = layer.weight.detach()
    torch.testing.assert_close(after, F.conv2d(x, w * nm_mask(w, 2, 8, 1), layer.bias,
                                               stride=2, padding=1))
    assert not torch.allclose(before, after)


def test_convert_keeps_state_dict_and_reports():
    from satc.models import get_model
    model = get_model("cnn")
    keys, params = list(model.state_dict()), list(model.parameters())
    convert(model, "bdwp:2:8", exclude=("classifier.2",))
    assert list(model.state_dict()) == keys
    assert all(a is b for a, b in zip(model.parameters(), params))
    rows = {r.name: r for r in report(model)}
    assert rows["features.0"].reason == "stem" and rows["features.0"].ff == "dense"
    assert rows["classifier.2"].reason == "excluded"
    assert rows["features.3"].ff == "2:8 along Ci" and rows["features.3"].bp == "2:8 along Co"
    assert isinstance(model.classifier[0], SparseLinear)
    convert(model, "dense")
    assert {type(m) for m in model.modules()} & {SparseConv2d, SparseLinear} == set()
    assert all(r.ff == "dense" for r in report(model))


def test_dense_mode_is_unchanged():
    torch.manual_seed(3)
    a = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 16, 4))
    x = torch.randn(2, 3, 8, 8)
    ref = a(x)
    torch.testing.assert_close(convert(a, "dense")(x), ref)


def test_convert_errors():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, padding="same"))
    with pytest.raises(SparsityError, match="padding"):
        convert(model, "bdwp:2:8")
    with pytest.raises(SparsityError, match="exclude"):
        convert(model, "bdwp:2:8", exclude=("nope",))
    with pytest.raises(SparsityError):
        convert(model, "bdwp:2:7")


def test_training_step_moves_pruned_weights():
    """With the dense WU, an optimizer step changes weights the FF mask dropped."""
    layer = _conv("bdwp:2:8")
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    mask = nm_mask(layer.weight, 2, 8, 1)
    before = layer.weight.detach().clone()
    _run(layer, (2, 16, 9, 9))
    opt.step()
    assert (layer.weight.detach() != before)[~mask].float().mean() > 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    layer = _conv("bdwp:2:8")
    x = torch.randn(2, 16, 9, 9)
    ref = layer(x)
    w = layer.weight.detach()
    torch.testing.assert_close(nm_mask(w.cuda(), 2, 8, 0).cpu(), nm_mask(w, 2, 8, 0))
    torch.testing.assert_close(layer.cuda()(x.cuda()).cpu(), ref, rtol=1e-4, atol=1e-4)
