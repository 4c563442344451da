"""Hardware config: presets, derived rates, and refusal of bad files."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from satc.backends.sat.config import (PRESET_DIR, config_from_dict, describe_hardware, list_presets,
                                      load_hardware)
from satc.errors import ConfigError


def test_presets_load():
    assert {"sat-vcu1525", "sat-small", "sat-large"} <= set(list_presets())
    for name in list_presets():
        cfg = load_hardware(name)
        assert cfg.name == name
        assert cfg.rows > 0 and cfg.cols > 0


def test_default_numbers_and_derived_rates():
    cfg = load_hardware("sat-vcu1525")
    assert (cfg.rows, cfg.cols, cfg.multipliers_per_pe) == (32, 32, 2)
    assert cfg.precision == "mixed" and cfg.clock_mhz == 200.0
    assert cfg.peak_dense_macs_per_cycle == 32 * 32 * 2
    assert cfg.peak_nm_macs_per_cycle(2, 8) == 32 * 32 * 8          # 4x dense at 2:8
    assert cfg.peak_nm_macs_per_cycle(2, 8) / cfg.peak_dense_macs_per_cycle == 4
    assert cfg.dram_bytes_per_cycle == pytest.approx(77e9 * 0.8 / 200e6)
    assert cfg.buffer_bytes == {"act": 4 << 20, "wgt": 2 << 20, "acc": 2 << 20, "vec": 1 << 20}
    assert (cfg.vector_lanes, cfg.wuve_lanes, cfg.sore_lanes) == (64, 64, 32)
    with pytest.raises(ConfigError, match="3:8"):
        cfg.peak_nm_macs_per_cycle(3, 8)


def test_describe_hardware():
    text = describe_hardware(load_hardware("sat-vcu1525"))
    assert "32x32" in text
    assert "819.2 GFLOPS" in text            # 2048 MAC/cycle * 2 * 200 MHz
    assert "3.277 TFLOPS" in text            # 2:8: 8192 MAC/cycle
    assert "4x dense" in text


def _preset_dict(name="sat-small"):
    return tomllib.loads((PRESET_DIR / f"{name}.toml").read_text())


def _write(tmp_path, data):
    lines = []
    for k, v in data.items():
        if isinstance(v, str):
            lines.append(f'{k} = "{v}"')
        elif isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        else:
            lines.append(f"{k} = {v!r}".replace("(", "[").replace(")", "]"))
    p = tmp_path / "hw.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_file_roundtrip(tmp_path):
    cfg = load_hardware(_write(tmp_path, _preset_dict()))
    assert cfg == dataclasses.replace(load_hardware("sat-small"), name=cfg.name)


@pytest.mark.parametrize("field,value,needle", [
    ("rows", "4", "expected an integer"),          # wrong type
    ("rows", 0, ">= 1"),                           # impossible
    ("cols", -3, ">= 1"),
    ("dram_efficiency", 1.5, "(0, 1]"),
    ("clock_mhz", 0.0, "> 0"),
    ("precision", "bf16", "fp32"),
    ("dataflows", ["ws", "xx"], "ws"),
    ("nm_patterns", [[9, 8]], "impossible"),       # N > M
    ("nm_patterns", [[3, 8]], "multipliers_per_pe"),   # N > USPE multipliers
    ("nm_patterns", [[1, 6]], "power of two"),
    ("act_buffer_bytes", 1 << 25, "24 bits"),
    ("dram_shared", 1, "expected true or false"),
    ("dram_shared", "yes", "expected true or false"),
    ("dram_burst_bytes", 0, ">= 1"),
    ("dram_outstanding_requests", -1, ">= 1"),
    ("act_read_bytes_per_cycle", 0, ">= 1"),
    ("wgt_read_bytes_per_cycle", 1 << 30, "at most"),
    ("vec_read_bytes_per_cycle", 64.0, "expected an integer"),
])
def test_bad_field_names_field(tmp_path, field, value, needle):
    data = _preset_dict()
    data[field] = value
    with pytest.raises(ConfigError) as e:
        load_hardware(_write(tmp_path, data))
    assert f"'{field}'" in str(e.value) and needle in str(e.value)


def test_missing_field(tmp_path):
    data = _preset_dict()
    del data["sore_lanes"]
    with pytest.raises(ConfigError, match="missing hardware config field 'sore_lanes'"):
        load_hardware(_write(tmp_path, data))


def test_unknown_field(tmp_path):
    data = _preset_dict()
    data["rowz"] = 4
    with pytest.raises(ConfigError, match="unknown hardware config field 'rowz'"):
        load_hardware(_write(tmp_path, data))


def test_bad_toml_and_unknown_preset(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text("rows = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_hardware(p)
    with pytest.raises(ConfigError, match="sat-vcu1525"):
        load_hardware("no-such-preset")


def test_dict_constructor_and_frozen():
    cfg = config_from_dict(_preset_dict())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rows = 8


@pytest.mark.parametrize("field,value,needle", [
    ("act_buffer_bytes", 65535, "not a multiple of 64"),         # not even a multiple of 4
    ("wgt_buffer_bytes", 65538, "use e.g. 65600"),              # multiple of 2, not of 4
    ("acc_buffer_bytes", 65540, "not a multiple of 64"),         # multiple of 4, not of 64
    ("vec_buffer_bytes", 100, "misaligned"),
    ("clock_mhz", 1e308, "at most 100000"),
    ("clock_mhz", 100001.0, "sane maximum"),
    ("clock_mhz", -200.0, "> 0"),
    ("dram_bandwidth_gbps", 1e300, "at most 1e+06"),
    ("vector_lanes", 0, ">= 1"),                 # count fields used as divisors
    ("wuve_lanes", -1, ">= 1"),
    ("sore_lanes", 0, ">= 1"),
    ("sore_cycles_per_element", 0, ">= 1"),
    ("nm_groups_per_cycle", 0, ">= 1"),
    ("multipliers_per_pe", 0, ">= 1"),
    ("dram_bytes", 0, ">= 1"),
])
def test_bad_alignment_clock_and_counts_name_field(tmp_path, field, value, needle):
    test_bad_field_names_field(tmp_path, field, value, needle)


def test_clock_not_finite_refused():
    for v in (float("nan"), float("inf")):
        data = _preset_dict()
        data["clock_mhz"] = v
        with pytest.raises(ConfigError, match="'clock_mhz'.*finite"):
            config_from_dict(data)


def test_all_presets_meet_alignment():
    for name in list_presets():
        cfg = load_hardware(name)
        assert all(v % 64 == 0 for v in cfg.buffer_bytes.values()), name
        assert cfg.clock_mhz <= 100000


def test_dram_and_read_port_defaults_and_printout():
    """sat-vcu1525: one shared channel, 64-byte bursts, 512 requests in flight (Little's law
    needs 308 x 64 / 64 = 308: the stream rate is the bandwidth's 308 B/cycle); read ports of
    32 rows x 8 (2:8) x 4 bytes = 1024 B/cycle."""
    cfg = load_hardware("sat-vcu1525")
    assert cfg.dram_shared is True and cfg.dram_burst_bytes == 64
    assert cfg.dram_outstanding_requests == 512
    assert cfg.dram_stream_bytes_per_cycle == pytest.approx(77e9 * 0.8 / 200e6)
    assert cfg.read_port_bytes_per_cycle == dict.fromkeys(("act", "wgt", "acc", "vec"), 32 * 8 * 4)
    few = dataclasses.replace(cfg, dram_outstanding_requests=100)
    assert few.dram_stream_bytes_per_cycle == 100 * 64 / 64
    text = describe_hardware(cfg)
    assert "one, shared by load and store; 64 B bursts, 512 in flight: a DMA streams 308.0 B/cycle" in text
    assert "act 1024 B/cycle" in text
    assert "one per DMA engine" in describe_hardware(dataclasses.replace(cfg, dram_shared=False))
    # the paper's numbers are unchanged
    assert (cfg.rows, cfg.cols, cfg.multipliers_per_pe, cfg.nm_groups_per_cycle) == (32, 32, 2, 1)
