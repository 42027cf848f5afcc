"""STA importance maps as a background job: minutes for ViT-B/32 on a CPU, so pages never block on them.

Each task's map is computed (a few gradient passes) and cached by checkpoint sha256 as it finishes;
cancelling keeps the maps already written, and the next request computes only the missing ones.
"""

from __future__ import annotations

import time

from engine.jobs.runner import JobContext
from engine.runs.log import RunLog
from engine.sta.codes import threshold_code
from engine.workspace import Workspace


def importance_job(ctx: JobContext, *, workspace: Workspace, kind: str, run_log: RunLog | None = None) -> dict:
    """Compute (or find) every task's map of `kind`; returns the kept share at κ = 0.05 per task."""
    start, kept = time.perf_counter(), {}
    tasks = workspace.task_names
    for i, task in enumerate(tasks):
        ctx.check_cancelled()
        codes = workspace.task_importance(task, kind)  # [P] uint8, now cached
        kept[task] = round(float((codes >= threshold_code(0.05)).float().mean()), 4)
        ctx.report(i + 1, len(tasks), f"{task}: done")
    outputs = {"kind": kind, "kept_at_0.05": kept}
    if run_log is not None:
        run_log.record(
            "importance",
            job_id=ctx.job_id,
            method=f"sta:{kind}",
            tasks=tasks,
            device=str(workspace.matrix.T.device),
            inputs={"kind": kind},
            outputs=outputs,
            duration_s=round(time.perf_counter() - start, 3),
        )
    return outputs
