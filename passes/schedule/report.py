"""Looking at schedules: text report, per-layer table, critical path, Perfetto trace, Gantt chart.

Labels are '/'-separated paths (``"conv2/bp/t3"``); the per-layer table
groups tasks by the first ``depth`` components. Times are cycles, except in
the trace, whose timestamps are microseconds at the config's clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from satc.backends.sat.isa import ENGINES
from satc.passes.schedule.scheduler import ScheduleResult

from satc.atomic import save_figure, write_text


@dataclass(frozen=True)
class PathStep:
    """One task on the schedule's critical path and what it waited for (``via``)."""

    task: int
    start: int
    end: int
    via: str


@dataclass(frozen=True)
class LayerRow:
    """Per-group numbers: tasks, summed work, [first start, last end), bound and ratios."""

    group: str
    tasks: int
    work: int
    start: int
    end: int
    bound: int

    @property
    def span(self) -> int:
        """Cycles from the group's first start to its last end."""
        return self.end - self.start

    @property
    def ratio(self) -> float:
        """span / max(group work bound, group critical path)."""
        return self.span / self.bound if self.bound else 1.0


def engine_utilisation(result: ScheduleResult) -> dict[str, float]:
    """Busy cycles / makespan of every engine."""
    busy = np.bincount(result.graph.engine_ids, weights=result.graph.durations, minlength=len(ENGINES))
    ms = result.makespan
    return {e: float(busy[k] / ms) if ms else 0.0 for k, e in enumerate(ENGINES)}


def critical_path(result: ScheduleResult) -> list[PathStep]:
    """The chain of tight constraints ending at the last task, first task first.

    From the task that ends last, repeatedly step to a dependency (``dep``),
    capacity chain (``capacity``), engine predecessor (``engine``) or previous
    task on the shared DRAM channel (``channel``) whose end (plus the edge's lag
    for ``dep`` and ``capacity``) is exactly when the task starts; stops at
    cycle 0 or at a gap (``start``).
    """
    g = result.graph
    if not g.n:
        return []
    starts, ends = result.starts, result.ends
    extra: dict[int, list[int]] = {}
    for u, v in result.extra_edges:
        extra.setdefault(v, []).append(u)
    prev_on: dict[int, int] = {}
    for order in result.engine_order().values():
        prev_on.update(zip(order[1:], order[:-1]))
    on_channel = [int(t) for t in np.lexsort((np.arange(g.n), starts)) if g.channel[t]]
    prev_chan = dict(zip(on_channel[1:], on_channel[:-1]))
    eng = g.engine_ids

    def lag(u: int, v: int) -> int:
        return g.tasks[u].delay if eng[u] != eng[v] else 0
    t = int(np.lexsort((np.arange(g.n), ends))[-1])
    path = []
    while True:
        s = int(starts[t])
        nxt = None
        for via, cands in (("dep", g.preds[t]), ("capacity", extra.get(t, ())),
                           ("engine", [prev_on[t]] if t in prev_on else []),
                           ("channel", [prev_chan[t]] if t in prev_chan else [])):
            tight = [u for u in cands if ends[u] + (lag(u, t) if via in ("dep", "capacity") else 0) == s]
            if tight:
                nxt = (max(tight), via)
                break
        path.append(PathStep(t, s, int(ends[t]), nxt[1] if nxt and s else "start"))
        if nxt is None or s == 0:
            break
        t = nxt[0]
    return path[::-1]


def _group(label: str, depth: int) -> str:
    return "/".join(label.split("/")[:depth]) if label else "(unlabelled)"


def layer_table(result: ScheduleResult, depth: int = 1) -> list[LayerRow]:
    """One row per label group (first ``depth`` path components), by first start."""
    g = result.graph
    groups: dict[str, list[int]] = {}
    for t in g.tasks:
        groups.setdefault(_group(t.label, depth), []).append(t.id)
    d, eng = g.durations, g.engine_ids
    rows = []
    for name, ids in groups.items():
        member = set(ids)
        longest: dict[int, int] = {}
        for t in ids:                               # ids ascend: a topological order
            longest[t] = int(d[t]) + max((longest[u] for u in g.preds[t] if u in member), default=0)
        per_engine = np.bincount(eng[ids], weights=d[ids], minlength=len(ENGINES))
        rows.append(LayerRow(name, len(ids), int(d[ids].sum()), int(result.starts[ids].min()),
                             int(result.ends[ids].max()), max(int(per_engine.max()), max(longest.values()))))
    return sorted(rows, key=lambda r: (r.start, r.group))


def format_report(result: ScheduleResult, depth: int = 1, path_lines: int = 40) -> str:
    """A text report: makespan, bounds, status, engine utilisation, critical path, per-layer table."""
    g = result.graph
    b = result.lower_bounds
    lines = [f"schedule: {result.method}, {g.n} tasks, {len(g.edges())} dependencies"
             f"{' (program tokens kept)' if g.token_edges else ''}",
             f"makespan {result.makespan} cycles ({result.makespan / g.program.config.clock_mhz:.2f} us), "
             f"status {result.status}, makespan / lower bound = {result.ratio:.4f}",
             "lower bounds: " + ", ".join(f"{k} {v}" for k, v in b.items()),
             "baselines: " + ", ".join(f"{k} {v}" for k, v in result.baselines.items())]
    if result.method == "cpsat":
        counts = ", ".join(f"{k} {v}" for k, v in sorted(result.window_status.items()))
        solver = f"solver status {result.solver_status}" if result.windows == 1 else \
            f"{result.windows} windows ({counts})"
        lines.append(f"cp-sat: {solver}, {result.seconds:.2f} s"
                     f"{', interrupted: best schedule so far' if result.interrupted else ''}")
    lines += ["", f"{'engine':<8} {'busy':>12} {'util':>7}"]
    busy = np.bincount(g.engine_ids, weights=g.durations, minlength=len(ENGINES))
    util = engine_utilisation(result)
    lines += [f"{e:<8} {int(busy[k]):>12} {util[e]:>7.1%}" for k, e in enumerate(ENGINES)]
    if g.channel.any():
        chan = g.channel_work()
        lines.append(f"{'dram':<8} {chan:>12} {chan / result.makespan if result.makespan else 0.0:>7.1%}"
                     "  (the DRAM channel load and store share)")
    path = critical_path(result)
    on_path = np.bincount([g.engine_ids[p.task] for p in path],
                          weights=[p.end - p.start for p in path], minlength=len(ENGINES))
    lines += ["", f"critical path: {len(path)} tasks, busy "
              + ", ".join(f"{e} {int(on_path[k])}" for k, e in enumerate(ENGINES) if on_path[k])]
    shown = path if len(path) <= path_lines else path[:path_lines // 2] + [None] + path[-(path_lines // 2):]
    for p in shown:
        if p is None:
            lines.append(f"  ... {len(path) - 2 * (path_lines // 2)} more")
            continue
        t = g.tasks[p.task]
        lines.append(f"  {p.start:>10} {p.end:>10}  {t.engine:<7} {t.name}  ({p.via})")
    rows = layer_table(result, depth)
    lines += ["", f"{'layer':<24} {'tasks':>6} {'work':>10} {'start':>10} {'end':>10} {'span':>10} "
              f"{'share':>6} {'bound':>10} {'ratio':>6}"]
    for r in rows:
        share = r.span / result.makespan if result.makespan else 0.0
        lines.append(f"{r.group[:24]:<24} {r.tasks:>6} {r.work:>10} {r.start:>10} {r.end:>10} "
                     f"{r.span:>10} {share:>6.1%} {r.bound:>10} {r.ratio:>6.2f}")
    return "\n".join(lines)


def trace_events(result: ScheduleResult) -> dict:
    """The schedule in Chrome / Perfetto trace-event JSON form: one track (tid) per engine."""
    g = result.graph
    mhz = g.program.config.clock_mhz
    events: list[dict] = [{"name": "process_name", "ph": "M", "pid": 0, "tid": 0,
                           "args": {"name": f"SAT {g.program.config.name} ({result.method})"}}]
    for k, e in enumerate(ENGINES):
        events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": k, "args": {"name": e}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": 0, "tid": k,
                       "args": {"sort_index": k}})
    for t in g.tasks:
        s = int(result.starts[t.id])
        events.append({"name": t.name, "cat": t.op, "ph": "X", "pid": 0,
                       "tid": ENGINES.index(t.engine), "ts": s / mhz, "dur": t.duration / mhz,
                       "args": {"task": t.id, "instruction": t.index, "start_cycle": s,
                                "end_cycle": s + t.duration}})
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"makespan_cycles": result.makespan, "lower_bound": result.lower_bound,
                          "method": result.method, "status": result.status}}


def write_trace(result: ScheduleResult, path: str | Path) -> None:
    """Write the Perfetto / chrome://tracing JSON of ``result`` to ``path`` (atomically)."""
    write_text(path, json.dumps(trace_events(result), separators=(",", ":")))


def write_gantt(result: ScheduleResult, path: str | Path, depth: int = 1) -> None:
    """Write a Gantt chart (one row per engine, colour per label group or op) as an image."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    g = result.graph
    labelled = any(t.label for t in g.tasks)
    keys = [_group(t.label, depth) if labelled else t.op for t in g.tasks]
    names = list(dict.fromkeys(keys))
    cmap = plt.get_cmap("tab20")
    colour = {k: cmap(i % 20) for i, k in enumerate(names)}
    fig, ax = plt.subplots(figsize=(14, 4))
    for k, e in enumerate(ENGINES):
        ids = [t.id for t in g.tasks if t.engine == e]
        if ids:
            ax.broken_barh([(int(result.starts[i]), g.tasks[i].duration) for i in ids], (k - 0.4, 0.8),
                           facecolors=[colour[keys[i]] for i in ids],
                           edgecolor="white" if g.n <= 2000 else "none", linewidth=0.3)
    ax.set_yticks(range(len(ENGINES)), ENGINES)
    ax.invert_yaxis()
    ax.set_xlabel("cycle")
    ax.set_xlim(0, max(result.makespan, 1))
    ax.set_title(f"{result.method}: makespan {result.makespan} cycles, "
                 f"lower bound {result.lower_bound} (ratio {result.ratio:.3f})")
    if len(names) <= 20:
        ax.legend(handles=[Patch(color=colour[n], label=n) for n in names], loc="upper left",
                  bbox_to_anchor=(1.0, 1.0), fontsize="small")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
