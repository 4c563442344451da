"""The Dask sweep: wall time on 1 vs 2 LocalCluster workers, a cached re-run, and a killed worker.

    .venv/bin/python bench/sweep.py [--model cnn --batch 16 --repeats 3]

The sweep is 24 points (array 8/16/32 x DRAM 38.5/77 GB/s x dense and three
N:M modes). Prints the median wall time of each worker count (no cache) and
their ratio, the time of a second run served from the cache, and a run on
two workers in which one worker process is killed after the third finished
row: the sweep still completes, with every row.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import statistics
import tempfile
import time

from satc.dse.space import parse_axis
from satc.sweep import run_sweep

AXES = [parse_axis("rows+cols=8,16,32"), parse_axis("dram_bandwidth_gbps=38.5,77")]
MODES = ["bdwp:2:8", "bdwp:2:4", "bdwp:1:8"]


def _timed(**kw) -> tuple[float, list]:
    t = time.perf_counter()
    res = run_sweep(axes=AXES, sparsities=MODES, progress=False, **kw)
    return time.perf_counter() - t, res.points


def _killed_worker_run(model: str, batch: int) -> tuple[int, int, bool]:
    """(rows measured, rows in the sweep, whether a worker was killed) on a 2-worker cluster."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        done, killed = [], []

        def kill_one(i: int, row: dict) -> None:
            done.append(i)
            if len(done) == 3:
                nanny = next(iter(cluster.workers.values()))
                os.kill(nanny.process.process.pid, signal.SIGKILL)
                killed.append(nanny.name)

        pts = run_sweep(model, batch, AXES, MODES, scheduler=cluster.scheduler_address, cache_dir=None,
                        progress=False, on_row=kill_one).points
    return sum(p.ok for p in pts), len(pts), bool(killed)


def main() -> None:
    """Run the three measurements and print their table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    common = {"model": args.model, "batch": args.batch}
    walls = {w: [_timed(workers=w, cache_dir=None, **common)[0] for _ in range(args.repeats)] for w in (1, 2)}
    with tempfile.TemporaryDirectory() as cache:
        first, pts = _timed(workers=2, cache_dir=cache, **common)
        again, cached = _timed(workers=2, cache_dir=cache, **common)
    ok, n, killed = _killed_worker_run(args.model, args.batch)
    med = {w: statistics.median(v) for w, v in walls.items()}
    print(f"sweep: {args.model} batch {args.batch}, {len(pts)} points, {args.repeats} repeats, "
          f"{os.cpu_count()} cores")
    print("| run | median wall s | ratio to 1 worker |\n|---|---|---|")
    for w in (1, 2):
        print(f"| {w} worker{'s' if w > 1 else ''}, no cache | {med[w]:.1f} | {med[w] / med[1]:.2f} |")
    print(f"| 2 workers, filling the cache | {first:.1f} | {first / med[1]:.2f} |")
    print(f"| same sweep again, from the cache ({sum(p.cached for p in cached)} of {len(cached)} hits) | "
          f"{again:.1f} | {again / med[1]:.2f} |")
    print(f"killed one of 2 workers after the 3rd row: {'killed' if killed else 'NOT killed'}, "
          f"{ok} of {n} rows measured")


if __name__ == "__main__":
    main()
