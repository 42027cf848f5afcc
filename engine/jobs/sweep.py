"""A λ sweep as a background job: the one-axis grid of the one trial engine (engine/search/grid.py), its
values submitted as trials (in process, or on Ray with `ray`).

Every step merges and evaluates (real work), reports the curve so far, and checks for cancel after every
evaluation batch; at the end, or when cancelled, the curve so far is written to the run log, so nothing
computed is lost.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.eval.results import Sweep
from engine.jobs.runner import Cancelled, JobContext
from engine.jobs.workers import job_trials
from engine.merge.declaration import ParamValue
from engine.runs.log import RunLog
from engine.search.grid import FIRST_POINT, grid_requests
from engine.search.trials import TrialResult
from engine.workspace import Workspace


@dataclass(frozen=True)
class SweepOutcome:
    """A finished sweep: its curve, the best value (mean normalized accuracy) and each task's accuracy there."""

    sweep: Sweep
    best_value: float | None
    accuracy: Mapping[str, float]

    @classmethod
    def of(cls, sweep: Sweep) -> SweepOutcome:
        best = sweep.best_value
        accuracy = {} if best is None else {t: v[sweep.values.index(best)] for t, v in sweep.per_task.items()}
        return cls(sweep, best, accuracy)

    def to_json(self) -> dict[str, Any]:
        return sweep_outputs(self.sweep)


def sweep_job(
    ctx: JobContext,
    *,
    workspace: Workspace,
    run_log: RunLog | None = None,
    tasks: Sequence[str],
    method: str,
    params: Mapping[str, ParamValue],
    param: str,
    values: Sequence[float],
    split: str,
    ray: str | None = None,
    workers: int | None = None,
) -> SweepOutcome:
    """Evaluate the merge at each value of `param`; returns (and logs) the curve and the best value.
    The one-axis grid: its values are trials of the one engine, logged as one "sweep" run with its curve."""
    start, results, status = time.perf_counter(), [], "done"
    requests = grid_requests(method=method, tasks=tasks, axes=((param, tuple(values)),), params=params, split=split)

    def on_trial(result: TrialResult) -> None:
        results.append(result)
        curve = sweep_of_trials(split, param, values, results, tasks)
        label = f"{param} = {result.params[param]:g}: mean {result.mean_accuracy:.1%}"
        ctx.report(len(results), len(values), label, metrics=sweep_metrics(curve))

    ctx.starting(FIRST_POINT.format(method=method, split=split), total=len(values))
    try:
        with job_trials(ctx, workspace, ray=ray, workers=workers) as run:
            run(requests, on_trial)
    except Cancelled:
        status = "cancelled"
        raise
    finally:
        sweep = sweep_of_trials(split, param, values, results, tasks)
        if run_log is not None:
            record_sweep(
                run_log,
                sweep,
                workspace=workspace,
                method=method,
                params=params,
                device=str(workspace.matrix.T.device),
                status=status,
                planned=values,
                duration_s=round(time.perf_counter() - start, 3),
                job_id=ctx.job_id,
            )
    return SweepOutcome.of(sweep)


def sweep_of_trials(
    split: str, param: str, values: Sequence[float], trials: Sequence[TrialResult], tasks: Sequence[str]
) -> Sweep:
    """The curve of a sweep's trials so far (a local evaluator returns them in order; on Ray, the first
    values reached in order: a point after a gap waits for the gap)."""
    done = {t.index: t for t in trials}
    ordered = [done[i] for i in range(len(values)) if i in done]
    ordered = ordered[: next((n for n, t in enumerate(ordered) if t.index != n), len(ordered))]
    return Sweep(
        split,
        param,
        tuple(values[: len(ordered)]),
        tuple(t.mean_accuracy for t in ordered),
        tuple(t.mean_normalized for t in ordered),
        {task: tuple(t.accuracy[task] for t in ordered) for task in tasks},
    )


def sweep_metrics(sweep: Sweep) -> dict[str, Any]:
    """A sweep's progress metrics: the curve so far with its parameter and split, for a live chart."""
    return {"param": sweep.param, "split": sweep.split, **sweep_outputs(sweep)["curve"]}


def sweep_from_metrics(data: Mapping[str, Any]) -> Sweep | None:
    """The curve so far from a sweep job's progress metrics (None before its first point)."""
    if not data.get("values"):
        return None
    per_task = {t: tuple(v) for t, v in data["per_task"].items()}
    mean_accuracy, mean_normalized = tuple(data["mean_accuracy"]), tuple(data["mean_normalized"])
    return Sweep(data["split"], data["param"], tuple(data["values"]), mean_accuracy, mean_normalized, per_task)


def sweep_outputs(sweep: Sweep) -> dict:
    """What the run log keeps of a sweep: the curve, the best value and the per-task accuracy there."""
    curve = {
        "values": list(sweep.values),
        "mean_accuracy": list(sweep.mean_accuracy),
        "mean_normalized": list(sweep.mean_normalized),
        "per_task": {t: list(v) for t, v in sweep.per_task.items()},
    }
    outcome = SweepOutcome.of(sweep)
    return {"curve": curve, "best_value": outcome.best_value, "accuracy": dict(outcome.accuracy)}


def partial_marks(sweep: Sweep, planned: Sequence[float] | None) -> dict[str, Any]:
    """What a cancelled sweep's row says of itself: partial, how far it got, and that its accuracy is the
    best of the values reached (the papers' rule on a shorter curve), not of the sweep asked for."""
    total = len(planned) if planned is not None else len(sweep.values)
    return {"partial": True, "step": len(sweep.values), "total": total, "accuracy_is": "best reached so far"}


def record_sweep(
    run_log: RunLog,
    sweep: Sweep,
    *,
    workspace: Workspace,
    method: str,
    params: Mapping[str, ParamValue],
    device: str,
    status: str = "done",
    duration_s: float | None = None,
    planned: Sequence[float] | None = None,
    job_id: int | None = None,
) -> int:
    """Log a sweep: a background job's (possibly cancelled) or the merge page's "λ sweep" button's."""
    return run_log.record(
        "sweep",
        method=method,
        tasks=tuple(sweep.per_task),
        device=device,
        status=status,
        duration_s=duration_s,
        inputs={
            "collection": str(workspace.collection.root),
            "pretrained_sha256": workspace.pretrained.tensors_sha256,
            "params": dict(params),
            "param": sweep.param,
            "values": list(planned or sweep.values),
            "split": sweep.split,
        },
        outputs={**sweep_outputs(sweep), **(partial_marks(sweep, planned) if status != "done" else {})},
        job_id=job_id,
    )
