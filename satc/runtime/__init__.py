"""The runtime: one session owns a program's emulator, live state and I/O manifest.

:class:`Session` is what ``satc.compile(...).step`` and ``satc run`` train
through; :class:`Manifest` is the versioned, explicit JSON in a program file
that says how to feed it; :class:`LiveState` is ``prog.state``;
:func:`open_run` / :func:`train` checkpoint and resume ``satc run``.
"""

from satc.runtime.checkpoint import open_run, save_checkpoint, train
from satc.runtime.live_state import LiveState
from satc.runtime.manifest import MANIFEST_KEY, MANIFEST_VERSION, Manifest, rescheduled
from satc.runtime.session import Session, StepOutputs

__all__ = ["LiveState", "MANIFEST_KEY", "MANIFEST_VERSION", "Manifest", "Session", "StepOutputs",
           "open_run", "rescheduled", "save_checkpoint", "train"]
