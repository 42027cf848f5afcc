"""Every registered method at its best validation setting, reported on test: the Compare methods table.

Per method, the grid job's loop (engine/jobs/grid.py) evaluates a grid of its declared parameters on val;
the best point by mean normalized accuracy (the papers' rule; the earlier point on ties) is then
evaluated once on test. Normalized accuracy is per task merged / fine-tuned on the same split
(Ilharco et al., ICLR 2023), which is what lets numbers from different checkpoint sets be compared.
Each method declares its grid in its module (engine/merge/methods/: the papers' own searches where they give
one, coarser where a method has two expensive axes), or the reason it has none; `DEFAULT_GRIDS` collects them.
An iterative method on a large model on the CPU is hours: it is compared only when asked by name.
A pipeline (`tsv_m+svc`: a base method, then calibrators) is compared like a method, as its own row.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

from engine.jobs.grid import FIRST_POINT, checked_axes, evaluate_grid
from engine.jobs.runner import JobContext
from engine.jobs.workers import RunTrials, trials_on_workers
from engine.merge import METHODS, MergeMethod
from engine.merge.pipeline import parse_pipeline, pipeline_grid
from engine.merge.session import LARGE_MODEL_PARAMS
from engine.runs.log import RunLog
from engine.search.backend import ray_setting
from engine.search.grid import grid_requests
from engine.search.trials import TrialRequest
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
    results = []
    setting = ray_setting(ray)
    ctx.starting(FIRST_POINT.format(method=methods[0] if methods else "", split="val"), total=len(methods))
    with trials_on_workers(ctx, workspace, ray=setting, workers=workers) if setting else nullcontext() as run:
        for i, method in enumerate(methods):
            axes = checked_axes(method, method_grid(method, grids), {}, len(tasks))
            result = (
                _on_workers(ctx, run, tasks, method, axes, step=(i, len(methods)))
                if run
                else _in_process(ctx, workspace, tasks, method, axes)
            )
            results.append(result)
            ctx.report(i + 1, len(methods), f"{method}: test mean {result.test_mean_accuracy:.1%}")
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


def _in_process(
    ctx: JobContext, workspace: Workspace, tasks: tuple[str, ...], method: str, axes: Sequence[tuple[str, Any]]
) -> MethodResult:
    trials = [
        (point, comparison.mean_normalized)
        for point, comparison in evaluate_grid(
            ctx, workspace, tasks=tasks, method=method, params={}, axes=axes, split="val"
        )
    ]
    best, val = trials[max(range(len(trials)), key=lambda i: (trials[i][1], -i))]  # earlier on ties
    test = workspace.compare(tasks, method, best, split="test")
    return MethodResult(
        method, best, len(trials), val, dict(test.merged.accuracy), test.mean_merged, test.mean_normalized
    )


def _on_workers(
    ctx: JobContext,
    run: RunTrials,
    tasks: tuple[str, ...],
    method: str,
    axes: Sequence[tuple[str, Any]],
    *,
    step: tuple[int, int],
) -> MethodResult:
    """The same grid and choice as `_in_process`, each point a trial on the workers, then the best on test."""
    requests = grid_requests(method=method, tasks=tasks, axes=axes, params={}, split="val")
    report = lambda r: ctx.report(*step, f"{method}: trial {r.index + 1}/{len(requests)}")  # noqa: E731
    trials = run(requests, report)
    best = max(trials, key=lambda t: (t.mean_normalized, -t.index))  # earlier on ties
    (test,) = run([TrialRequest(0, method, tasks, best.params, "test")], lambda _r: None)
    return MethodResult(
        method,
        dict(best.params),
        len(trials),
        best.mean_normalized,
        dict(test.accuracy),
        test.mean_accuracy,
        test.mean_normalized,
    )
