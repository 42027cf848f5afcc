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
    where = f"ray {setting}" if setting else ref.device
    ctx.starting("Ray workers opening the collection" if setting else FIRST_POINT.format(method=method, split="val"))
    evaluator = trial_evaluator(workspace, ray=setting or None, workers=workers)
    ctx.on_cancel(evaluator.cancel)
    inputs = {
        "collection": ref.collection,
        "pretrained_sha256": ref.pretrained_sha256,
        "checkpoints": {t: ref.variant_of(t) for t in ref.tasks},
        "backend": setting or "local",
        "workers": evaluator.workers,
        **inputs,
        "skipped": list(skipped) or _skipped_of(workspace),
    }
    parent = None
    if run_log is not None:
        parent = run_log.record(
            kind,
            job_id=ctx.job_id,
            method=method,
            tasks=tasks,
            device=where,
            status="running",
            inputs=inputs,
            outputs={},
        )
    finished: list[TrialResult] = []

    def on_trial(result: TrialResult) -> None:
        if run_log is not None:
            run_log.record(
                "trial",
                parent_id=parent,
                job_id=ctx.job_id,
                method=method,
                tasks=tasks,
                device=where,
                inputs={"index": result.index, "params": dict(result.params), "split": result.split},
                outputs=result.to_json(),
                duration_s=result.seconds,
            )
        finished.append(result)
        best = best_trial(finished)
        ctx.report(
            len(finished),
            planned,
            f"trial {result.index + 1}: mean normalized {result.mean_normalized:.1%}",
            metrics={"trials": len(finished), "best_index": best.index, "best_mean_normalized": best.mean_normalized},
        )

    outcome, status = None, "failed"
    try:
        outcome = body(evaluator, on_trial, lambda: ctx.cancelled)
        status = "done" if outcome.complete else "cancelled"
    finally:
        evaluator.close()  # the evaluator's record of starts stays readable
        if run_log is not None:
            reached = outcome or SearchOutcome(
                kind, method, tasks, tuple(sorted(finished, key=lambda t: t.index)), planned
            )
            starts = evaluator.starts()
            summary = {
                **reached.to_json(),
                "trials_started": len(starts),  # a cancel abandons the trials then running
                "last_trial_started": max(starts, default=None),  # epoch s: before the cancel returned
                "retried": evaluator.retried,
            }
            if status != "done":
                summary |= {"partial": True, "step": len(reached.trials), "total": planned}
            run_log.update_run(parent, status=status, outputs=summary, duration_s=round(time.perf_counter() - start, 3))
    if status == "cancelled":
        raise Cancelled()
    return outcome


def _check_tasks(tasks: Sequence[str], ref: WorkspaceRef) -> None:
    """The driver's check before any trial: every task is one the workspace holds (workers would fail later)."""
    unknown = [t for t in tasks if t not in ref.tasks]
    if unknown:
        raise ParameterError(
            f"tasks {unknown}", f"are not in the workspace of {ref.collection}", fix=f"use {ref.tasks}"
        )
