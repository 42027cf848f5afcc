"""The benchmark: every method on a suite, each method's declared grid searched on val, the chosen setting
evaluated once on test, as the papers do (Ilharco et al., ICLR 2023; the Iso paper's Table 1), with the
published numbers for the same suite, architecture and checkpoints beside ours (engine/eval/benchmark.py).

Every grid point and every test evaluation is a trial of the one trial engine (engine/search/: in process, or
on Ray workers with `ray`), so the numbers are Compare's. With `out`, the JSON (and the Markdown table beside
it, `.md`) is rewritten after every trial: an interrupted run keeps each finished method and the finished
trials of the method it was in (`pending`), and the same command resumes from them; a file written with other
settings (pool, checkpoints, tasks, grids, split profile, limit, seed) is refused, never overwritten.

`limit_per_task` cuts each task's val and test split to that many images, stratified by class and seeded
(engine/data/splits.py `stratified_subset`), recorded in the JSON: TALL20's test sets hold ~230k images, about
3 hours per method on ViT-B/32 on a CPU, so the full table is a GPU run. Choice: a limit or a `val_profile`
changes the images each trial sees, which Ray workers (opening the collection themselves) do not know of, so
either with `ray` is refused rather than silently evaluated on other images.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.cache.memory import ComputeCache
from engine.data.splits import profile, subsampled
from engine.data.suites import match_suite, require_suite
from engine.errors import DatasetError, ParameterError, SchemaError
from engine.eval.benchmark import Benchmark, MethodRow, markdown, write_json
from engine.eval.evaluate import normalized_accuracy
from engine.eval.published import UNKNOWN_FAMILY, Published, published
from engine.io.atomic import write_text_atomic
from engine.jobs.compare import DEFAULT_GRIDS, TrialCounter
from engine.jobs.runner import JobContext
from engine.jobs.workers import RunTrials, job_trials
from engine.merge import METHODS
from engine.pool.collection import Collection, open_suite
from engine.pool.info import checkpoint_family, pool_checkpoints
from engine.runs.log import RunLog
from engine.search.backend import ray_setting
from engine.search.grid import FIRST_POINT, checked_axes, grid_points, grid_requests
from engine.search.outcome import best_trial
from engine.search.trials import TrialRequest, TrialResult
from engine.workspace import Workspace

DEFAULT_METHODS = ("task_arithmetic", "ties", "tsv_m", "iso_c", "iso_cts")
GPU_NOTE = (
    "TALL20's test sets hold ~230k images (about 3 h per method on ViT-B/32 on a CPU): the full table is a GPU run"
)


def benchmark_job(
    ctx: JobContext,
    *,
    workspace: Workspace,
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    grids: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    suite: str | None = None,
    val_profile: str | None = None,
    limit_per_task: int | None = None,
    seed: int = 0,
    published_architecture: str | None = None,
    ray: str | None = None,
    workers: int | None = None,
    out: Path | None = None,
    run_log: RunLog | None = None,
) -> Benchmark:
    """The table for `methods` (default: TA, TIES, TSV-M, Iso-C, Iso-CTS) on `suite`'s tasks (else `tasks`,
    else all), each over its declared grid (`grids` overrides some: recorded). `published_architecture` names
    the architecture whose published numbers apply when the pool's own (a small stand-in) has none."""
    start = time.perf_counter()
    chosen = _open_tasks(workspace, tasks, suite)
    methods = tuple(methods or DEFAULT_METHODS)
    grids = {**DEFAULT_GRIDS, **(grids or {})}
    _check(methods, grids, ray=ray, limit=limit_per_task, val_profile=val_profile)
    axes = {m: checked_axes(m, grids[m], {}, len(chosen)) for m in methods}
    bench = prepared(workspace, tasks=chosen, val_profile=val_profile, limit=limit_per_task, seed=seed)
    _check_images(bench, chosen)
    architecture = published_architecture or workspace.pretrained.architecture
    settings = {
        **_pool_settings(workspace, chosen, architecture=architecture),
        **{"suite": suite, "val_profile": val_profile, "limit_per_task": limit_per_task, "seed": seed},
        "grids": {m: {name: list(values) for name, values in a} for m, a in axes.items()},
    }
    previous, pending = resumed(out, settings)
    table = Benchmark(
        settings,
        chosen,
        methods,
        previous.rows if previous else baselines(bench, chosen),
        published_for(workspace, chosen, suite, architecture),
        {t: {s: len(bench.suite.tasks[t].split(s)) for s in ("val", "test")} for t in chosen},
        {"zero_shot": "Zero-shot", "finetuned": "Fine-tuned", **{m: short_name(m) for m in methods}},
    )
    with job_trials(ctx, bench, ray=ray, workers=workers) as run:
        table = _missing_rows(ctx, run, table, axes, pending, out=out)
    if run_log is not None:
        device = str(workspace.matrix.T.device)
        _record(run_log, ctx, table, device=device, seconds=time.perf_counter() - start)
    return table


def _record(run_log: RunLog, ctx: JobContext, table: Benchmark, *, device: str, seconds: float) -> None:
    """The benchmark's run: its settings as inputs, the table as outputs."""
    run_log.record(
        "benchmark",
        job_id=ctx.job_id,
        tasks=table.tasks,
        device=device,
        inputs=table.settings,
        outputs=table.to_json(),
        duration_s=round(seconds, 3),
    )


def _open_tasks(workspace: Workspace, tasks: Sequence[str] | None, suite: str | None) -> tuple[str, ...]:
    """`benchmark_tasks` of the workspace's collection, each one the workspace has open."""
    chosen = benchmark_tasks(workspace.collection, tasks, suite)
    if not set(chosen) <= set(workspace.task_names):
        raise ParameterError(f"benchmark tasks {list(chosen)}", "are not all open", fix=f"open {list(chosen)}")
    return chosen


def _pool_settings(workspace: Workspace, tasks: Sequence[str], *, architecture: str) -> dict[str, Any]:
    """The pool a table was made on, as its settings record it: a resumed file must name the same."""
    return {
        "collection": str(workspace.collection.root),
        "architecture": architecture,
        "pool_architecture": workspace.pretrained.architecture,
        "pretrained_sha256": workspace.pretrained.tensors_sha256,
        "checkpoints": {t: workspace.collection.finetuned_sha256(t, workspace.variant_of(t)) for t in tasks},
    }


def _missing_rows(
    ctx: JobContext,
    run: RunTrials,
    table: Benchmark,
    axes: Mapping[str, Any],
    pending: dict[str, Any],
    *,
    out: Path | None,
) -> Benchmark:
    """`table` with a row for each of its methods it lacks, in order; saved to `out` after every trial."""
    planned = sum(len(grid_points(a)) + 1 for m, a in axes.items() if not table.row(m))
    counter = TrialCounter(ctx, planned, metrics={"out": str(out)} if out else None)
    ctx.starting(FIRST_POINT.format(method=table.planned[0], split="val"), total=counter.total)
    save(out, table, pending)
    for method in (m for m in table.planned if not table.row(m)):
        row = method_row(run, table.tasks, method, axes[method], pending, counter, lambda: save(out, table, pending))
        table = replace(table, rows=(*table.rows, row))
        pending.pop(method, None)
        save(out, table, pending)
    return table


def short_name(method: str) -> str:
    """The method as a table's row names it: its display name without the gloss ("TSV-M", "Iso-C")."""
    return METHODS[method].display_name.split(" (")[0]


def _check(
    methods: Sequence[str], grids: Mapping[str, Any], *, ray: str | None, limit: int | None, val_profile: str | None
) -> None:
    no_grid = [m for m in methods if m not in grids]
    if no_grid:
        raise ParameterError(f"benchmark methods {no_grid}", "declare no grid", fix=f"choose from {sorted(grids)}")
    if val_profile is not None:
        profile(val_profile)  # ParameterError naming the profiles
    if ray_setting(ray) and (limit or val_profile):
        raise ParameterError(
            "benchmark on Ray",
            "cannot subsample or redraw val on the workers",
            fix="drop --limit-per-task/--val-profile",
        )


def _check_images(workspace: Workspace, tasks: Sequence[str]) -> None:
    """Every task has val images to choose on and test images to report on (a tiny dataset's val profile may
    draw none: 10% of 2 images)."""
    for task in tasks:
        for split in ("val", "test"):
            if len(workspace.suite.tasks[task].split(split)) == 0:
                raise DatasetError(
                    task, f"has no {split} images", fix="give it more images, or another --val-profile for val"
                )


def benchmark_tasks(collection: Collection, tasks: Sequence[str] | None, suite: str | None) -> tuple[str, ...]:
    """The pool tasks benchmarked: a suite's (each present, in the papers' order), else `tasks`, else all."""
    if suite is None:
        return tuple(tasks or collection.task_names)
    match = require_suite(collection.root, collection.task_names, suite)
    by_suite_task = {known: pool for pool, known in match.tasks.items()}
    return tuple(by_suite_task[t] for t in match.suite.tasks)


def prepared(
    workspace: Workspace, *, tasks: Sequence[str], val_profile: str | None, limit: int | None, seed: int
) -> Workspace:
    """The workspace the trials run on: val drawn by `val_profile`, val and test cut to `limit` images per task,
    with a cache of its own (its numbers are not the full workspace's)."""
    if val_profile is None and limit is None:
        return workspace
    suite = workspace.suite
    if val_profile is not None:
        collection = workspace.collection.with_validation(val_profile)
        device = workspace.matrix.T.device
        suite = open_suite(collection, cache_dir=workspace.cache_dir, tasks=workspace.task_names, device=device)
        if workspace.suite.linearized_at is not None:
            suite = suite.linearized(workspace.suite.linearized_at)
    if limit is not None:
        cut = {t: subsampled(data, limit, seed=seed) if t in tasks else data for t, data in suite.tasks.items()}
        suite = replace(suite, tasks=cut, lock=suite.lock)
    return replace(workspace, suite=suite, cache=ComputeCache())


def baselines(workspace: Workspace, tasks: Sequence[str]) -> tuple[MethodRow, ...]:
    """Zero-shot and fine-tuned rows (test): the table's first rows and the normalizer of the others."""
    finetuned = {t: workspace.finetuned("test")[t] for t in tasks}
    zero_shot = {t: workspace.zero_shot("test")[t] for t in tasks}
    rows = []
    for name, accuracy in (("zero_shot", zero_shot), ("finetuned", finetuned)):
        rows.append(MethodRow(name, {}, 0, None, accuracy, normalized_accuracy(accuracy, finetuned)))
    return tuple(rows)


def published_for(workspace: Workspace, tasks: Sequence[str], suite: str | None, architecture: str) -> Published:
    """The published rows for this pool: its suite (given, or the one its tasks are exactly), architecture and
    checkpoint family; a reason instead where there are none."""
    match = match_suite(list(tasks))
    name = suite or (match.suite.name if match and match.complete and len(match.tasks) == len(tasks) else None)
    family = checkpoint_family(pool_checkpoints(workspace.collection))
    if name is None:
        reason = f"the tasks are no known suite (TA8, TALL14, TALL20): {UNKNOWN_FAMILY}"
        return Published("", architecture, family, (), reason)
    return published(name.upper(), architecture, family)


def method_row(
    run: RunTrials,
    tasks: tuple[str, ...],
    method: str,
    axes: Sequence[tuple[str, Any]],
    pending: dict[str, list[TrialResult]],
    counter: TrialCounter,
    saved: Any,
) -> MethodRow:
    """The method's grid on val (the trials `pending` holds from an interrupted run are not run again), the
    best by the one rule, then one test trial."""
    start = time.perf_counter()
    done = pending.setdefault(method, [])
    requests = grid_requests(method=method, tasks=tasks, axes=axes, params={}, split="val")
    finished = {t.index for t in done}
    counter.done += len(finished)

    def on_trial(result: TrialResult) -> None:
        counter(result, method)
        if result.split == "val":
            done.append(result)
            saved()

    run([r for r in requests if r.index not in finished], on_trial)
    best = best_trial(done)
    (test,) = run([TrialRequest(len(requests), method, tasks, best.params, "test")], on_trial)
    seconds = round(time.perf_counter() - start, 3)
    return MethodRow(
        method,
        dict(best.params),
        len(requests),
        best.mean_normalized,
        dict(test.accuracy),
        dict(test.normalized),
        seconds,
    )


def resumed(out: Path | None, settings: Mapping[str, Any]) -> tuple[Benchmark | None, dict[str, list[TrialResult]]]:
    """What an earlier run with the same settings left in `out`: its table and its unfinished method's trials."""
    if out is None or not out.exists():
        return None, {}
    try:
        data = json.loads(out.read_text(encoding="utf-8"))
        previous = Benchmark.from_json(data, source=str(out))
    except (ValueError, KeyError, TypeError) as exc:
        raise SchemaError(out, f"is not a benchmark's JSON ({exc})", fix="give another --out, or remove it") from exc
    if json.loads(json.dumps(dict(previous.settings))) != json.loads(json.dumps(dict(settings))):
        changed = sorted(k for k in {*settings, *previous.settings} if previous.settings.get(k) != settings.get(k))
        raise SchemaError(
            out, f"holds a benchmark with other settings ({', '.join(changed)})", fix="give another --out, or remove it"
        )
    pending = {m: [TrialResult(**t) for t in trials] for m, trials in data.get("pending", {}).items()}
    return previous, pending


def save(out: Path | None, table: Benchmark, pending: Mapping[str, Sequence[TrialResult]]) -> None:
    """The JSON (with the unfinished method's trials) and the Markdown table beside it, each written whole."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    document = json.loads(write_json(table))
    document["pending"] = {m: [t.to_json() for t in trials] for m, trials in pending.items() if trials}
    write_text_atomic(out, json.dumps(document, indent=2) + "\n")
    write_text_atomic(out.with_suffix(".md"), markdown(table))
