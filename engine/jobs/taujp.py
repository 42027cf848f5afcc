"""The τJp matrix as a background job: 8×8 over 64 val images per task is minutes for ViT-B/32 on a CPU.

The finished matrix is cached in the data home by the checkpoints' sha256 (TauJpStore.matrix in
engine/taujp/store.py), so the Interference page only reads it; cancelling between task columns leaves nothing
half-written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from engine.jobs.runner import JobContext
from engine.runs.log import RunLog
from engine.workspace import Workspace


@dataclass(frozen=True)
class TauJpOutcome:
    diagonal: Mapping[str, float]  # each task's own signal
    mean_off_diagonal: float  # the mean interference
    images: tuple[int, ...]  # images per task the matrix was taken over

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def taujp_job(ctx: JobContext, *, workspace: Workspace, run_log: RunLog | None = None) -> TauJpOutcome:
    """Compute (or find) the workspace's τJp matrix; returns its diagonal and mean off-diagonal value."""
    start, tasks = time.perf_counter(), workspace.task_names
    ctx.starting("Jacobian-vector products of the task vectors", total=len(tasks))

    def progress(fraction: float, message: str) -> None:
        ctx.check_cancelled()
        ctx.report(round(fraction * len(tasks)), len(tasks), message)

    matrix = workspace.taujp.matrix(progress=progress)
    k = len(tasks)
    off = (matrix.values.sum() - matrix.values.diagonal().sum()) / max(1, k * k - k)
    outcome = TauJpOutcome(dict(zip(tasks, matrix.values.diagonal().tolist())), float(off), tuple(matrix.images))
    if run_log is not None:
        run_log.record(
            "taujp",
            job_id=ctx.job_id,
            tasks=tasks,
            device=str(workspace.matrix.T.device),
            inputs={"split": matrix.split},
            outputs=outcome.to_json(),
            duration_s=round(time.perf_counter() - start, 3),
        )
    return outcome
