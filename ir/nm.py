"""N:M structured sparsity primitives (numpy): spec parsing, mask, compress.

Semantics every part of satc shares (the torch layers in ``satc.sparsity``,
the IR interpreter's mask ops and the SAT emulator's SORE):

* a *group* is M consecutive elements along one axis;
* the mask keeps the N elements of largest magnitude in each group, ties
  broken by the lower index (a stable sort on ``-|w|``);
* an axis whose length M does not divide is padded with slots that are
  never selected over a real element; a group with fewer than N real
  elements keeps all of them;
* NaN policy: a NaN element ranks below every other real element (so a
  group keeps it only when it has fewer than N others) and, when kept, stays
  NaN in the compressed values -- never replaced by 0 -- so a NaN weight
  propagates into the loss exactly as in the interpreter's ``nm_prune``.

The compressed form holds, per group, N values and their N indices within
the group (ascending), groups laid out along the reduction axis, which is
moved last.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from satc.errors import SparsityError

SPARSITY_MODES = ("dense", "ff", "bdwp", "bdwp-nested")
DEFAULT_SRSTE_LAMBDA = 2e-4
STEM_CHANNELS = (1, 3)  # a conv over the raw image (grey or RGB) stays dense


def is_stem_conv(in_channels: int) -> bool:
    """Whether a conv over ``in_channels`` input channels is the stem, which every sparsity mode keeps dense.

    The stem convolves the raw image (1 channel grey or 3 RGB); the IR pass
    (:func:`satc.passes.sparsify.sparsify`) and the torch layers
    (:func:`satc.sparsity.convert`) both use this rule.
    """
    return in_channels in STEM_CHANNELS


def grouped_conv_dense_reason(groups: int, in_channels: int, out_channels: int,
                              spec: "SparsitySpec") -> str | None:
    """Why a conv with ``groups`` groups stays dense under ``spec``, or None (it is pruned).

    A depthwise conv has one input channel per group: N:M along Ci has nothing to choose
    from. A grouped conv is pruned along Ci / g in FF (axis 1 of its [Co, Ci/g, kh, kw]
    weight is already per group); BP groups of M along Co must stay inside one conv group
    and each conv group's packed indices must start on a byte (the SAT format), so BDWP
    needs Co/g to be a multiple of :func:`group_quantum`. The IR pass and
    :func:`satc.sparsity.convert` both use this rule.
    """
    if groups == 1:
        return None
    if in_channels == groups:
        return "depthwise conv: 1 input channel per group"
    q = group_quantum(spec.n, spec.m)
    if spec.sparse_bp and (out_channels // groups) % q:
        return (f"grouped conv: Co/g = {out_channels // groups} is not a multiple of {q} "
                f"(BP groups of {spec.m} along Co would straddle conv groups or index bytes)")
    return None


def group_quantum(n: int, m: int) -> int:
    """The smallest channel count made of whole groups of M whose N indices of
    ceil(log2 M) bits each fill whole bytes (32 for 2:8)."""
    bits = n * (m - 1).bit_length()
    k = 1
    while (k * bits) % 8:
        k += 1
    return k * m


@dataclass(frozen=True)
class SparsitySpec:
    """A parsed sparsity mode: ``dense``, ``ff:N:M``, ``bdwp:N:M`` or ``bdwp-nested:N:M``."""

    mode: str
    n: int = 0
    m: int = 0
    srste_lambda: float = DEFAULT_SRSTE_LAMBDA

    @property
    def is_dense(self) -> bool:
        """True when no layer is pruned."""
        return self.mode == "dense"

    @property
    def sparse_bp(self) -> bool:
        """True when BP reads an N:M weight of its own (groups along Co)."""
        return self.mode in ("bdwp", "bdwp-nested")

    @property
    def density(self) -> float:
        """Fraction of weights kept, N/M (1.0 for dense)."""
        return 1.0 if self.is_dense else self.n / self.m

    def __str__(self) -> str:
        return "dense" if self.is_dense else f"{self.mode}:{self.n}:{self.m}"


def check_nm(n: int, m: int) -> None:
    """Raise SparsityError unless 0 < N < M and M is a power of two up to 32."""
    if not (isinstance(n, int) and isinstance(m, int)):
        raise SparsityError(f"N:M must be integers, got {n!r}:{m!r}")
    if m < 2 or m > 32 or m & (m - 1):
        raise SparsityError(f"M={m} is not supported: M must be a power of two in 2..32")
    if not 0 < n < m:
        raise SparsityError(f"N={n} is not supported for M={m}: need 0 < N < M")


def parse_sparsity(spec: str | SparsitySpec, srste_lambda: float | None = None) -> SparsitySpec:
    """Parse ``'dense'``, ``'ff:2:8'``, ``'bdwp:2:8'`` or ``'bdwp-nested:2:8'``."""
    if isinstance(spec, SparsitySpec):
        if srste_lambda is None:
            return spec
        return SparsitySpec(spec.mode, spec.n, spec.m, float(srste_lambda))
    lam = DEFAULT_SRSTE_LAMBDA if srste_lambda is None else float(srste_lambda)
    if lam < 0:
        raise SparsityError(f"SR-STE lambda must be >= 0, got {lam}")
    parts = str(spec).strip().lower().split(":")
    mode = parts[0]
    if mode not in SPARSITY_MODES:
        raise SparsityError(
            f"unknown sparsity mode {mode!r} in {spec!r}; use one of "
            "'dense', 'ff:N:M', 'bdwp:N:M', 'bdwp-nested:N:M'")
    if mode == "dense":
        if len(parts) != 1:
            raise SparsityError(f"'dense' takes no N:M, got {spec!r}")
        return SparsitySpec("dense", srste_lambda=lam)
    if len(parts) != 3:
        raise SparsityError(f"sparsity {spec!r} needs the form '{mode}:N:M', e.g. '{mode}:2:8'")
    try:
        n, m = int(parts[1]), int(parts[2])
    except ValueError:
        raise SparsityError(f"N and M must be integers in {spec!r}") from None
    check_nm(n, m)
    return SparsitySpec(mode, n, m, lam)


def _grouped(w: np.ndarray, m: int, axis: int) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Move ``axis`` last and pad it with zeros to a multiple of M, viewed as (..., G, M); with
    the padding mask along the padded axis (None without padding) and the axis length."""
    x = np.moveaxis(np.asarray(w), axis, -1)
    length = x.shape[-1]
    pad = (-length) % m
    padding = None
    if pad:
        x = np.concatenate([x, np.zeros(x.shape[:-1] + (pad,), dtype=x.dtype)], axis=-1)
        padding = np.arange(length + pad) >= length
    return x.reshape(x.shape[:-1] + (x.shape[-1] // m, m)), padding, length


def _top_n_order(groups: np.ndarray, padding: np.ndarray | None, n: int,
                 ascending: bool = True) -> np.ndarray:
    """Indices (..., G, N) of the N largest magnitudes per group, ascending (else in rank
    order: a mask needs no sort, which costs more than an argmax round).

    N rounds of argmax over the magnitudes (argmax takes the lowest index among
    ties), each taking the winner out of the race; a NaN element ranks below
    every other real value (it is kept only when its group has fewer than N
    others) and padding below everything. Equal to a stable argsort of -|w|,
    without a sort.
    """
    m = groups.shape[-1]
    mag = np.abs(groups.reshape(-1, m), order="C")     # flat below must be a view
    mag[np.isnan(mag)] = -1
    if padding is not None:
        mag.reshape(-1, padding.size)[:, padding] = -2
    first = np.arange(mag.shape[0]) * m                 # each group's first flat index
    flat = mag.reshape(-1)
    order = np.empty((mag.shape[0], n), np.intp)
    for j in range(n):
        order[:, j] = np.argmax(mag, axis=1)
        flat[first + order[:, j]] = -3
    if ascending:
        order.sort(axis=1)
    return order.reshape(groups.shape[:-1] + (n,))


def nm_mask(w: np.ndarray, n: int, m: int, axis: int) -> np.ndarray:
    """Boolean mask of ``w``'s shape keeping the top-N magnitudes of each group of M along ``axis``."""
    check_nm(n, m)
    w = np.asarray(w)
    axis = axis % w.ndim
    groups, padding, length = _grouped(w, m, axis)
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, _top_n_order(groups, padding, n, ascending=False), True, axis=-1)
    keep = keep.reshape(keep.shape[:-2] + (-1,))[..., :length]
    return np.moveaxis(keep, -1, axis)


@dataclass(frozen=True)
class NMCompressed:
    """Packed N:M form: ``values`` and ``indices`` of shape (..., G, N), reduction axis last."""

    values: np.ndarray
    indices: np.ndarray
    n: int
    m: int
    axis: int
    shape: tuple[int, ...]


def nm_compress(w: np.ndarray, n: int, m: int, axis: int) -> NMCompressed:
    """Compress ``w`` to N values + N in-group indices per group of M along ``axis``."""
    check_nm(n, m)
    w = np.asarray(w)
    axis = axis % w.ndim
    groups, padding, _ = _grouped(w, m, axis)
    idx = _top_n_order(groups, padding, n)
    vals = np.take_along_axis(groups, idx, axis=-1)        # zero padding; a kept NaN stays NaN
    return NMCompressed(vals, idx.astype(np.uint8), n, m, axis, tuple(w.shape))


def nm_decompress(c: NMCompressed) -> np.ndarray:
    """Rebuild the dense (pruned) tensor from its compressed form."""
    groups = np.zeros(c.values.shape[:-1] + (c.m,), dtype=c.values.dtype)
    np.put_along_axis(groups, c.indices.astype(np.intp), c.values, axis=-1)
    flat = groups.reshape(groups.shape[:-2] + (-1,))[..., : c.shape[c.axis]]
    return np.moveaxis(flat, -1, c.axis)
