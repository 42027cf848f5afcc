"""How long a job has run and about how long it has left, from its progress record.

The rate comes from the steps since the job's first step (`stepping_since`, `stepping_from`), not from its
start: a job's set-up (opening a workspace, a zero-shot evaluation) is not a step, and counting it would
make the first estimates far too long. The elapsed time since that first step runs on to now, so a step
that is late makes the estimate grow instead of freezing it. A job whose total changes (a new phase)
starts its rate afresh (the runner moves `stepping_since`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class JobTiming:
    elapsed_s: float  # since the job started (to its end, once finished)
    left_s: float | None  # None until a step after the first gives a rate, and once finished


def job_timing(
    *,
    started: float | None,
    finished: float | None,
    step: int,
    total: int,
    stepping_since: float | None,
    stepping_from: int,
    now: float | None = None,
) -> JobTiming | None:
    """The timing of a job that started at `started` (Unix seconds; None: not started yet, no timing)."""
    if started is None:
        return None
    now = time.time() if now is None else now
    if finished is not None:
        return JobTiming(max(0.0, finished - started), None)
    done = step - stepping_from
    if stepping_since is None or total <= 0 or done < 1:
        return JobTiming(max(0.0, now - started), None)
    per_step = max(0.0, now - stepping_since) / done
    return JobTiming(max(0.0, now - started), max(0, total - step) * per_step)


def of_status(status, *, now: float | None = None) -> JobTiming | None:
    """The timing of a runner's JobStatus."""
    return job_timing(
        started=status.started_at,
        finished=status.finished_at,
        step=status.step,
        total=status.total,
        stepping_since=status.stepping_since,
        stepping_from=status.stepping_from,
        now=now,
    )


def of_record(record, *, now: float | None = None) -> JobTiming | None:
    """The timing of a run log's JobRecord (its start and end as ISO times)."""
    return job_timing(
        started=_seconds(record.started),
        finished=_seconds(record.finished),
        step=record.step,
        total=record.total,
        stepping_since=record.stepping_since,
        stepping_from=record.stepping_from,
        now=now,
    )


def _seconds(iso: str | None) -> float | None:
    return None if iso is None else datetime.fromisoformat(iso).timestamp()
