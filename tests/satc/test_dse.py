"""Design-space pieces without a cluster: the search space, the cache key and store, Pareto fronts."""

from __future__ import annotations

import dataclasses

import pytest

from satc.backends.sat.config import load_hardware
from satc.dse.cache import ResultCache, compiler_version, result_key
from satc.dse.pareto import front, plot_fronts
from satc.dse.space import onchip_bytes, parse_axis, points, variant
from satc.errors import ConfigError


def test_grid_ties_fields_and_samples_deterministically():
    axes = [parse_axis("rows+cols=8,16"), parse_axis("dram_bandwidth_gbps=38.5,77"),
            parse_axis("precision=fp32,mixed")]
    grid = points(axes)
    assert len(grid) == 8 and grid[0] == {"rows": 8, "cols": 8, "dram_bandwidth_gbps": 38.5,
                                          "precision": "fp32"}
    sample = points(axes, sample=3, seed=1)
    assert sample == points(axes, sample=3, seed=1) and len(sample) == 3
    assert all(p in grid for p in sample)
    cfg = variant(load_hardware("sat-small"), grid[-1])
    assert (cfg.rows, cfg.cols, cfg.precision) == (16, 16, "mixed") and "rows=16" in cfg.name


def test_variant_is_validated_and_fixed_fields_refused():
    with pytest.raises(ConfigError, match="'vector_lanes'"):
        variant(load_hardware("sat-small"), {"vector_lanes": 0})
    with pytest.raises(ConfigError, match="'nm_patterns'"):
        parse_axis("nm_patterns=1")
    with pytest.raises(ConfigError, match="share a type"):
        parse_axis("rows+clock_mhz=8")


def test_onchip_bytes():
    assert onchip_bytes(load_hardware("sat-small")) == 4 * 65536


def test_cache_key_changes_with_every_input(tmp_path):
    cfg = load_hardware("sat-small")
    k = result_key("g", "dense", cfg, {"batch": 8})
    assert k == result_key("g", "dense", cfg, {"batch": 8})
    others = [result_key("h", "dense", cfg, {"batch": 8}), result_key("g", "bdwp:2:8", cfg, {"batch": 8}),
              result_key("g", "dense", dataclasses.replace(cfg, mac_dense_fp32_pj=3.0), {"batch": 8}),
              result_key("g", "dense", cfg, {"batch": 16})]
    assert len({k, *others}) == 5
    assert compiler_version().startswith("0.1.0+")
    cache = ResultCache(tmp_path / "c")
    assert cache.get(k) is None
    cache.put(k, {"cycles": 7})
    assert cache.get(k) == {"cycles": 7} and list((tmp_path / "c").glob("*.tmp")) == []
    assert ResultCache(None).get(k) is None


def test_pareto_front_by_hand(tmp_path):
    #          (cycles, energy)
    pts = [(10, 5.0), (20, 3.0), (15, 6.0), (30, 3.0), (10, 5.0), (40, 1.0)]
    # (15, 6) is dominated by (10, 5); (30, 3) by (20, 3); equal points do not dominate each other
    assert front(pts) == [True, True, False, False, True, True]
    plot_fronts([p[0] for p in pts], [("mJ", [p[1] for p in pts])], [str(i) for i in range(6)],
                "cycles", tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000
