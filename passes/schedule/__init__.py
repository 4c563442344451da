"""Offline scheduling of SAT programs (CP-SAT, list scheduling) and schedule inspection.

Typical use (the CLI's ``satc schedule``)::

    result = schedule_program(prog, "cpsat", labels=labels, time_limit_s=10, seed=0)
    print(format_report(result))          # makespan, bounds, utilisation, critical path, layers
    result.check()                        # independent checker; ScheduleError if anything is off
    new_prog = emit_program(result)       # same results, runs in result.makespan cycles
    write_trace(result, "out.json")       # Perfetto / chrome://tracing
    write_gantt(result, "out.png")

See docs/scheduling.md for the task graph, the CP-SAT model, the window
decomposition and the token scheme.
"""

from satc.passes.schedule.check import check_schedule
from satc.passes.schedule.emit import emit_program, retoken, token_edges
from satc.passes.schedule.report import (critical_path, engine_utilisation, format_report,
                                         layer_table, trace_events, write_gantt, write_trace)
from satc.passes.schedule.scheduler import METHODS, ScheduleResult, schedule_graph, schedule_program
from satc.passes.schedule.synthetic import synthetic_program
from satc.passes.schedule.taskgraph import Task, TaskGraph, build_task_graph, byte_intervals

__all__ = [
    "build_task_graph", "TaskGraph", "Task", "byte_intervals",
    "schedule_program", "schedule_graph", "ScheduleResult", "METHODS",
    "emit_program", "retoken", "token_edges", "check_schedule",
    "format_report", "layer_table", "critical_path", "engine_utilisation", "trace_events",
    "write_trace", "write_gantt", "synthetic_program",
]
