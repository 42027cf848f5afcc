"""One grid job: any registered method evaluated over a grid of its declared parameters.

The grid is the Cartesian product of the axes in the order given (`grid_points`); every point is one
trial: a merge at the base parameters overridden by the point, and its evaluation on `split` with
normalized accuracy (the fine-tuned accuracies of the same split as reference). A λ sweep is the
one-axis case (engine/jobs/sweep.py runs on the same loop). With a run log, the grid is one run and
each trial a run under it (`parent_id`), logged as it finishes, so a cancel keeps every finished trial
and the grid's row says it is partial. The best trial is the papers' rule: highest mean normalized
accuracy, the earlier point on ties. Compare methods, the λ landscape and Ray sweeps submit this job.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import ParameterError
from engine.eval.results import MergeComparison
from engine.jobs.runner import Cancelled, JobContext
from engine.merge import get_method
from engine.merge.declaration import ParamValue
from engine.merge.pipeline import parse_pipeline, qualified_params, split_params
from engine.runs.log import RunLog
from engine.workspace import Workspace


@dataclass(frozen=True)
class Trial:
    params: Mapping[str, ParamValue]  # the whole setting: base parameters and the grid point
    accuracy: Mapping[str, float]
    mean_accuracy: float
    mean_normalized: float | None
    run_id: int | None = None


@dataclass(frozen=True)
class GridOutcome:
    method: str
    split: str
    axes: tuple[tuple[str, tuple[float, ...]], ...]
    trials: tuple[Trial, ...]  # in grid order; fewer than the grid's points when cancelled
    run_id: int | None = None

    @property
    def best(self) -> Trial | None:
        if not self.trials:
            return None
        best = max(range(len(self.trials)), key=lambda i: (self.trials[i].mean_normalized or 0.0, -i))
        return self.trials[best]

    def to_json(self) -> dict[str, Any]:
        best = self.best
        return {
            "axes": {name: list(values) for name, values in self.axes},
            "trials": len(self.trials),
            "planned": len(grid_points(self.axes)),
            "best_params": None if best is None else dict(best.params),
            "accuracy": {} if best is None else dict(best.accuracy),
            "mean_normalized": None if best is None else best.mean_normalized,
        }


FIRST_POINT = "{method}: the first merge and its evaluation (the {split} split's features, once)"


def grid_points(axes: Sequence[tuple[str, Sequence[float]]]) -> list[dict[str, float]]:
    """Every point of the grid, the last axis varying fastest."""
    names = [name for name, _ in axes]
    return [dict(zip(names, values)) for values in itertools.product(*(v for _, v in axes))]


def checked_axes(
    method: str, grid: Mapping[str, Sequence[float]], params: Mapping[str, ParamValue], num_tasks: int
) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """The grid's axes, each a declared parameter of `method` (or of a pipeline's calibrator: `svc.alpha` of
    `tsv_m+svc`) with every value in its range (ParameterError)."""
    base, steps = parse_pipeline(method)
    registered = get_method(base)
    calibrators = dict(qualified_params(steps))
    declared = {p.name for p in registered.params} | set(calibrators)
    axes = tuple((name, tuple(float(v) for v in values)) for name, values in grid.items())
    for name, values in axes:
        if name not in declared:
            raise ParameterError(f"{method}.{name}", "is not a parameter of this method", fix=f"use {sorted(declared)}")
        if not values:
            raise ParameterError(f"{method}.{name}", "has no grid values", fix="give at least one value")
        for value in values:
            if name in calibrators:
                calibrators[name].resolve(value, num_tasks=1, method=name.partition(".")[0])
            else:
                registered.resolve({**split_params(params, steps)[0], name: value}, num_tasks=num_tasks)
    return axes


def evaluate_grid(
    ctx: JobContext,
    workspace: Workspace,
    *,
    tasks: Sequence[str],
    method: str,
    params: Mapping[str, ParamValue],
    axes: Sequence[tuple[str, Sequence[float]]],
    split: str,
    metrics: Callable[[], Mapping[str, Any]] | None = None,
) -> Iterator[tuple[dict[str, float], MergeComparison]]:
    """(point, comparison) per grid point in order, checking for cancel between points and evaluation batches;
    after the caller has taken each one, progress is reported with `metrics()` (what the caller has reached)."""
    points = grid_points(axes)
    for i, point in enumerate(points):
        ctx.check_cancelled()
        comparison = workspace.compare(
            tasks, method, {**params, **point}, split=split, progress=lambda _f, _m: ctx.check_cancelled()
        )
        yield point, comparison
        label = ", ".join(f"{k} = {v:g}" for k, v in point.items())
        ctx.report(
            i + 1, len(points), f"{label}: mean {comparison.merged.mean_accuracy:.1%}", metrics=metrics and metrics()
        )


def grid_job(
    ctx: JobContext,
    *,
    workspace: Workspace,
    tasks: Sequence[str],
    method: str,
    grid: Mapping[str, Sequence[float]],
    params: Mapping[str, ParamValue] | None = None,
    split: str = "val",
    run_log: RunLog | None = None,
) -> GridOutcome:
    """Evaluate `method` at every point of `grid` (parameter → values) over the base `params`."""
    start, tasks, params = time.perf_counter(), tuple(tasks), dict(params or {})
    axes = checked_axes(method, grid, params, len(tasks))
    inputs = {
        "collection": str(workspace.collection.root),
        "pretrained_sha256": workspace.pretrained.tensors_sha256,
        "params": params,
        "grid": {name: list(values) for name, values in axes},
        "split": split,
    }
    device = str(workspace.matrix.T.device)
    parent = None
    if run_log is not None:
        parent = run_log.record(
            "grid",
            job_id=ctx.job_id,
            method=method,
            tasks=tasks,
            device=device,
            status="running",
            inputs=inputs,
            outputs={},
        )
    trials, status = [], "done"
    ctx.starting(FIRST_POINT.format(method=method, split=split), total=len(grid_points(axes)))
    try:
        best = lambda: {"best_mean_normalized": max(t.mean_normalized or 0.0 for t in trials)}
        for point, comparison in evaluate_grid(
            ctx, workspace, tasks=tasks, method=method, params=params, axes=axes, split=split, metrics=best
        ):
            merged = comparison.merged
            setting = {**params, **point}
            run_id = None
            if run_log is not None:
                run_id = run_log.record(
                    "trial",
                    parent_id=parent,
                    job_id=ctx.job_id,
                    method=method,
                    tasks=tasks,
                    device=device,
                    inputs={"params": setting, "split": split},
                    outputs={"accuracy": dict(merged.accuracy), "mean_normalized": merged.mean_normalized},
                )
            trials.append(Trial(setting, dict(merged.accuracy), merged.mean_accuracy, merged.mean_normalized, run_id))
    except Cancelled:
        status = "cancelled"
        raise
    finally:
        outcome = GridOutcome(method, split, axes, tuple(trials), parent)
        if run_log is not None:
            reached = {"partial": True, "step": len(trials), "total": len(grid_points(axes))}
            summary = {**outcome.to_json(), **(reached if status != "done" else {})}
            if status == "done" and len(trials) < len(grid_points(axes)):
                status = "failed"
            run_log.update_run(parent, status=status, outputs=summary, duration_s=round(time.perf_counter() - start, 3))
    return outcome
