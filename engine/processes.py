"""Which process is this, and is a given one still running: a pid plus its start time.

A pid alone is reused once its process is gone, so whoever records "process X is doing this" (the run
log's jobs, an atomic write's temporary file) records the start time too, and a later check that finds
the same pid with another start time knows the recorder is dead.
"""

from __future__ import annotations

import os
from pathlib import Path


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not taken for it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def process_alive(pid: int, started: str) -> bool:
    """Whether process `pid`, started at `started` (as `process_start` gave it), still runs."""
    if not Path("/proc").is_dir():  # no /proc: the pid alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return process_start(pid) == started
