"""The storage–accuracy plane's engine side: x is bytes stored per task to serve all K tasks (4P/K for a single
model, 4P/K + P/8 with TALL masks, 4P/K + P/8 + 4 with EMR, 4P fine-tuned), y the mean normalized test
accuracy, and the Pareto front the points no other beats on both."""

import pytest

from engine.cache.memory import ComputeCache
from engine.jobs.compare import MethodResult, MethodsComparison
from engine.jobs.plane import FINE_TUNED_NAME, storage_plane
from engine.pool.collection import load_collection
from engine.workspace import Workspace

TASKS = ("a", "b", "c", "d")


def _result(method: str, normalized: float) -> MethodResult:
    return MethodResult(method, {"lam": 0.3}, 3, normalized, dict.fromkeys(TASKS, 0.5), 0.5, normalized)


def test_x_is_bytes_per_task_and_the_front_is_what_nothing_beats():
    comparison = MethodsComparison(
        TASKS,
        (
            _result("task_arithmetic", 0.70),
            _result("ties", 0.75),  # same bytes, higher: TA is dominated
            _result("tall_masks", 0.95),
            _result("emr", 0.93),  # more bytes than TALL, lower: dominated
        ),
    )
    plane = storage_plane(comparison, numel=8000, finetuned=dict.fromkeys(TASKS, 0.9))
    x = {p.method: p.bytes_per_task for p in plane.points}
    assert x == {
        "task_arithmetic": 4 * 8000 / 4,
        "ties": 4 * 8000 / 4,
        "tall_masks": 4 * 8000 / 4 + 8000 / 8,
        "emr": 4 * 8000 / 4 + 8000 / 8 + 4,
        FINE_TUNED_NAME: 4 * 8000,
    }
    assert [p.method for p in plane.front] == ["ties", "tall_masks", FINE_TUNED_NAME]
    assert {p.method: p.task_specific for p in plane.points}["tall_masks"]
    assert not {p.method: p.task_specific for p in plane.points}["ties"]


def test_the_plane_of_real_comparisons_on_a_tiny_pool(tiny_collection_dir, tmp_path):
    ws = Workspace.from_collection(load_collection(tiny_collection_dir), cache_dir=tmp_path, cache=ComputeCache())
    tasks, results = ws.task_names, []
    for method, params in [("task_arithmetic", {"lam": 0.5}), ("tall_masks", {"lam": 0.5}), ("emr", {})]:
        val, test = ws.compare(tasks, method, params, split="val"), ws.compare(tasks, method, params, split="test")
        results.append(
            MethodResult(method, params, 1, val.mean_normalized, dict(test.merged.accuracy), test.mean_merged,
                         test.mean_normalized)
        )  # fmt: skip
    plane = storage_plane(
        MethodsComparison(tasks, tuple(results)), numel=ws.matrix.spec.numel, finetuned=ws.finetuned("test")
    )
    assert len(plane.points) == 4 and plane.front
    fine_tuned = plane.points[-1]
    assert fine_tuned.mean_normalized == 1.0 and fine_tuned.bytes_per_task == 4 * ws.matrix.spec.numel
    for point, result in zip(plane.points, results):
        assert point.mean_normalized == pytest.approx(result.test_mean_normalized)


def test_the_plane_chart_draws_bytes_on_log_x_the_front_and_each_tasks_accuracy_on_hover():
    from ui.figures.methods import PLANE_X_TITLE, storage_plane_chart

    comparison = MethodsComparison(
        TASKS, (_result("task_arithmetic", 0.70), _result("tsv_m+svc", 0.8), _result("tall_masks", 0.95))
    )
    plane = storage_plane(comparison, numel=8000, finetuned=dict.fromkeys(TASKS, 0.9))
    fig = storage_plane_chart(plane)
    points, front = fig.data
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.title.text == PLANE_X_TITLE
    assert list(points.x) == [8000, 8000, 9000, 32000]  # a calibrator stores what its base does
    assert list(front.x) == [8000, 9000, 32000] and list(front.y) == [0.8, 0.95, 1.0]
    assert "TSV-M → SVC" in points.hovertext[1] and "a: 50.0%" in points.hovertext[1]
    assert list(points.marker.symbol) == ["circle", "circle", "diamond", "diamond"]
    # the storage levels labelled in bytes; 9 kB is within 1.15× of 8 kB, so its label would overlap: left out
    assert list(fig.layout.xaxis.tickvals) == [8000, 32000]
    assert list(fig.layout.xaxis.ticktext) == ["8.0 kB", "32.0 kB"]


def test_the_zoos_stored_plane_keeps_reports_rows_and_one_point_recomputes(tmp_path):
    """assets/zoo/plane.json (engine/zoo/plane.py): report.json's Compare rows as stored, plus TALL masks, EMR and
    the calibrated pipelines; TA → SVC's merge at its stored setting gives its stored test accuracy on faces (the
    merge from the task vectors alone, only faces' images decoded: seconds, not the whole zoo's suite)."""
    import json

    from engine.eval.evaluate import evaluate
    from engine.home import ASSETS_DIR
    from engine.io.tensor_store import TensorStore
    from engine.jobs.plane import load_plane
    from engine.merge.session import MergeSession
    from engine.pool.collection import open_suite, task_matrix

    zoo = ASSETS_DIR / "zoo"
    comparison, plane = load_plane(zoo)
    report = json.loads((zoo / "report.json").read_text(encoding="utf-8"))["methods"]
    assert comparison.to_json()["results"][: len(report["results"])] == report["results"]
    methods = {p.method: p for p in plane.points}
    assert {"tall_masks", "emr", "tsv_m+svc", "tsv_m+lines", FINE_TUNED_NAME} <= set(methods)
    point = methods["task_arithmetic+svc"]
    collection = load_collection(zoo)
    matrix = task_matrix(collection)
    assert point.bytes_per_task == 4 * matrix.spec.numel / len(plane.tasks)  # what TA stores: 4P/K
    session = MergeSession(matrix, ComputeCache(), "zoo", TensorStore(tmp_path / "parts"), lambda kind: None)
    merged = session.merge(plane.tasks, "task_arithmetic", point.params, calibrate=("svc",))
    suite = open_suite(collection, cache_dir=tmp_path, tasks=["faces"])
    assert evaluate(merged, suite, "test", tasks=["faces"]).accuracy["faces"] == pytest.approx(point.accuracy["faces"])


def test_the_plane_of_a_benchmark_run_is_its_methods_and_its_fine_tuned_row():
    """A benchmark run (engine/eval/benchmark.py) drawn on the plane (reads the zoo's stored table, computes
    nothing): each finished method's mean normalized test accuracy at its setting chosen on val, the fine-tuned
    models from the run's own row at 4P bytes per task, no zero-shot point (it stores nothing per task)."""
    from engine.eval.benchmark import stored_benchmark
    from engine.home import ASSETS_DIR
    from engine.jobs.plane import benchmark_plane
    from engine.merge import get_method

    table = stored_benchmark(ASSETS_DIR / "zoo")
    numel = 1_000_000
    plane = benchmark_plane(table, numel=numel)
    points = {p.method: p for p in plane.points}
    assert list(points) == [*table.methods_done, FINE_TUNED_NAME]
    K = len(table.tasks)
    for row in table.rows:
        if row.method in table.methods_done:
            assert points[row.method].mean_normalized == pytest.approx(row.mean_normalized)
            assert points[row.method].bytes_per_task == get_method(row.method).storage.bytes_per_task(numel, K)
            assert points[row.method].params == dict(row.params)
    finetuned = next(r for r in table.rows if r.method == "finetuned")
    assert points[FINE_TUNED_NAME].accuracy == dict(finetuned.accuracy)
    assert points[FINE_TUNED_NAME].bytes_per_task == 4 * numel and points[FINE_TUNED_NAME].on_front
    best = max(plane.points[:-1], key=lambda p: p.mean_normalized)
    assert best.on_front  # every merge stores 4P/K: the best of them is on the front
