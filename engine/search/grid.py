"""A grid as a batch of trials: every point of the Cartesian product of a method's declared parameters (the
last axis varying fastest) at the base parameters, evaluated by any `TrialEvaluator` (engine/search/trials.py:
in process or on Ray). Compare methods, the λ landscape, sweeps, grid sweeps and the benchmark all run their
grids here, and pick their best point by the one rule (`engine.eval.results.best_index`)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from engine.errors import ParameterError
from engine.merge import get_method
from engine.merge.declaration import ParamValue
from engine.merge.pipeline import parse_pipeline, qualified_params, split_params
from engine.search.outcome import OnTrial, SearchOutcome, run_batch
from engine.search.trials import Stop, TrialEvaluator, TrialRequest

Axes = tuple[tuple[str, tuple[float, ...]], ...]

FIRST_POINT = "{method}: the first merge and its evaluation (the {split} split's features, once)"


def grid_points(axes: Sequence[tuple[str, Sequence[float]]]) -> list[dict[str, float]]:
    """Every point of the grid, the last axis varying fastest."""
    names = [name for name, _ in axes]
    return [dict(zip(names, values)) for values in itertools.product(*(v for _, v in axes))]


def checked_axes(
    method: str, grid: Mapping[str, Sequence[float]], params: Mapping[str, ParamValue], num_tasks: int
) -> Axes:
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
