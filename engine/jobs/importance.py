"""STA importance maps as a background job: minutes for ViT-B/32 on a CPU, so pages never block on them.

Each task's map is computed (a few gradient passes) and cached by checkpoint sha256 as it finishes;
cancelling keeps the maps already written, and the next request computes only the missing ones.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.jobs.runner import JobContext
from engine.runs.log import RunLog
from engine.sta.codes import threshold_code
from engine.workspace import Workspace

KEPT_AT = 0.05  # the κ at which the outcome reports each task's kept share


@dataclass(frozen=True)
class ImportanceOutcome:
    kind: str
    kept: Mapping[str, float]  # task → share of entries with importance ≥ KEPT_AT

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, f"kept_at_{KEPT_AT:g}": dict(self.kept)}


def importance_job(
    ctx: JobContext, *, workspace: Workspace, kind: str, run_log: RunLog | None = None
) -> ImportanceOutcome:
    """Compute (or find) every task's map of `kind`; returns the kept share at κ = 0.05 per task."""
    start, kept = time.perf_counter(), {}
    tasks = workspace.task_names
    ctx.starting(f"{kind} importance of {tasks[0]} (gradient passes)", total=len(tasks))
    for i, task in enumerate(tasks):
        ctx.check_cancelled()
        codes = workspace.importance.task(task, kind)  # [P] uint8, now cached
        kept[task] = round(float((codes >= threshold_code(KEPT_AT)).float().mean()), 4)
        ctx.report(i + 1, len(tasks), f"{task}: done")
    outcome = ImportanceOutcome(kind, kept)
    if run_log is not None:
        run_log.record(
            "importance",
            job_id=ctx.job_id,
            method=f"sta:{kind}",
            tasks=tasks,
            device=str(workspace.matrix.T.device),
            inputs={"kind": kind},
            outputs=outcome.to_json(),
            duration_s=round(time.perf_counter() - start, 3),
        )
    return outcome
