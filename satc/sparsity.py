"""N:M sparse training in PyTorch with BDWP (bidirectional weight pruning).

:func:`convert` swaps a model's ``nn.Conv2d`` / ``nn.Linear`` layers for
:class:`SparseConv2d` / :class:`SparseLinear` (same parameters, same
``state_dict`` keys) whose autograd does, for a weight W of shape
[Co, Ci, ...]:

* FF  ``Y = W_ff * X``, W_ff = W masked N:M in groups along Ci (dim 1);
* BP  ``dX`` from W_bp, masked N:M in groups along Co (dim 0) - mode
  ``bdwp`` prunes the dense W, ``bdwp-nested`` prunes W_ff (so W_bp is a
  subset of W_ff), mode ``ff`` reuses W_ff (SR-STE as in Zhou et al.);
* WU  ``dW`` dense (straight-through), plus the SR-STE term
  ``lambda * (1 - mask_ff) * W``.

Masks are recomputed from the dense weight at every forward, on its
device, and equal :func:`satc.ir.nm.nm_mask` bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from satc.errors import SparsityError
from satc.ir.nm import SparsitySpec, grouped_conv_dense_reason, is_stem_conv, parse_sparsity

__all__ = ["LayerSparsity", "SparseConv2d", "SparseLinear", "convert", "nm_density",
           "nm_mask", "report"]

_DENSE_REASONS = "_satc_dense_reasons"


def nm_mask(w: torch.Tensor, n: int, m: int, axis: int) -> torch.Tensor:
    """Torch twin of :func:`satc.ir.nm.nm_mask`: keep the top-N |w| of each group of M along ``axis``.

    Ties go to the lower index (stable sort on ``-|w|``); padding of an axis
    that M does not divide is never selected over a real element.
    """
    x = w.detach().movedim(axis, -1)
    length = x.shape[-1]
    pad = (-length) % m
    key = x.abs().neg()
    if pad:  # |w| >= 0, so a key of +1 sorts padding after every real element
        key = F.pad(key, (0, pad), value=1.0)
    groups = key.reshape(*key.shape[:-1], -1, m)
    top = torch.sort(groups, dim=-1, stable=True).indices[..., :n]
    keep = torch.zeros(groups.shape, dtype=torch.bool, device=w.device)
    keep.scatter_(-1, top, True)
    return keep.reshape(*key.shape[:-1], -1)[..., :length].movedim(-1, axis)


def nm_density(length: int, n: int, m: int) -> float:
    """Fraction of an axis of ``length`` elements that an N:M mask along it keeps."""
    return (length // m * n + min(n, length % m)) / length


def _masks(w: torch.Tensor, spec: SparsitySpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mask_ff, W_ff, W_bp) of the dense weight ``w`` for ``spec``'s mode."""
    mask_ff = nm_mask(w, spec.n, spec.m, 1)
    w_ff = w * mask_ff
    if spec.mode == "ff":
        return mask_ff, w_ff, w_ff
    source = w_ff if spec.mode == "bdwp-nested" else w  # nested: W_bp is a subset of W_ff
    return mask_ff, w_ff, source * nm_mask(source, spec.n, spec.m, 0)


def _srste(w: torch.Tensor, mask_ff: torch.Tensor, lam: float) -> torch.Tensor:
    """The SR-STE refinement gradient ``lambda * (1 - mask_ff) * W``."""
    return lam * (~mask_ff) * w


class _BDWPConv2d(torch.autograd.Function):
    """conv2d with FF on W_ff, BP on W_bp and a dense (+SR-STE) weight gradient."""

    @staticmethod
    def forward(ctx, x, w, b, spec, stride, padding, dilation, groups):  # noqa: D102
        mask_ff, w_ff, w_bp = _masks(w, spec)
        ctx.save_for_backward(x, w, mask_ff, w_bp)
        ctx.conf = (spec.srste_lambda, stride, padding, dilation, groups, b is not None)
        return F.conv2d(x, w_ff, b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, dy):  # noqa: D102
        x, w, mask_ff, w_bp = ctx.saved_tensors
        lam, stride, padding, dilation, groups, has_bias = ctx.conf
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = torch.nn.grad.conv2d_input(x.shape, w_bp, dy, stride, padding, dilation, groups)
        if ctx.needs_input_grad[1]:
            dw = torch.nn.grad.conv2d_weight(x, w.shape, dy, stride, padding, dilation, groups)
            dw = dw + _srste(w, mask_ff, lam)
        if has_bias and ctx.needs_input_grad[2]:
            db = dy.sum((0, 2, 3))
        return dx, dw, db, None, None, None, None, None


class _BDWPLinear(torch.autograd.Function):
    """linear with FF on W_ff, BP on W_bp and a dense (+SR-STE) weight gradient."""

    @staticmethod
    def forward(ctx, x, w, b, spec):  # noqa: D102
        mask_ff, w_ff, w_bp = _masks(w, spec)
        ctx.save_for_backward(x, w, mask_ff, w_bp)
        ctx.conf = (spec.srste_lambda, b is not None)
        return F.linear(x, w_ff, b)

    @staticmethod
    def backward(ctx, dy):  # noqa: D102
        x, w, mask_ff, w_bp = ctx.saved_tensors
        lam, has_bias = ctx.conf
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = dy @ w_bp
        dy2 = dy.reshape(-1, dy.shape[-1])
        if ctx.needs_input_grad[1]:
            dw = dy2.t() @ x.reshape(-1, x.shape[-1]) + _srste(w, mask_ff, lam)
        if has_bias and ctx.needs_input_grad[2]:
            db = dy2.sum(0)
        return dx, dw, db, None


class _SparseMixin:
    """What SparseConv2d and SparseLinear share: the spec and the per-direction densities."""

    spec: SparsitySpec
    weight: nn.Parameter

    @property
    def ff_density(self) -> float:
        """Fraction of FF MACs an N:M engine performs: N:M along Ci, tail groups padded."""
        return nm_density(self.weight.shape[1], self.spec.n, self.spec.m)

    @property
    def bp_density(self) -> float:
        """Fraction of BP MACs an N:M engine performs: N:M along Co for BDWP.

        1.0 in mode ``ff``: BP reduces over Co, along which W_ff is not N:M.
        """
        if not self.spec.sparse_bp:
            return 1.0
        return nm_density(self.weight.shape[0], self.spec.n, self.spec.m)

    def extra_repr(self) -> str:  # noqa: D102
        return f"{super().extra_repr()}, sparsity={self.spec}, srste_lambda={self.spec.srste_lambda}"


class SparseConv2d(_SparseMixin, nn.Conv2d):
    """nn.Conv2d trained with BDWP (see the module docstring); made by :func:`convert`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv2d of ``x`` with W_ff; its backward uses W_bp and the dense dW."""
        return _BDWPConv2d.apply(x, self.weight, self.bias, self.spec, self.stride,
                                 self.padding, self.dilation, self.groups)


class SparseLinear(_SparseMixin, nn.Linear):
    """nn.Linear trained with BDWP (see the module docstring); made by :func:`convert`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """linear of ``x`` with W_ff; its backward uses W_bp and the dense dW."""
        return _BDWPLinear.apply(x, self.weight, self.bias, self.spec)


def _layer_base(module: nn.Module) -> type[nn.Module] | None:
    """nn.Conv2d or nn.Linear for a layer convert handles (plain or already sparse), else None."""
    for base, sparse in ((nn.Conv2d, SparseConv2d), (nn.Linear, SparseLinear)):
        if type(module) in (base, sparse):
            return base
    return None


def _dense_reason(name: str, module: nn.Module, spec: SparsitySpec,
                  exclude: tuple[str, ...]) -> str | None:
    """Why layer ``name`` stays dense, or None if it is made sparse."""
    if spec.is_dense:
        return "mode dense"
    if name in exclude:
        return "excluded"
    if isinstance(module, nn.Conv2d) and is_stem_conv(module.in_channels):
        return "stem"
    if isinstance(module, nn.Conv2d):
        return grouped_conv_dense_reason(module.groups, module.in_channels, module.out_channels,
                                         spec)
    return None


def _check_convertible(name: str, module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d) and (module.padding_mode != "zeros"
                                          or isinstance(module.padding, str)):
        raise SparsityError(
            f"layer {name!r}: padding={module.padding!r}, padding_mode={module.padding_mode!r} "
            "is not supported by sparse conv; use numeric zero padding or exclude the layer")


def convert(model: nn.Module, spec: str | SparsitySpec, exclude: tuple[str, ...] = (),
            srste_lambda: float | None = None) -> nn.Module:
    """Make ``model``'s Conv2d/Linear layers N:M sparse per ``spec``, in place; return ``model``.

    The stem (a conv with 1 or 3 input channels) and the layers named in
    ``exclude`` (module names as in ``named_modules``) stay dense.
    ``srste_lambda`` overrides the spec's SR-STE weight. Parameters are kept
    as they are (same objects, same ``state_dict`` keys), so an optimizer
    built before the call still applies. Converting again replaces the
    previous spec; ``'dense'`` restores plain layers. See :func:`report`.
    """
    spec = parse_sparsity(spec, srste_lambda)
    unknown = set(exclude) - {n for n, _ in model.named_modules()}
    if unknown:
        raise SparsityError(f"exclude names no module of the model: {sorted(unknown)}")
    reasons: dict[str, str] = {}
    for name, module in model.named_modules():
        base = _layer_base(module)
        if base is None:
            continue
        reason = _dense_reason(name, module, spec, exclude)
        if reason is None:
            _check_convertible(name, module)
            module.__class__ = SparseConv2d if base is nn.Conv2d else SparseLinear
            module.spec = spec
        else:
            module.__class__ = base
            module.__dict__.pop("spec", None)
            reasons[name] = reason
    setattr(model, _DENSE_REASONS, reasons)
    return model


@dataclass(frozen=True)
class LayerSparsity:
    """How one Conv2d/Linear layer is trained: its FF and BP formats, and why if dense."""

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    ff: str
    bp: str
    reason: str


def report(model: nn.Module) -> list[LayerSparsity]:
    """One :class:`LayerSparsity` per Conv2d/Linear layer of ``model``, in module order."""
    reasons = getattr(model, _DENSE_REASONS, {})
    rows = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        kind = "conv" if isinstance(module, nn.Conv2d) else "linear"
        shape = tuple(module.weight.shape)
        if isinstance(module, _SparseMixin):
            nm = f"{module.spec.n}:{module.spec.m}"
            ff = f"{nm} along Ci"
            bp = f"{nm} along Co" if module.spec.sparse_bp else f"{ff} (W_ff)"
            rows.append(LayerSparsity(name, kind, shape, ff, bp, str(module.spec)))
        else:
            rows.append(LayerSparsity(name, kind, shape, "dense", "dense",
                                      reasons.get(name, "not converted")))
    return rows
