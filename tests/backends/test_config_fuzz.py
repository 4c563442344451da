"""Fuzzing the hardware-config loader: every bad TOML file gets a ConfigError naming the field.

The ``sat-small`` preset is written back as TOML with a field deleted, an
unknown field added, a field given a value of another type, or a number that
is zero, negative, NaN, infinite, absurdly large or tiny; and as text,
truncated or bit-flipped. The only outcomes allowed are a
:class:`~satc.errors.ConfigError` naming the field at fault (or, for broken
syntax, saying so) and a config that passes every check and round-trips.
Configs with random small buffers compile the mlp or give a CompileError
naming the layer and the buffer to raise. ``COUNTS`` tallies the outcomes
(printed with ``-s``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from satc.backends.sat.config import PRESET_DIR, config_from_dict, load_hardware
from satc.backends.sat.isa import BUFFERS

import satc
from satc.errors import CompileError, ConfigError, SatcError

COUNTS: Counter = Counter()
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASE: dict[str, Any] = tomllib.loads((PRESET_DIR / "sat-small.toml").read_text())
FIELDS = sorted(BASE)
TOML_VALUES = st.recursive(
    st.booleans() | st.integers(-2 ** 63, 2 ** 63 - 1) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text("abcdefgh", min_size=1, max_size=4), inner, max_size=2),
    max_leaves=6)
NUMBERS = st.sampled_from([0, -1, -64, 1, 3, 63, 2 ** 31, 2 ** 63 - 1, 0.0, -0.5, 1e-300, 1e308,
                           math.nan, math.inf, -math.inf, 64, 4096, 0.5, 1.0])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """The TOML file each case writes."""
    return tmp_path_factory.mktemp("config_fuzz") / "hw.toml"


@pytest.fixture(scope="module", autouse=True)
def report():
    """Print the tally of outcomes after the module."""
    yield
    print(f"\nconfig fuzz: {sum(COUNTS.values())} cases, " +
          ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items())))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        # JSON's escapes are TOML's, but TOML also refuses a raw DEL
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f'"{k}" = {_toml_value(x)}' for k, x in v.items()) + "}"
    return str(v)


def _toml(data: dict[str, Any]) -> str:
    return "".join(f"{k} = {_toml_value(v)}\n" for k, v in data.items())


def _load(path: Path, text: str | bytes, culprit: str | None) -> None:
    """Load ``text`` from ``path``; tally a ConfigError naming ``culprit`` or a valid config."""
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    try:
        cfg = load_hardware(path)
    except ConfigError as e:
        msg = str(e)
        assert str(path) in msg, msg
        assert culprit is None or culprit in msg or "not valid TOML" in msg, msg
        COUNTS["clear error"] += 1
        return
    assert config_from_dict(cfg.to_dict()) == cfg
    COUNTS["accepted (valid edit)"] += 1


def test_the_preset_loads(scratch):
    _load(scratch, _toml(BASE), None)
    assert load_hardware(scratch) == dataclasses.replace(load_hardware("sat-small"), name="sat-small")


@FAST
@given(st.sampled_from(FIELDS))
def test_missing_field(scratch, field):
    data = dict(BASE)
    del data[field]
    _load(scratch, _toml(data), field)
    if field != "name":                        # the name defaults to the file's stem
        with pytest.raises(ConfigError, match=f"missing hardware config field '{field}'"):
            load_hardware(scratch)


@FAST
@given(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12), TOML_VALUES)
def test_unknown_field(scratch, field, value):
    data = {**BASE, field: value}
    _load(scratch, _toml(data), field)
    if field not in BASE:
        with pytest.raises(ConfigError, match=f"unknown hardware config field '{field}'"):
            load_hardware(scratch)


@FAST
@given(st.sampled_from(FIELDS), TOML_VALUES)
def test_wrong_typed_field(scratch, field, value):
    _load(scratch, _toml({**BASE, field: value}), field)


@FAST
@given(st.sampled_from(FIELDS), NUMBERS)
def test_bad_number(scratch, field, value):
    _load(scratch, _toml({**BASE, field: value}), field)


@FAST
@given(st.data())
def test_broken_text(scratch, data):
    b = bytearray(_toml(BASE).encode())
    if data.draw(st.booleans()):
        b = b[:data.draw(st.integers(0, len(b) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 4))):
            b[data.draw(st.integers(0, len(b) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    _load(scratch, bytes(b), None)


def test_absurd_values_are_refused():
    base = load_hardware("sat-small")
    for field, value, needle in [("rows", 2 ** 40, "at most 4096"), ("issue_cycles", 2 ** 62, "at most 1000000"),
                                 ("dram_bandwidth_gbps", 1e-300, "at least 0.001"),
                                 ("clock_mhz", 1e308, "at most 100000"),
                                 ("static_power_w", 1e308, "at most 1e+06")]:
        with pytest.raises(ConfigError, match=rf"field '{field}': got .*{re.escape(needle)}"):
            dataclasses.replace(base, **{field: value})


@pytest.mark.parametrize("buffer", BUFFERS)
def test_a_config_too_small_for_one_tile_names_the_layer_and_the_buffer(buffer):
    cfg = dataclasses.replace(load_hardware("sat-small"), **{f"{buffer}_buffer_bytes": 64})
    with pytest.raises(CompileError, match=rf"layer '[^']+'.*raise[^;]*\b{buffer}"):
        satc.compile("mlp", input_shapes={"x": (4, 64)}, hw=cfg, sparsity="bdwp:2:8")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.tuples(*[st.sampled_from([64, 512, 4096, 65536, 65536])] * len(BUFFERS)))
def test_small_buffers_compile_or_name_the_buffer(sizes):
    cfg = dataclasses.replace(load_hardware("sat-small"),
                              **{f"{b}_buffer_bytes": s for b, s in zip(BUFFERS, sizes)})
    try:
        satc.compile("mlp", input_shapes={"x": (4, 64)}, hw=cfg, sparsity="bdwp:2:8")
    except SatcError as e:
        assert isinstance(e, CompileError), e
        assert "layer '" in str(e) and any(b in str(e) for b in BUFFERS), e
        COUNTS["compile: clear error"] += 1
        return
    COUNTS["compile: compiled"] += 1


@pytest.mark.slow
@MANY
@given(st.sampled_from(FIELDS), TOML_VALUES)
def test_wrong_typed_field_many(scratch, field, value):
    test_wrong_typed_field.hypothesis.inner_test(scratch, field, value)


@pytest.mark.slow
@MANY
@given(st.data())
def test_broken_text_many(scratch, data):
    test_broken_text.hypothesis.inner_test(scratch, data)
