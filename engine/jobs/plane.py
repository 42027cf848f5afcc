"""The storage–accuracy plane: every compared method at its best val setting, as bytes stored per task (x, drawn
on a log axis) against mean normalized test accuracy (y), with the Pareto front.

x is what serving all K tasks stores, divided by K (`MergeMethod.storage`, engine/merge/task_models.py): a
single-model merge 4P/K, TALL masks 4P/K + P/8, EMR 4P/K + P/8 + 4, the fine-tuned models 4P (float32, P
parameters of the image tower; θ₀ is shared by all and not counted); a calibrated pipeline (`tsv_m+svc`) stores
what its base method does, its calibrators changing the merged vector only. y is the mean over tasks of test accuracy /
the task's fine-tuned test accuracy (1 for the fine-tuned models by definition). A point is on the front when no
other point stores no more per task and scores at least as high, one of the two strictly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.errors import SchemaError
from engine.eval.benchmark import BASELINES, Benchmark
from engine.home import nesting, read_document
from engine.jobs.compare import MethodsComparison
from engine.merge import get_method
from engine.merge.pipeline import parse_pipeline
from engine.merge.task_models import FINE_TUNED

FINE_TUNED_NAME = "fine-tuned"


@dataclass(frozen=True)
class PlanePoint:
    method: str  # a registered method, or "fine-tuned"
    params: Mapping[str, float]  # its best setting on val (empty for the fine-tuned models)
    bytes_per_task: float
    mean_normalized: float  # test
    accuracy: Mapping[str, float]  # test accuracy per task (for hover)
    task_specific: bool  # needs the task id at inference
    on_front: bool


@dataclass(frozen=True)
class StoragePlane:
    tasks: tuple[str, ...]
    numel: int  # P
    points: tuple[PlanePoint, ...]  # in the comparison's order, the fine-tuned models last

    @property
    def front(self) -> tuple[PlanePoint, ...]:
        """The Pareto front, by bytes per task (then accuracy)."""
        return tuple(
            sorted((p for p in self.points if p.on_front), key=lambda p: (p.bytes_per_task, p.mean_normalized))
        )


def storage_plane(
    comparison: MethodsComparison, *, numel: int, finetuned: Mapping[str, float] | None = None
) -> StoragePlane:
    """The plane of a Compare-methods result on a model of `numel` parameters; `finetuned` (test accuracy per task)
    adds the fine-tuned models' point."""
    scored = [(r.method, r.params, r.test_mean_normalized, r.test_accuracy) for r in comparison.results]
    return _plane(comparison.tasks, scored, numel=numel, finetuned=finetuned)


def benchmark_plane(benchmark: Benchmark, *, numel: int) -> StoragePlane:
    """The plane of a benchmark run (engine/eval/benchmark.py) on a model of `numel` parameters: each finished
    method at its setting chosen on val with its test numbers, and the fine-tuned models from the run's own
    baseline row. The zero-shot model stores nothing per task (θ₀ is shared), so it has no point on a log axis."""
    methods = [r for r in benchmark.rows if r.method not in BASELINES]
    scored = [(r.method, r.params, r.mean_normalized, r.accuracy) for r in methods]
    finetuned = next((r.accuracy for r in benchmark.rows if r.method == "finetuned"), None)
    return _plane(benchmark.tasks, scored, numel=numel, finetuned=finetuned)


def _plane(
    tasks: tuple[str, ...],
    scored: list[tuple[str, Mapping[str, float], float, Mapping[str, float]]],
    *,
    numel: int,
    finetuned: Mapping[str, float] | None,
) -> StoragePlane:
    """The points of (method or pipeline, its setting, mean normalized test accuracy, test accuracy per task)."""
    K = len(tasks)
    bases = [get_method(parse_pipeline(method)[0]) for method, *_ in scored]  # calibrators store nothing
    raw = [
        (method, params, base.storage.bytes_per_task(numel, K), y, accuracy, base.task_specific)
        for (method, params, y, accuracy), base in zip(scored, bases)
    ]
    if finetuned is not None:
        accuracy = {t: finetuned[t] for t in tasks}
        raw.append((FINE_TUNED_NAME, {}, FINE_TUNED.bytes_per_task(numel, K), 1.0, accuracy, True))
    points = tuple(
        PlanePoint(name, dict(params), x, y, dict(acc), specific, not _dominated(x, y, raw))
        for name, params, x, y, acc, specific in raw
    )
    return StoragePlane(tasks, numel, points)


def _dominated(x: float, y: float, raw: list[tuple]) -> bool:
    """Whether another point stores no more per task and scores at least as high, one of the two strictly."""
    return any(ox <= x and oy >= y and (ox < x or oy > y) for _, _, ox, oy, _, _ in raw)


PLANE_FILE = "plane.json"  # a collection's stored plane (the demo zoo's: engine/zoo/plane.py computes it)


def load_plane(root: Path) -> tuple[MethodsComparison, StoragePlane] | None:
    """The stored comparison and its plane of the collection at `root` (None when it has none); SchemaError names
    a file it cannot read."""
    path, fix = root / PLANE_FILE, "recompute it with `python -m engine.zoo.plane`, or remove it"
    if not path.is_file():
        return None
    try:
        data = json.loads(read_document(path, fix=fix))
        comparison = MethodsComparison.from_json(data["comparison"])
        return comparison, storage_plane(comparison, numel=int(data["numel"]), finetuned=data["finetuned_test"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SchemaError(path, f"unreadable storage plane ({nesting(exc)})", fix=fix) from exc
