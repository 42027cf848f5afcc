"""Every registered method at its best validation setting, reported on test: the Compare methods table.

Per method, a grid of its declared parameters is evaluated on val as trials of the one trial engine (engine/search/:
in process or on Ray); the best point by `engine.eval.results.best_index` (the papers' rule: mean normalized
accuracy, the earlier point on ties) is then evaluated once on test. Normalized accuracy is per task merged / fine-
tuned on the same split (Ilharco et al., ICLR 2023), which is what lets numbers from different checkpoint sets be
compared. Each method declares its grid in its module (engine/merge/methods/: the papers' own searches where they
give one, coarser where a method has two expensive axes), or the reason it has none; `DEFAULT_GRIDS` collects them.
An iterative method on a large model on the CPU is hours: it is compared only when asked by name.
A pipeline (`tsv_m+svc`: a base method, then calibrators) is compared like a method, as its own row.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

from engine.jobs.runner import JobContext
from engine.jobs.workers import RunTrials, job_trials
from engine.merge import METHODS, MergeMethod
from engine.merge.pipeline import parse_pipeline, pipeline_grid
from engine.merge.session import LARGE_MODEL_PARAMS
from engine.runs.log import RunLog
from engine.search.grid import FIRST_POINT, checked_axes, grid_points, grid_requests
from engine.search.outcome import best_trial
from engine.search.trials import TrialRequest, TrialResult
from engine.workspace import Workspace


def compare_grids(methods: Mapping[str, MergeMethod]) -> Mapping[str, Mapping[str, tuple[float, ...]]]:
    """Method → its declared Compare grid (axis → values), for every method of `methods` that declares one."""
    return MappingProxyType({name: m.grid.as_mapping() for name, m in methods.items() if m.grid.axes})


DEFAULT_GRIDS = compare_grids(METHODS)


@dataclass(frozen=True)
class MethodResult:
    method: str
    params: Mapping[str, float]  # the best setting on val
    trials: int
    val_mean_normalized: float
    test_accuracy: Mapping[str, float]
    test_mean_accuracy: float
    test_mean_normalized: float


@dataclass(frozen=True)
class MethodsComparison:
    tasks: tuple[str, ...]
    results: tuple[MethodResult, ...]  # in the order compared

    def to_json(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "results": [asdict(r) for r in self.results]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MethodsComparison:
        return cls(tuple(data["tasks"]), tuple(MethodResult(**r) for r in data["results"]))


def _too_slow(workspace: Workspace, method: str) -> bool:
    """An iterative method on a large model on the CPU (WUDI on ViT-B/32: hours)."""
    large = workspace.matrix.spec.numel >= LARGE_MODEL_PARAMS and workspace.matrix.T.device.type == "cpu"
    return METHODS[parse_pipeline(method)[0]].iterative and large


def method_grid(method: str, grids: Mapping[str, Mapping[str, Sequence[float]]]) -> Mapping[str, Sequence[float]]:
    """The grid Compare searches for `method`: given, else declared; a pipeline (`tsv_m+svc`) not given one
    searches its base's grid with each calibrator's declared axes (`Calibrator.grid`)."""
    if method in grids:
        return grids[method]
    base, steps = parse_pipeline(method)
    return pipeline_grid(method, grids[base]) if steps and base in grids else grids[method]


def compare_job(
    ctx: JobContext,
    *,
    workspace: Workspace,
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    grids: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    ray: str | None = None,
    workers: int | None = None,
    run_log: RunLog | None = None,
) -> MethodsComparison:
    """Choose each method's setting on val and report it on test (default: every method with a grid, but
    an iterative one on a large model on the CPU); with `ray` (else MERGELAB_RAY), every trial on Ray workers."""
    start = time.perf_counter()
    tasks = tuple(tasks or workspace.task_names)
    grids = {**DEFAULT_GRIDS, **(grids or {})}
    methods = tuple(methods or [m for m in METHODS if m in grids and not _too_slow(workspace, m)])
    results, axes = [], {m: checked_axes(m, method_grid(m, grids), {}, len(tasks)) for m in methods}
    counter = TrialCounter(ctx, sum(len(grid_points(a)) + 1 for a in axes.values()))
    ctx.starting(FIRST_POINT.format(method=methods[0] if methods else "", split="val"), total=counter.total)
    with job_trials(ctx, workspace, ray=ray, workers=workers) as run:
        for method in methods:
            results.append(chosen_on_val(run, tasks, method, axes[method], counter=counter))
    comparison = MethodsComparison(tasks, tuple(results))
    if run_log is not None:
        run_log.record(
            "compare",
            job_id=ctx.job_id,
            tasks=tasks,
            device=str(workspace.matrix.T.device),
            inputs={
                "methods": list(methods),
                "grids": {m: {k: list(v) for k, v in method_grid(m, grids).items()} for m in methods},
            },
            outputs=comparison.to_json(),
            duration_s=round(time.perf_counter() - start, 3),
        )
    return comparison


@dataclass
class TrialCounter:
    """Progress over every trial of a job of several grids: one step per trial, whichever grid it is in."""

    ctx: JobContext
    total: int
    done: int = 0
    metrics: Mapping[str, Any] | None = None  # reported with every step (the benchmark: where its file is)

    def __call__(self, result: TrialResult, method: str) -> None:
        self.done += 1
        where = f"{result.split} {dict(result.params)}"
        message = f"{method}: {where}: mean normalized {result.mean_normalized:.1%}"
        self.ctx.report(self.done, self.total, message, metrics=self.metrics)


def chosen_on_val(
    run: RunTrials, tasks: tuple[str, ...], method: str, axes: Sequence[tuple[str, Any]], *, counter: TrialCounter
) -> MethodResult:
    """Every grid point a trial on val, the best (`best_trial`) then one trial on test."""
    requests = grid_requests(method=method, tasks=tasks, axes=axes, params={}, split="val")
    best = best_trial(run(requests, lambda r: counter(r, method)))
    (test,) = run([TrialRequest(0, method, tasks, best.params, "test")], lambda r: counter(r, method))
    return MethodResult(
        method,
        dict(best.params),
        len(requests),
        best.mean_normalized,
        dict(test.accuracy),
        test.mean_accuracy,
        test.mean_normalized,
    )
