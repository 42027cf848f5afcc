"""Grid sweeps and coefficient searches as background jobs, their trials in process or on Ray workers
(engine/search/). The driver alone writes the run log: the sweep is one run, recorded first, and every
trial a run under it (`parent_id`), recorded once as its result comes back, whatever worker ran it; so the
runs list shows one row per sweep, and a cancel keeps every finished trial and marks the sweep partial.
The runner's cancel reaches the evaluator directly (`JobContext.on_cancel`): no trial starts after it returns.

On Ray a job runs on a `WorkspaceRef` alone (`runs_on_ray`): its workers open the checkpoints, so the driver
(the CLI, a job runner) never reads θ₀ or T; in process it runs on the open Workspace, as before Ray.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ParameterError
from engine.jobs.runner import Cancelled, JobContext
from engine.merge.declaration import ParamValue
from engine.runs.log import RunLog
from engine.search.backend import Source, ray_setting, reference, trial_evaluator
from engine.search.coefficients import SearchSpace, coefficient_search
from engine.search.grid import FIRST_POINT, checked_axes, grid_points, grid_sweep
from engine.search.outcome import OnTrial, SearchOutcome, best_trial
from engine.search.ref import WorkspaceRef
from engine.search.trials import Stop, TrialEvaluator, TrialResult
from engine.workspace import Workspace

Body = Callable[[TrialEvaluator, OnTrial, Stop], SearchOutcome]


def runs_on_ray(args: Mapping[str, Any]) -> bool:
    """Whether a sweep or search job with these arguments runs its trials on Ray (its `ray`, else
    `MERGELAB_RAY`): then it needs the workspace's reference only, not the workspace opened."""
    return bool(ray_setting(args.get("ray")))


def grid_sweep_job(
    ctx: JobContext,
    *,
    workspace: Source,
    tasks: Sequence[str],
    method: str,
    grid: Mapping[str, Sequence[float]],
    params: Mapping[str, ParamValue] | None = None,
    split: str = "val",
    ray: str | None = None,
    workers: int | None = None,
    run_log: RunLog | None = None,
    skipped: Sequence[str] = (),
) -> SearchOutcome:
    """Every point of `grid` (declared parameter → values) over the base `params`, evaluated on `split`."""
    tasks, params = tuple(tasks), dict(params or {})
    axes = checked_axes(method, grid, params, len(tasks))
    inputs = {"params": params, "grid": {name: list(values) for name, values in axes}, "split": split}
    body = lambda evaluator, on_trial, stop: grid_sweep(
        evaluator, method=method, tasks=tasks, axes=axes, params=params, split=split, on_trial=on_trial, stop=stop
    )
    planned = len(grid_points(axes))
    return _logged(
        ctx, workspace, "grid_sweep", method, tasks, inputs, planned, body, ray, workers, run_log, skipped=skipped
    )


def search_job(
    ctx: JobContext,
    *,
    workspace: Source,
    tasks: Sequence[str],
    method: str = "task_arithmetic",
    strategy: str = "tpe",
    trials: int = 200,
    batch: int = 8,
    seed: int = 0,
    param: str = "lam",
    low: float = 0.0,
    high: float = 1.0,
    params: Mapping[str, ParamValue] | None = None,
    split: str = "val",
    ray: str | None = None,
    workers: int | None = None,
    run_log: RunLog | None = None,
    skipped: Sequence[str] = (),
) -> SearchOutcome:
    """`trials` per-task settings of `param` chosen by `strategy` (tpe or cma), `batch` at a time; the best
    on `split` is evaluated once on test."""
    tasks, params = tuple(tasks), dict(params or {})
    space = SearchSpace(method, tasks, param, low, high)
    inputs = {
        "strategy": strategy,
        "trials": trials,
        "batch": batch,
        "seed": seed,
        "space": {"param": param, "low": low, "high": high},
        "params": params,
        "split": split,
    }
    body = lambda evaluator, on_trial, stop: coefficient_search(
        evaluator,
        space,
        strategy=strategy,
        trials=trials,
        batch=batch,
        seed=seed,
        params=params,
        split=split,
        on_trial=on_trial,
        stop=stop,
    )
    return _logged(
        ctx, workspace, "search", method, tasks, inputs, trials, body, ray, workers, run_log, skipped=skipped
    )


def _skipped_of(workspace: Source) -> list[str]:
    """The pool entries an open workspace's collection left out (by consent); a reference names none."""
    return [str(s) for s in workspace.collection.skipped] if isinstance(workspace, Workspace) else []


def _logged(
    ctx: JobContext,
    workspace: Source,
    kind: str,
    method: str,
    tasks: tuple[str, ...],
    inputs: dict[str, Any],
    planned: int,
    body: Body,
    ray: str | None,
    workers: int | None,
    run_log: RunLog | None,
    *,
    skipped: Sequence[str] = (),
) -> SearchOutcome:
    """Run `body` on the chosen evaluator with progress, cancel and the run log: the sweep's row, then a row
    per trial as it comes back; cancelled, the row keeps what was reached, marked partial. `skipped`: the
    pool entries left out by consent (on an open workspace, its collection's are taken when none are given)."""
    start, setting, ref = time.perf_counter(), ray_setting(ray), reference(workspace)
    _check_tasks(tasks, ref)
    ctx.starting("Ray workers opening the collection" if setting else FIRST_POINT.format(method=method, split="val"))
    evaluator = trial_evaluator(workspace, ray=setting or None, workers=workers)
    ctx.on_cancel(evaluator.cancel)
    where = f"ray {setting}" if setting else ref.device
    row = _SweepRows(ctx, run_log, kind=kind, method=method, tasks=tasks, where=where, planned=planned)
    row.open(
        {
            "collection": ref.collection,
            "pretrained_sha256": ref.pretrained_sha256,
            "checkpoints": {t: ref.variant_of(t) for t in ref.tasks},
            "backend": setting or "local",
            "workers": evaluator.workers,
            **inputs,
            "skipped": list(skipped) or _skipped_of(workspace),
        }
    )
    outcome, status = None, "failed"
    try:
        outcome = body(evaluator, row.on_trial, lambda: ctx.cancelled)
        status = "done" if outcome.complete else "cancelled"
    finally:
        evaluator.close()  # the evaluator's record of starts stays readable
        row.close(outcome, status=status, evaluator=evaluator, seconds=time.perf_counter() - start)
    if status == "cancelled":
        raise Cancelled()
    return outcome


@dataclass
class _SweepRows:
    """A sweep's rows in the run log (its own, then one per trial as it comes back) and the job's progress.
    Mutable: it gathers the finished trials, so a cancelled or failed sweep's row keeps what was reached."""

    ctx: JobContext
    run_log: RunLog | None
    kind: str
    method: str
    tasks: tuple[str, ...]
    where: str  # the device, or "ray <address>"
    planned: int
    parent: int | None = None
    finished: list[TrialResult] = field(default_factory=list)

    def open(self, inputs: Mapping[str, Any]) -> None:
        """The sweep's row, recorded before its first trial (status running)."""
        if self.run_log is not None:
            self.parent = self.run_log.record(
                self.kind,
                job_id=self.ctx.job_id,
                method=self.method,
                tasks=self.tasks,
                device=self.where,
                status="running",
                inputs=dict(inputs),
                outputs={},
            )

    def on_trial(self, result: TrialResult) -> None:
        """A trial's row, under the sweep's, and the job's progress with the best trial so far."""
        if self.run_log is not None:
            self.run_log.record(
                "trial",
                parent_id=self.parent,
                job_id=self.ctx.job_id,
                method=self.method,
                tasks=self.tasks,
                device=self.where,
                inputs={"index": result.index, "params": dict(result.params), "split": result.split},
                outputs=result.to_json(),
                duration_s=result.seconds,
            )
        self.finished.append(result)
        best = best_trial(self.finished)
        self.ctx.report(
            len(self.finished),
            self.planned,
            f"trial {result.index + 1}: mean normalized {result.mean_normalized:.1%}",
            metrics={
                "trials": len(self.finished),
                "best_index": best.index,
                "best_mean_normalized": best.mean_normalized,
            },
        )

    def close(self, outcome: SearchOutcome | None, *, status: str, evaluator: TrialEvaluator, seconds: float) -> None:
        """The sweep's row finished: its outcome (or the trials reached, marked partial) and the starts."""
        if self.run_log is None:
            return
        trials = tuple(sorted(self.finished, key=lambda t: t.index))
        reached = outcome or SearchOutcome(self.kind, self.method, self.tasks, trials, self.planned)
        starts = evaluator.starts()
        summary = {
            **reached.to_json(),
            "trials_started": len(starts),  # a cancel abandons the trials then running
            "last_trial_started": max(starts, default=None),  # epoch s: before the cancel returned
            "retried": evaluator.retried,
        }
        if status != "done":
            summary |= {"partial": True, "step": len(reached.trials), "total": self.planned}
        self.run_log.update_run(self.parent, status=status, outputs=summary, duration_s=round(seconds, 3))


def _check_tasks(tasks: Sequence[str], ref: WorkspaceRef) -> None:
    """The driver's check before any trial: every task is one the workspace holds (workers would fail later)."""
    unknown = [t for t in tasks if t not in ref.tasks]
    if unknown:
        raise ParameterError(
            f"tasks {unknown}", f"are not in the workspace of {ref.collection}", fix=f"use {ref.tasks}"
        )
