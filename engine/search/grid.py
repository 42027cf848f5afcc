"""A grid sweep as a batch of trials: every point of the Cartesian product of the axes (the last varying
fastest, engine/jobs/grid.py's order) at the base parameters, evaluated by any `TrialEvaluator`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.jobs.grid import checked_axes, grid_points
from engine.merge.declaration import ParamValue
from engine.search.outcome import OnTrial, SearchOutcome, run_batch
from engine.search.trials import Stop, TrialEvaluator, TrialRequest


def grid_requests(
    *,
    method: str,
    tasks: Sequence[str],
    axes: Sequence[tuple[str, Sequence[float]]],
    params: Mapping[str, ParamValue],
    split: str,
) -> list[TrialRequest]:
    """One request per grid point (ParameterError for an axis that is not a declared parameter in range)."""
    tasks = tuple(tasks)
    checked = checked_axes(method, dict(axes), params, len(tasks))
    return [TrialRequest(i, method, tasks, {**params, **point}, split) for i, point in enumerate(grid_points(checked))]


def grid_sweep(
    evaluator: TrialEvaluator,
    *,
    method: str,
    tasks: Sequence[str],
    axes: Sequence[tuple[str, Sequence[float]]],
    params: Mapping[str, ParamValue] | None = None,
    split: str = "val",
    on_trial: OnTrial = lambda _r: None,
    stop: Stop = lambda: False,
) -> SearchOutcome:
    requests = grid_requests(method=method, tasks=tasks, axes=axes, params=dict(params or {}), split=split)
    trials = run_batch(evaluator, requests, on_trial=on_trial, stop=stop)
    return SearchOutcome("grid", method, tuple(tasks), tuple(trials), len(requests))
