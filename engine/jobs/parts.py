"""A merge's expensive parts as a background job: WUDI's Adam steps, or a large model's first SVDs.

The Merge page submits this when `MergeSession.needs_job` says a setting is slow to compute; the job leaves
the parts in the workspace's cache and, for slow methods, in the data home (`MergeSession.parts`), so
the page then merges from them on every slider move. An iterative method's loss after each step is the
job's live curve (`metrics["loss"]`); cancelling stops between steps and keeps nothing half-computed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from engine.jobs.runner import JobContext
from engine.merge import get_method
from engine.runs.log import RunLog
from engine.workspace import Workspace


@dataclass(frozen=True)
class PartsOutcome:
    method: str
    params: Mapping[str, float]  # the expensive parameters the parts are for
    tasks: tuple[str, ...]
    losses: tuple[float, ...]  # an iterative method's loss after each step (empty otherwise, or if read back)
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PartsOutcome:
        return cls(data["method"], dict(data["params"]), tuple(data["tasks"]), tuple(data["losses"]), data["seconds"])


def merge_parts_job(
    ctx: JobContext,
    *,
    workspace: Workspace,
    method: str,
    params: Mapping[str, float],
    tasks: Sequence[str] | None = None,
    run_log: RunLog | None = None,
) -> PartsOutcome:
    """Compute (or read) `method`'s parts for `tasks` (default all) at `params`; report each step."""
    start, chosen, losses = time.perf_counter(), tuple(tasks or workspace.task_names), []
    entry = get_method(method)

    def progress(step: int, steps: int, loss: float) -> None:
        ctx.check_cancelled()
        losses.append(loss)
        if step % max(1, steps // 100) == 0 or step == steps:  # ≤ ~100 updates, the curve so far in each
            ctx.report(step, steps, f"step {step}/{steps}: loss {loss:.4g}", metrics={"loss": list(losses)})

    ctx.starting(f"{entry.display_name}: computing its parts", total=1)
    workspace.merges.parts(chosen, entry, params, progress=progress)
    resolved = entry.resolve(params, num_tasks=len(chosen))
    expensive = {n: float(resolved[n]) for n in entry.expensive}
    outcome = PartsOutcome(entry.name, expensive, chosen, tuple(losses), round(time.perf_counter() - start, 3))
    ctx.report(1, 1, "parts ready", metrics={"loss": list(losses)})
    if run_log is not None:
        run_log.record(
            "merge_parts",
            job_id=ctx.job_id,
            method=entry.name,
            tasks=chosen,
            device=str(workspace.matrix.T.device),
            inputs={"params": expensive},
            outputs={"final_loss": losses[-1] if losses else None, "steps": len(losses)},
            duration_s=outcome.seconds,
        )
    return outcome
