"""Run independent jobs on a dask.distributed cluster and collect one row per job.

A LocalCluster over the local cores by default, or an existing scheduler
(``scheduler="tcp://host:8786"``), so the same sweep runs on a cluster (its
workers need satc installed). Rows are collected as jobs finish
(``on_row`` sees each at once, e.g. to cache it); a job whose function raises
becomes a row with its error; a worker that dies has its unfinished jobs
re-run elsewhere by the scheduler; Ctrl-C stops the run and keeps the rows
already finished.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

Row = dict[str, Any]


@dataclass
class RunResult:
    """Rows in job order (``None`` for jobs not finished) and whether Ctrl-C stopped the run."""

    rows: list[Row | None]
    interrupted: bool = False


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """A Client of ``scheduler``, or of a new LocalCluster with ``workers`` single-threaded
    processes (default: one per core)."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        yield client


def _guarded(fn: Callable[[Any], Row], job: Any) -> Row:
    """``fn(job)``, or a row holding the error it raised; ``satc_error`` says whether satc
    refused the job itself (the same inputs give the same error: worth caching)."""
    from satc.errors import SatcError

    try:
        return fn(job)
    except Exception as e:       # noqa: BLE001 -- every failure becomes a row, not a lost sweep
        return {"error": f"{type(e).__name__}: {e}", "satc_error": isinstance(e, SatcError)}


def run_jobs(fn: Callable[[Any], Row], jobs: Sequence[Any], client: Any,
             on_row: Callable[[int, Row], None] | None = None, progress: bool = True) -> RunResult:
    """Run ``fn`` on every job through ``client``; rows come back in job order."""
    from distributed import as_completed
    from tqdm import tqdm

    rows: list[Row | None] = [None] * len(jobs)
    futures = {client.submit(_guarded, fn, job, pure=False): i for i, job in enumerate(jobs)}
    bar = tqdm(total=len(jobs), unit="job", disable=not progress or not jobs, leave=False)
    try:
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                rows[i] = fut.result()
            except Exception as e:   # noqa: BLE001 -- e.g. KilledWorker after repeated worker deaths
                rows[i] = {"error": f"{type(e).__name__}: {e}"}
            if on_row:
                on_row(i, rows[i])
            bar.update()
            fut.release()
    except KeyboardInterrupt:
        client.cancel(list(futures))
        return RunResult(rows, interrupted=True)
    finally:
        bar.close()
    return RunResult(rows)
