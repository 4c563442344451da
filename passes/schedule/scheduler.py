"""Entry points: schedule a program (or its task graph) and the result object.

Methods:

* ``inorder`` -- the program's own order, timed by the cycle model
  (:func:`satc.backends.sat.timing.simulate`); nops are left out of the
  task list but their time is in the timeline;
* ``list`` -- bottom-level list scheduling, left-shifted;
* ``cpsat`` -- CP-SAT (whole graph, or rolling-horizon windows), hinted with
  the *warm start*: the better of the list schedule and the program order
  left-shifted, improved by forward-backward passes
  (:mod:`satc.passes.schedule.improve`); the result is left-shifted and
  never worse than the warm start, so never worse than ``list`` nor than the
  program's own order.

A result's ``starts`` (of ``list`` and ``cpsat``) are exactly what the cycle
model reports for :func:`satc.passes.schedule.emit.emit_program`'s program.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from satc.backends.sat.checker import check_program
from satc.backends.sat.isa import ENGINES
from satc.backends.sat.program import Program
from satc.errors import ScheduleError
from satc.passes.schedule.cpsat import SolverOptions, cpsat_schedule
from satc.passes.schedule.improve import forward_backward
from satc.passes.schedule.listsched import compact, list_schedule
from satc.passes.schedule.taskgraph import TaskGraph, build_task_graph

METHODS: tuple[str, ...] = ("inorder", "list", "cpsat")


@dataclass(frozen=True)
class ScheduleResult:
    """A schedule of a task graph and how it was found.

    ``starts[t]`` is the start cycle of task ``t``; ``extra_edges`` are the
    capacity-chain edges the schedule relies on besides the graph's
    dependencies (emitted as tokens too). ``status`` is ``OPTIMAL`` when the
    makespan equals a proven lower bound, else ``FEASIBLE``;
    ``solver_status`` / ``solver_bound`` are CP-SAT's own (one model only;
    ``window_status`` counts the statuses of the windows). ``baselines`` holds
    the makespans of the methods computed on the way (``inorder`` always).
    """

    graph: TaskGraph
    method: str
    starts: np.ndarray
    extra_edges: tuple[tuple[int, int], ...]
    solver_status: str | None
    solver_bound: int | None
    seconds: float
    windows: int
    window_status: dict[str, int]
    interrupted: bool
    baselines: dict[str, int]

    @property
    def ends(self) -> np.ndarray:
        """End cycle of every task."""
        return self.starts + self.graph.durations

    @property
    def makespan(self) -> int:
        """Cycles from the first start to the last end (the inorder method includes nops)."""
        if self.method == "inorder":
            return self.graph.inorder_makespan
        return int(self.ends.max()) if self.graph.n else 0

    @property
    def lower_bounds(self) -> dict[str, int]:
        """Work and critical-path bounds, and CP-SAT's proven bound when there is one."""
        b = self.graph.lower_bounds()
        if self.solver_bound is not None:
            b["solver"] = self.solver_bound
        return b

    @property
    def lower_bound(self) -> int:
        """The best proven lower bound on the makespan."""
        return max(self.lower_bounds.values())

    @property
    def ratio(self) -> float:
        """makespan / lower bound (1.0: proven optimal)."""
        return self.makespan / self.lower_bound if self.lower_bound else 1.0

    @property
    def status(self) -> str:
        """OPTIMAL if the makespan meets a proven lower bound, else FEASIBLE."""
        return "OPTIMAL" if self.makespan <= self.lower_bound else "FEASIBLE"

    def engine_order(self) -> dict[str, list[int]]:
        """Task ids of each engine in start order."""
        eng = self.graph.engine_ids
        order = np.lexsort((np.arange(self.graph.n), self.starts))
        return {e: [int(t) for t in order if eng[t] == k] for k, e in enumerate(ENGINES)}

    def stream_order(self) -> list[int]:
        """Task ids in the order :func:`~satc.passes.schedule.emit.emit_program` writes them."""
        return [int(t) for t in np.lexsort((np.arange(self.graph.n), self.graph.engine_ids,
                                            self.starts))]

    def starts_by_index(self) -> dict[int, int]:
        """{program instruction index: start cycle} of every task."""
        return {t.index: int(s) for t, s in zip(self.graph.tasks, self.starts)}

    def check(self) -> int:
        """Validate with the independent checker against the graph's budgets; returns the makespan."""
        from satc.passes.schedule.check import check_schedule
        return check_schedule(self.graph.program, self.starts_by_index(), self.graph.capacity)


def schedule_graph(graph: TaskGraph, method: str = "cpsat", *, time_limit_s: float = 10.0,
                   workers: int = 1, seed: int = 0, window: int = 400,
                   progress: bool = False, interleave: bool = True) -> ScheduleResult:
    """Schedule ``graph`` with ``method`` (see the module docstring)."""
    if method not in METHODS:
        raise ScheduleError(f"unknown scheduling method {method!r}; use one of {list(METHODS)}")
    if window < 1 or workers < 1 or time_limit_s <= 0:
        raise ScheduleError(f"need window >= 1, workers >= 1 and time_limit_s > 0, got "
                            f"window={window}, workers={workers}, time_limit_s={time_limit_s}")
    t0 = time.perf_counter()
    baselines = {"inorder": graph.inorder_makespan}
    if method == "inorder":
        try:
            _, extra = compact(graph, graph.inorder_start)
        except ScheduleError:       # the program as written exceeds a budget passed in: check() says so
            extra = []
        return ScheduleResult(graph, method, graph.inorder_start.copy(), tuple(extra), None, None,
                              time.perf_counter() - t0, 0, {}, False, baselines)
    ls, ls_extra = compact(graph, list_schedule(graph))
    baselines["list"] = int((ls + graph.durations).max()) if graph.n else 0
    if method == "list":
        return ScheduleResult(graph, method, ls, tuple(ls_extra), None, None,
                              time.perf_counter() - t0, 0, {}, False, baselines)
    warm, warm_extra = ls, ls_extra
    try:
        own, own_extra = compact(graph, graph.inorder_start)
        if graph.n and (own + graph.durations).max() < baselines["list"]:
            warm, warm_extra = own, own_extra
    except ScheduleError:           # the program as written exceeds a budget passed in
        pass
    warm, warm_extra = forward_backward(graph, warm, warm_extra)
    opts = SolverOptions(time_limit_s, workers, seed, window, progress, interleave)
    out = cpsat_schedule(graph, warm, opts)
    cp, cp_extra = compact(graph, out.starts)
    if graph.n and (cp + graph.durations).max() > (warm + graph.durations).max():
        cp, cp_extra = warm, warm_extra
    return ScheduleResult(graph, method, cp, tuple(cp_extra), out.solver_status, out.solver_bound,
                          time.perf_counter() - t0, out.windows, out.window_status, out.interrupted,
                          baselines)


def schedule_program(program: Program, method: str = "cpsat", *,
                     labels: Sequence[str] | None = None, time_limit_s: float = 10.0,
                     workers: int = 1, seed: int = 0, window: int = 400,
                     include_tokens: bool = False, capacity: Mapping[str, int] | None = None,
                     progress: bool = False, interleave: bool = True) -> ScheduleResult:
    """Build the task graph of ``program`` and schedule it.

    ``method``: ``"cpsat"``, ``"list"`` or ``"inorder"``. ``labels``: one name
    per instruction (layer/stage/tile, '/'-separated). ``time_limit_s``,
    ``workers``, ``seed``, ``window``, ``interleave``: CP-SAT settings (see
    :class:`~satc.passes.schedule.cpsat.SolverOptions`; one worker and a fixed
    seed give a reproducible schedule). ``include_tokens`` keeps the
    program's own token edges as dependencies; ``capacity`` overrides buffer
    budgets in bytes. ``progress`` shows a tqdm bar. Ctrl-C during a CP-SAT
    solve returns the best schedule found so far (``result.interrupted``). A program the
    checker refuses (:func:`~satc.backends.sat.checker.check_program`: a race between
    engines, an access out of bounds, ...) raises ProgramCheckError naming the instruction.
    """
    check_program(program)
    graph = build_task_graph(program, labels, include_tokens=include_tokens, capacity=capacity)
    return schedule_graph(graph, method, time_limit_s=time_limit_s, workers=workers, seed=seed,
                          window=window, progress=progress, interleave=interleave)
