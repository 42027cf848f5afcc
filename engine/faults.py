"""Named fault-injection points, so crash tests know exactly where a kill landed.

Set `MERGELAB_FAULT=<point>` (or several, comma-separated) and the process kills itself with SIGKILL
the moment execution reaches that point: no `finally`, no atexit, no flushed buffer runs, as when the
power goes or the OOM killer strikes. tests/test_faults.py restarts after each kill and checks that
nothing half-done is visible. The variable is read at every call, so a test may also set it mid-process.

Points:

- `export.before_rename`: an atomic write's temporary file(s) are fully written and closed, their
  final names not yet taken (engine/io/atomic.py: `atomic_path` and `all_or_nothing`, so every
  checkpoint, sidecar, recipe and cache file).
- `runlog.before_commit`: inside a run-log write transaction, its rows written, before the commit
  (engine/runs/log.py: `record`, `update_run`, `add_job`, `update_job`).
- `job.mid_run`: a job has just had a progress report recorded (engine/jobs/runner.py:
  `JobContext.report`), so it dies running with its first step on record.
- `store.mid_build`: a built task store has its first task row written, the others not yet
  (engine/store/built.py: `open_built_store`).
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "MERGELAB_FAULT"
POINTS = frozenset({"export.before_rename", "runlog.before_commit", "job.mid_run", "store.mid_build"})


def fault_point(name: str) -> None:
    """SIGKILL this process if `MERGELAB_FAULT` names `name`; otherwise return at once."""
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name!r}; the points are {sorted(POINTS)}")
    if name in os.environ.get(FAULT_ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)
