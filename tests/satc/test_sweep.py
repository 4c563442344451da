"""The design-space sweep: points, speedups over dense on the same hardware, CSV and plot."""

from __future__ import annotations

import csv

from satc.sweep import format_table, plot, run_sweep, write_csv


def test_sweep_measures_every_point(tmp_path):
    points = run_sweep("mlp", 8, [8, 16], [77.0], ["bdwp:2:8"], hw="sat-vcu1525", jobs=2)
    assert [(p.array, p.sparsity) for p in points] == [(8, "dense"), (8, "bdwp:2:8"),
                                                       (16, "dense"), (16, "bdwp:2:8")]
    dense8, dense16 = points[0], points[2]
    assert dense8.speedup == dense16.speedup == 1.0
    assert dense16.cycles < dense8.cycles, "a bigger array finishes the same step sooner"
    assert points[1].speedup == dense8.cycles / points[1].cycles
    assert all(p.cycles > 0 and p.images_per_s > 0 for p in points)
    write_csv(points, tmp_path / "s.csv")
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert len(rows) == 4 and rows[1]["sparsity"] == "bdwp:2:8"
    plot(points, tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert "speedup" in format_table(points)
