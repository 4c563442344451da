"""CP-SAT scheduling of a task graph, whole or in rolling-horizon windows.

Model of one window (the whole graph is one window with an empty prefix):

* a start variable per task, domain ``[est, H - tail]``: ``est`` from the
  release times, engine free times and in-window predecessors, ``tail`` the
  in-window bottom level, ``H`` the makespan of the hint (so the hint is
  always a solution);
* a fixed-size interval per task; ``AddNoOverlap`` per engine, and one over
  the load and store tasks when they share the DRAM channel (``dram_shared``;
  after the prefix's last channel task);
* ``s_v >= s_u + d_u + lag_uv`` for every in-window edge (the lag: a load /
  store's ``dram_latency_cycles`` towards another engine, else 0);
* ``AddCumulative`` per on-chip buffer over the tasks' footprints and the
  prefix tasks still running (fixed intervals) against the buffer budget,
  added only when the demands could exceed it at all;
* minimise the window makespan, hinted (``AddHint``) with a heuristic
  schedule (below).

Windows are consecutive task ids (the program's reference order, so a
window's predecessors are all in it or before it). Each is solved with the
schedule before it fixed and then left-shifted; the better of it and the
window's hint (the better of the window's list schedule and its tasks in
program order; by makespan, then the sum of engine end times) is kept. The
solver runs in a worker thread so that Ctrl-C in the main thread stops the
search (``StopSearch``) and keeps the best schedule found; the windows not
yet solved are then list-scheduled in one go.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model
from tqdm import tqdm

from satc.backends.sat.isa import BUFFERS
from satc.passes.schedule.listsched import (NE, Prefix, asap, capacity_ok, list_schedule,
                                            prefix_for)
from satc.passes.schedule.taskgraph import TaskGraph


@dataclass(frozen=True)
class SolverOptions:
    """CP-SAT settings.

    ``time_limit_s`` is the budget of the whole solve (split evenly over the
    windows). With one worker it is CP-SAT's *deterministic* time (about
    seconds) so that a run is reproducible; with more workers, wall time.
    ``window``: most tasks per CP-SAT model. ``interleave``: CP-SAT's
    ``interleave_search`` -- its portfolio (LNS and full searches) run in
    deterministic batches; with one worker it is reproducible either way, and
    on scheduling models it finds far better schedules than the lone default
    search (``False``).
    """

    time_limit_s: float = 10.0
    workers: int = 1
    seed: int = 0
    window: int = 400
    progress: bool = False
    interleave: bool = True


@dataclass(frozen=True)
class CpsatOutcome:
    """Starts of every task and how the solve went."""

    starts: np.ndarray
    solver_status: str
    solver_bound: int | None
    windows: int
    window_status: dict[str, int]
    interrupted: bool


class _Progress(cp_model.CpSolverSolutionCallback):
    """Shows each improving solution and the bound on a tqdm bar."""

    def __init__(self, bar: tqdm) -> None:
        super().__init__()
        self.bar = bar

    def on_solution_callback(self) -> None:
        """Called by CP-SAT on every improving solution."""
        self.bar.set_postfix(makespan=int(self.objective_value), bound=int(self.best_objective_bound))


def _solve(solver: cp_model.CpSolver, model: cp_model.CpModel,
           callback: cp_model.CpSolverSolutionCallback | None) -> tuple[int, bool]:
    """Solve in a worker thread; Ctrl-C stops the search. Returns (status, interrupted)."""
    box: dict[str, object] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["status"] = solver.solve(model, callback)
        except BaseException as e:      # noqa: BLE001 -- re-raised in the main thread
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    interrupted = False
    while not done.is_set():            # an Event, not Thread.join: join may not survive Ctrl-C
        try:
            done.wait(0.05)
        except KeyboardInterrupt:
            interrupted = True
        if interrupted:                 # repeated: a stop before the search starts is lost
            solver.stop_search()
    if "error" in box:
        raise box["error"]
    return box["status"], interrupted


def _window_bounds(graph: TaskGraph, lo: int, hi: int, prefix: Prefix) -> tuple[np.ndarray, np.ndarray, int]:
    """(est, tail, lower bound on the window makespan)."""
    n = hi - lo
    d = graph.durations[lo:hi]
    eng = graph.engine_ids[lo:hi]
    chan = graph.channel[lo:hi]
    est = np.maximum(prefix.release, prefix.engine_free[eng])
    est[chan] = np.maximum(est[chan], prefix.channel_free)
    for i in range(n):
        for p, g in zip(graph.preds[lo + i], graph.pred_lags[lo + i]):
            if p >= lo:
                est[i] = max(est[i], est[p - lo] + d[p - lo] + g)
    tail = d.copy()
    for i in range(n - 1, -1, -1):
        for v, g in zip(graph.succs[lo + i], graph.succ_lags[lo + i]):
            if v < hi:
                tail[i] = max(tail[i], d[i] + g + tail[v - lo])
    lb = int((est + tail).max())
    for on in [eng == e for e in range(NE)] + [chan]:
        if on.any():
            lb = max(lb, int(est[on].min() + d[on].sum()))
    return est, tail, lb


def solve_window(graph: TaskGraph, lo: int, hi: int, prefix: Prefix, hint: np.ndarray,
                 opts: SolverOptions, time_limit: float,
                 bar: tqdm | None = None) -> tuple[np.ndarray | None, str, int, bool]:
    """Solve tasks ``[lo, hi)`` after ``prefix``; returns (starts or None, status, bound, interrupted).

    ``hint`` is a feasible schedule of the window; its makespan is the horizon.
    """
    n = hi - lo
    d = graph.durations[lo:hi]
    eng = graph.engine_ids[lo:hi]
    fp = graph.footprint[lo:hi]
    est, tail, lb = _window_bounds(graph, lo, hi, prefix)
    horizon = int((hint + d).max())
    m = cp_model.CpModel()
    s = [m.new_int_var(int(est[i]), horizon - int(tail[i]), f"s{lo + i}") for i in range(n)]
    iv = [m.new_fixed_size_interval_var(s[i], int(d[i]), f"t{lo + i}") for i in range(n)]
    chan = graph.channel[lo:hi]
    for on in [[iv[i] for i in range(n) if eng[i] == e] for e in range(NE)] + \
            [[iv[i] for i in range(n) if chan[i]]]:
        if len(on) > 1:
            m.add_no_overlap(on)
    last = []
    for i in range(n):
        inner = [(v - lo, g) for v, g in zip(graph.succs[lo + i], graph.succ_lags[lo + i]) if v < hi]
        for j, g in inner:
            m.add(s[j] >= s[i] + int(d[i]) + g)
        if not inner:
            last.append(i)
    for b, name in enumerate(BUFFERS):
        cap = graph.capacity[name]
        users = [i for i in range(n) if fp[i, b] > 0]
        bg = [k for k in range(len(prefix.bg_fp)) if prefix.bg_fp[k, b] > 0]
        if fp[users, b].sum() + prefix.bg_fp[bg, b].sum() <= cap:
            continue
        fixed = [m.new_fixed_size_interval_var(int(prefix.bg_start[k]),
                                               int(prefix.bg_end[k] - prefix.bg_start[k]), f"bg{b}_{k}")
                 for k in bg]
        m.add_cumulative([iv[i] for i in users] + fixed,
                         [int(fp[i, b]) for i in users] + [int(prefix.bg_fp[k, b]) for k in bg], cap)
    makespan = m.new_int_var(lb, horizon, "makespan")
    for i in last:
        m.add(makespan >= s[i] + int(d[i]))
    m.minimize(makespan)
    for i in range(n):
        m.add_hint(s[i], int(hint[i]))
    m.add_hint(makespan, horizon)
    solver = cp_model.CpSolver()
    p = solver.parameters
    p.num_workers = opts.workers
    p.random_seed = opts.seed
    p.interleave_search = opts.interleave
    p.catch_sigint_signal = False
    if opts.workers == 1:
        p.max_deterministic_time = time_limit
    else:
        p.max_time_in_seconds = time_limit
    status, interrupted = _solve(solver, m, _Progress(bar) if bar is not None else None)
    name = solver.status_name(status)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, name, lb, interrupted
    bound = max(lb, math.ceil(solver.best_objective_bound))
    return np.array([solver.value(v) for v in s], np.int64), name, bound, interrupted


def _score(graph: TaskGraph, lo: int, hi: int, starts: np.ndarray) -> tuple[int, int]:
    """(window makespan, sum over engines of the window's last end) -- smaller is better."""
    ends = starts + graph.durations[lo:hi]
    per = np.zeros(NE, np.int64)
    np.maximum.at(per, graph.engine_ids[lo:hi], ends)
    return int(ends.max()), int(per.sum())


def _shift(graph: TaskGraph, lo: int, hi: int, prefix: Prefix, starts: np.ndarray) -> np.ndarray:
    """Left-shift a window schedule; keeps the original if the shift breaks a budget."""
    out = asap(graph, starts, lo, hi, prefix)
    return out if capacity_ok(graph, out, lo, hi, prefix).all() else starts


def cpsat_schedule(graph: TaskGraph, warm: np.ndarray, opts: SolverOptions) -> CpsatOutcome:
    """CP-SAT schedule of the whole graph (one model, or windows of ``opts.window`` tasks).

    ``warm`` is a feasible schedule of the whole graph, the hint of a single
    model. A window is hinted with the better of its list schedule and its
    tasks in program order (each left-shifted after the fixed prefix).
    """
    n = graph.n
    if not n:
        return CpsatOutcome(warm, "OPTIMAL", 0, 1, {"OPTIMAL": 1}, False)
    k = math.ceil(n / opts.window)
    cuts = [round(i * n / k) for i in range(k + 1)]
    per_window = opts.time_limit_s / k
    starts = np.zeros(n, np.int64)
    statuses: Counter[str] = Counter()
    bound: int | None = None
    interrupted = False
    bar = tqdm(total=k, desc="cp-sat", unit="window", disable=not opts.progress, leave=False)
    done = 0                                    # tasks [0, done) are fixed
    try:
        for w in range(k):
            lo, hi = cuts[w], cuts[w + 1]
            if k == 1:
                prefix, ls = Prefix.empty(n), warm
            else:
                prefix = prefix_for(graph, starts, lo, hi)
                ls = _shift(graph, lo, hi, prefix, list_schedule(graph, lo, hi, prefix))
                own = asap(graph, np.arange(lo, hi), lo, hi, prefix)
                if capacity_ok(graph, own, lo, hi, prefix).all() and \
                        _score(graph, lo, hi, own) < _score(graph, lo, hi, ls):
                    ls = own
            best = ls
            _, _, lb = _window_bounds(graph, lo, hi, prefix)
            if _score(graph, lo, hi, ls)[0] <= lb:
                statuses["OPTIMAL"] += 1
                bound = lb
            else:
                cp, status, bound, interrupted = solve_window(graph, lo, hi, prefix, ls, opts,
                                                              per_window, bar if k == 1 else None)
                statuses[status] += 1
                if cp is not None:
                    cp = _shift(graph, lo, hi, prefix, cp)
                    if _score(graph, lo, hi, cp) < _score(graph, lo, hi, ls):
                        best = cp
            starts[lo:hi] = best
            done = hi
            bar.update(1)
            bar.set_postfix(makespan=int((starts[:hi] + graph.durations[:hi]).max()))
            if interrupted:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if done < n:
        starts[done:] = list_schedule(graph, done, n, prefix_for(graph, starts, done, n))
    if k == 1:
        status = next(iter(statuses), "UNKNOWN")
    else:
        status, bound = "FEASIBLE", None
    return CpsatOutcome(starts, status, bound, k, dict(statuses), interrupted)
