"""The λ landscape of two tasks: mean normalized accuracy of their task-arithmetic merge over a λ₁ × λ₂ grid.

θ = θ₀ + λ₁ τ₁ + λ₂ τ₂ (Ilharco et al., ICLR 2023, Eq. 1, with one coefficient per task), evaluated at every grid
point, the other tasks' vectors left out; normalized accuracy is merged / fine-tuned per task on the same split,
averaged over the two. The exact landscape is one evaluation per point, each a trial of the one trial engine
(engine/search/; a background job: 121 points are half a minute on the zoo, far more on ViT-B/32); the tangent-space
preview of the same grid (f(x; θ₀) + Σₜ λₜ J f(x; θ₀)·τₜ, from cached Jacobian-vector products) is a matrix product
per point, shown at once beside it, so a class sees where the first-order picture holds and where it breaks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from engine.errors import ParameterError
from engine.eval.results import best_index
from engine.eval.suite import Progress
from engine.jobs.runner import JobContext
from engine.jobs.workers import job_trials
from engine.runs.log import RunLog
from engine.search.outcome import run_batch
from engine.search.trials import LocalEvaluator, TrialRequest, TrialResult
from engine.workspace import Workspace

Grid = tuple[tuple[float | None, ...], ...]
"""[i][j]: the value at λ₁ = values[i], λ₂ = values[j]; None where not computed (a cancelled job)."""


@dataclass(frozen=True)
class Landscape:
    tasks: tuple[str, str]
    values: tuple[float, ...]
    split: str
    exact: Grid
    preview: Grid

    def best(self, *, preview: bool = False) -> tuple[float, float, float] | None:
        """(λ₁, λ₂, mean normalized) of the highest point of the exact (or preview) grid; the earlier on ties."""
        grid = self.preview if preview else self.exact
        best = best_index([v for row in grid for v in row])  # row-major: the trials' order
        if best is None:
            return None
        i, j = divmod(best, len(self.values))
        return self.values[i], self.values[j], grid[i][j]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Landscape:
        return cls(
            tuple(data["tasks"]), tuple(data["values"]), data["split"], _grid(data["exact"]), _grid(data["preview"])
        )


def _grid(rows: Sequence[Sequence[float | None]]) -> Grid:
    return tuple(tuple(row) for row in rows)


def checked_pair(workspace: Workspace, tasks: Sequence[str], values: Sequence[float]) -> tuple[str, str]:
    pair = tuple(tasks)
    unknown = [t for t in pair if t not in workspace.task_names]
    if len(pair) != 2 or len(set(pair)) != 2 or unknown:
        raise ParameterError(
            "landscape.tasks", f"needs two different tasks of the collection, got {list(pair)}", fix="pick two"
        )
    if not values:
        raise ParameterError("landscape.values", "is empty", fix="give at least one λ value")
    return pair[0], pair[1]


def preview_grid(workspace: Workspace, tasks: Sequence[str], values: Sequence[float], *, split: str) -> Grid:
    """The tangent-space preview's mean normalized accuracy at every grid point (cached JVPs: milliseconds)."""
    pair = checked_pair(workspace, tasks, values)
    finetuned = workspace.finetuned(split)
    rows = []
    for a in values:
        row = []
        for b in values:
            accuracy = workspace.taujp.preview(pair, {"lam": [a, b]}, split=split)
            row.append(sum(accuracy[t] / finetuned[t] for t in pair) / 2)
        rows.append(tuple(row))
    return tuple(rows)


def landscape_requests(pair: tuple[str, str], values: Sequence[float], *, split: str) -> list[TrialRequest]:
    """One trial per grid point, row-major (index i·n + j: λ₁ = values[i], λ₂ = values[j])."""
    return [
        TrialRequest(i * len(values) + j, "task_arithmetic", pair, {"lam": [a, b]}, split)
        for i, a in enumerate(values)
        for j, b in enumerate(values)
    ]


def grid_of(trials: Sequence[TrialResult], n: int) -> Grid:
    """The trials' mean normalized accuracy as the n × n grid (None where a trial is missing)."""
    flat: list[float | None] = [None] * (n * n)
    for trial in trials:
        flat[trial.index] = trial.mean_normalized
    return tuple(tuple(flat[i * n : (i + 1) * n]) for i in range(n))


def exact_grid(
    workspace: Workspace,
    tasks: Sequence[str],
    values: Sequence[float],
    *,
    split: str,
    progress: Progress | None = None,
) -> Grid:
    """The merge's evaluated mean normalized accuracy at every grid point, as trials of the one engine in this
    process (each merge kept in the workspace's cache)."""
    pair, values = checked_pair(workspace, tasks, values), tuple(values)
    requests, done = landscape_requests(pair, values, split=split), []

    def on_trial(result: TrialResult) -> None:
        done.append(result)
        if progress is not None:
            lam = result.params["lam"]
            progress(len(done) / len(requests), f"λ = ({lam[0]:g}, {lam[1]:g})")

    trials = run_batch(LocalEvaluator(workspace), requests, on_trial=on_trial, stop=lambda: False)
    return grid_of(trials, len(values))


def landscape_job(
    ctx: JobContext,
    *,
    workspace: Workspace,
    tasks: Sequence[str],
    values: Sequence[float],
    split: str = "interactive",
    ray: str | None = None,
    workers: int | None = None,
    run_log: RunLog | None = None,
) -> Landscape:
    """Both grids of two tasks; the exact one as trials with progress (a cancel stops between points or
    evaluation batches), with `ray` (else MERGELAB_RAY) on Ray workers; the preview stays here (cached JVPs)."""
    start, values = time.perf_counter(), tuple(float(v) for v in values)
    pair = checked_pair(workspace, tasks, values)
    n, done = len(values), []
    ctx.starting("the tangent-space preview of the grid (Jacobian-vector products, once)", total=n * n)
    preview = preview_grid(workspace, pair, values, split=split)

    def on_trial(result: TrialResult) -> None:
        done.append(result)
        lam = result.params["lam"]
        ctx.report(len(done), n * n, f"λ = ({lam[0]:g}, {lam[1]:g})")

    with job_trials(ctx, workspace, ray=ray, workers=workers) as run:
        exact = grid_of(run(landscape_requests(pair, values, split=split), on_trial), n)
    landscape = Landscape(pair, values, split, exact, preview)
    if run_log is not None:
        best = landscape.best()
        run_log.record(
            "landscape",
            job_id=ctx.job_id,
            method="task_arithmetic",
            tasks=pair,
            device=str(workspace.matrix.T.device),
            inputs={"values": list(values), "split": split},
            outputs={"best_lam": None if best is None else list(best[:2]), "mean_normalized": best and best[2]},
            duration_s=round(time.perf_counter() - start, 3),
        )
    return landscape
