"""The design-space sweep on a real two-worker LocalCluster: points, speedups, energy, the cache,
failed points as rows, CSV, table and Pareto plot."""

from __future__ import annotations

import csv

import pytest

from satc.dse.space import parse_axis
from satc.errors import ConfigError
from satc.sweep import format_table, plot, run_sweep, write_csv

ARRAYS = parse_axis("rows+cols=8,16")


def test_sweep_on_two_workers_then_from_the_cache(tmp_path):
    """Six points on a real two-worker LocalCluster; 2:32 is not supported by sat-vcu1525, so
    those two points are error rows beside the good ones, not a lost sweep."""
    seen = []
    res = run_sweep("mlp", 8, [ARRAYS], ["bdwp:2:8", "bdwp:2:32"], hw="sat-vcu1525", workers=2,
                    cache_dir=tmp_path / "cache", progress=False, on_row=lambda i, r: seen.append(i))
    assert not res.interrupted and sorted(seen) == list(range(6))
    assert [(dict(p.hw)["rows"], p.sparsity) for p in res.points] == [
        (8, "dense"), (8, "bdwp:2:8"), (8, "bdwp:2:32"), (16, "dense"), (16, "bdwp:2:8"), (16, "bdwp:2:32")]
    bad = [res.points[2], res.points[5]]
    assert all(not p.ok and "CompileError" in p.error and "2:32" in p.error for p in bad)
    assert "error: CompileError" in format_table(res.points)
    pts = [p for p in res.points if p.ok]
    assert all(not p.cached for p in pts)
    dense8, dense16 = pts[0], pts[2]
    assert dense8.speedup == dense16.speedup == 1.0
    assert dense16.cycles < dense8.cycles, "a bigger array finishes the same step sooner"
    assert pts[1].speedup == dense8.cycles / pts[1].cycles
    assert all(p.energy_mj > 0 and p.watts > 0 and p.gops_per_w > 0 for p in pts)
    assert pts[0].onchip_mib == 9.0                 # sat-vcu1525: 4 + 2 + 2 + 1 MiB
    again = run_sweep("mlp", 8, [ARRAYS], ["bdwp:2:8", "bdwp:2:32"], hw="sat-vcu1525",
                      cache_dir=tmp_path / "cache", progress=False,
                      on_row=lambda i, r: pytest.fail("recomputed a cached point"))
    assert all(p.cached for p in again.points)
    assert [p.cycles for p in again.points] == [p.cycles for p in res.points]

    write_csv(pts, tmp_path / "s.csv")
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert len(rows) == 4 and rows[1]["sparsity"] == "bdwp:2:8" and rows[2]["rows"] == "16"
    plot(pts, tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 1000
    table = format_table(pts)
    assert "speedup" in table and "Pareto fronts" in table


def test_bad_axis_names_the_field():
    with pytest.raises(ConfigError, match="'rowz'"):
        parse_axis("rowz=8")
    with pytest.raises(ConfigError, match="not a int"):
        parse_axis("rows=eight")
    with pytest.raises(ConfigError, match="FIELD=V1"):
        parse_axis("rows")
    assert parse_axis("dram_shared=true,False") == (("dram_shared",), (True, False))
    with pytest.raises(ConfigError, match="dram_shared: 'yes' is not a bool"):
        parse_axis("dram_shared=yes")


@pytest.mark.slow
def test_killing_a_worker_loses_no_row(tmp_path):
    """One of two workers is SIGKILLed after the second finished row: every row still arrives."""
    import logging
    import os
    import signal

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        done = []

        def kill_after_two(i, row):
            done.append(i)
            if len(done) == 2:
                os.kill(next(iter(cluster.workers.values())).process.process.pid, signal.SIGKILL)

        res = run_sweep("mlp", 8, [parse_axis("rows+cols=8,16,32")], ["bdwp:2:8", "bdwp:2:4"],
                        hw="sat-vcu1525", scheduler=cluster.scheduler_address, cache_dir=tmp_path,
                        progress=False, on_row=kill_after_two)
    assert len(done) == 9 and all(p.ok for p in res.points), [p.error for p in res.points]
