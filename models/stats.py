"""Parameter and multiply-accumulate (MAC) counts of a model."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def _example(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = getattr(model, "input_dtype", torch.float32)      # token models take int64 ids
    return torch.zeros((1, *input_shape), dtype=dtype, device=device)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward MACs for one sample of shape ``input_shape`` (C, H, W).

    Counts every GEMM-like op torch dispatches: convolutions, linear layers
    and explicit matmuls (attention's q@k^T and attn@v), one MAC per
    multiply-add. Normalisation, activations, pooling, softmax, residual
    adds and bias adds are not counted.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(_example(model, input_shape))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def layer_macs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Forward MACs per sample of each Conv2d and Linear module, by module name.

    Bias adds are not counted; matmuls outside these modules are not either
    (use :func:`count_macs` for the whole-model total).
    """
    macs: dict[str, int] = {}

    def hook(name: str):
        def record(mod: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
            per_output = mod.weight[0].numel()  # Ci/groups*kh*kw (conv) or in_features (linear)
            macs[name] = macs.get(name, 0) + out.numel() // out.shape[0] * per_output
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(_example(model, input_shape))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return macs
