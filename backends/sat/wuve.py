"""WUVE update rules and their fp32 hyper-parameter record.

The WUVE reads its hyper-parameters from an 8-word fp32 record in an
on-chip buffer (loaded by DMA like any tile), so a learning-rate schedule
changes DRAM contents, not instructions. Record layout per rule is
:data:`HP_FIELDS`; unused words are zero.
"""

from __future__ import annotations

import numpy as np

HP_WORDS = 8
HP_BYTES = HP_WORDS * 4
HP_FIELDS: dict[str, tuple[str, ...]] = {
    "sgd": ("lr", "momentum", "weight_decay"),
    "adamw": ("lr", "beta1", "beta2", "eps", "weight_decay", "bias_correction1", "bias_correction2"),
}


def hp_record(func: str, **values: float) -> np.ndarray:
    """The fp32 record for ``func`` ('sgd' or 'adamw'); every field of the rule is required.

    AdamW's ``bias_correction1/2`` are ``1 - beta1**t`` and ``1 - beta2**t`` for step t.
    """
    names = HP_FIELDS[func]
    if set(values) != set(names):
        raise ValueError(f"{func} hyper-parameters are {names}, got {sorted(values)}")
    rec = np.zeros(HP_WORDS, np.float32)
    rec[:len(names)] = [values[n] for n in names]
    return rec


def sgd_update(w: np.ndarray, g: np.ndarray, m: np.ndarray, hp: np.ndarray) -> None:
    """In place, fp32: g' = g + wd*w; m = momentum*m + g'; w -= lr*m (PyTorch SGD, dampening 0)."""
    lr, mom, wd = hp[0], hp[1], hp[2]
    gg = g + wd * w
    m *= mom
    m += gg
    w -= lr * m


def adamw_update(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, hp: np.ndarray) -> None:
    """In place, fp32 (PyTorch AdamW): decoupled decay, bias-corrected moments."""
    lr, b1, b2, eps, wd, bc1, bc2 = hp[:7]
    w *= np.float32(1) - lr * wd
    m *= b1
    m += (np.float32(1) - b1) * g
    v *= b2
    v += (np.float32(1) - b2) * g * g
    w -= lr * (m / bc1) / (np.sqrt(v / bc2) + eps)
