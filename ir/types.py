"""Tensor types and training stages of the satc IR."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from satc.errors import ShapeError

DTYPES = {"float32": "f32", "float16": "f16", "int64": "i64", "uint8": "u8"}


class Stage(str, Enum):
    """The phase of a training step an op belongs to."""

    FF = "FF"      # forward pass (and the loss)
    BP = "BP"      # backward pass: gradients of activations
    WU = "WU"      # weight update: gradients of parameters
    OPT = "OPT"    # optimizer: new weights and optimizer state
    SORE = "SORE"  # N:M pre-generation of next step's sparse weights

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class TensorType:
    """Static shape and element type of a tensor value."""

    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ShapeError(f"unknown dtype {self.dtype!r}; use one of {sorted(DTYPES)}")
        if any((not isinstance(d, int)) or d < 0 for d in self.shape):
            raise ShapeError(f"shape {self.shape} must be non-negative integers")

    @property
    def rank(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def numel(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Size in bytes."""
        return self.numel * np.dtype(self.dtype).itemsize

    def __str__(self) -> str:
        return f"{DTYPES[self.dtype]}[{','.join(map(str, self.shape))}]"


def f32(*shape: int) -> TensorType:
    """A float32 tensor type of the given shape."""
    return TensorType(tuple(int(s) for s in shape), "float32")
