"""A sweep's search space: hardware-config fields with the values each takes.

``--vary FIELD=V1,V2,...`` varies one field; ``--vary rows+cols=16,32`` ties
several fields to one value (a square array). Values are parsed with the
field's type (int, float, str). The space is the grid of all combinations,
or ``sample`` points drawn from it without replacement (seeded).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from typing import Any, Mapping, Sequence

from satc.backends.sat.config import HardwareConfig
from satc.errors import ConfigError

_FIELDS = {f.name: f for f in dataclasses.fields(HardwareConfig)}
#: fields a sweep cannot vary: identity and structured values
_FIXED = ("name", "nm_patterns", "dataflows")

#: one axis of the space: the tied field names and the values they take together
Axis = tuple[tuple[str, ...], tuple[Any, ...]]


_BOOLS = {"true": True, "1": True, "false": False, "0": False}


def _value(field: str, text: str) -> Any:
    kind = _FIELDS[field].type
    if kind == "bool":
        if text.lower() not in _BOOLS:
            raise ConfigError(f"--vary {field}: {text!r} is not a bool; give true or false")
        return _BOOLS[text.lower()]
    try:
        return int(text) if kind == "int" else float(text) if kind == "float" else text
    except ValueError:
        raise ConfigError(f"--vary {field}: {text!r} is not a {kind}; give {kind} values "
                          "separated by commas") from None


def parse_axis(item: str) -> Axis:
    """``FIELD[+FIELD...]=V1,V2,...`` -> ((fields), (values)); ConfigError names a bad field."""
    names, sep, values = item.partition("=")
    if not sep or not values:
        raise ConfigError(f"--vary {item!r}: expected FIELD=V1,V2,... e.g. rows+cols=16,32")
    fields = tuple(names.split("+"))
    for f in fields:
        if f not in _FIELDS or f in _FIXED:
            varyable = [n for n in _FIELDS if n not in _FIXED]
            raise ConfigError(f"--vary: '{f}' is not a hardware-config field a sweep can vary; "
                              f"use one of: {', '.join(varyable)}")
    kinds = {_FIELDS[f].type for f in fields}
    if len(kinds) > 1:
        raise ConfigError(f"--vary {names}: tied fields must share a type, got {sorted(kinds)}")
    return fields, tuple(_value(fields[0], v) for v in values.split(","))


def points(axes: Sequence[Axis], sample: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The overrides of every point (field -> value): the full grid, or ``sample`` of it."""
    grid = [{f: v for (fields, _), v in zip(axes, combo) for f in fields}
            for combo in itertools.product(*(values for _, values in axes))]
    if sample is not None and sample < len(grid):
        keep = sorted(random.Random(seed).sample(range(len(grid)), sample))
        grid = [grid[i] for i in keep]
    return grid


def variant(base: HardwareConfig, overrides: Mapping[str, Any]) -> HardwareConfig:
    """``base`` with ``overrides`` applied and validated, named after them."""
    if not overrides:
        return base
    suffix = "-".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in overrides.items())
    return dataclasses.replace(base, name=f"{base.name}[{suffix}]", **overrides)


def onchip_bytes(cfg: HardwareConfig) -> int:
    """Bytes of on-chip buffer memory (all buffers)."""
    return sum(cfg.buffer_bytes.values())
