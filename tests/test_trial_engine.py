"""The one trial engine (engine/search/): every job that evaluates a grid (the former `grid_job`'s callers:
Compare methods, the λ sweep, the λ landscape, the grid sweep) submits its points as trials to it and gets
the trials a direct evaluation gives; and one best-setting rule, the same everywhere."""

import threading

import pytest

from engine.eval.results import Sweep, best_index
from engine.jobs.compare import compare_job
from engine.jobs.landscape import Landscape, exact_grid, landscape_job
from engine.jobs.runner import JobContext
from engine.jobs.search import grid_sweep_job
from engine.jobs.sweep import sweep_job
from engine.search import trials as trial_module
from engine.search.logged import LoggedSweep
from engine.search.outcome import SearchOutcome, best_trial
from engine.search.trials import TrialResult
from engine.workspace import Workspace

LAMS = (0.25, 0.5, 1.0)


@pytest.fixture(scope="module")
def ws(tiny_collection_dir, tmp_path_factory):
    return Workspace.open(tiny_collection_dir, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture()
def submitted(monkeypatch):
    """Every trial request the engine evaluates, in the order evaluated."""
    seen, original = [], trial_module.evaluate_trial

    def recording(workspace, request, **kwargs):
        seen.append(request)
        return original(workspace, request, **kwargs)

    monkeypatch.setattr(trial_module, "evaluate_trial", recording)
    return seen


def _ctx() -> JobContext:
    return JobContext(lambda **_: None, threading.Event())


def _direct(ws, tasks, method, params, split="val"):
    return ws.compare(tasks, method, params, split=split)


def test_compare_submits_its_grid_and_the_test_trial(ws, submitted):
    grid = {"task_arithmetic": {"lam": list(LAMS)}}
    result = compare_job(_ctx(), workspace=ws, methods=["task_arithmetic"], grids=grid).results[0]
    assert [(r.split, r.params) for r in submitted] == [("val", {"lam": v}) for v in LAMS] + [
        ("test", {"lam": result.params["lam"]})
    ]
    scores = [_direct(ws, ws.task_names, "task_arithmetic", {"lam": v}).mean_normalized for v in LAMS]
    assert result.params == {"lam": LAMS[best_index(scores)]} and result.val_mean_normalized == max(scores)
    test = _direct(ws, ws.task_names, "task_arithmetic", result.params, split="test")
    assert result.test_accuracy == test.merged.accuracy and result.test_mean_normalized == test.mean_normalized


def test_a_sweep_and_a_grid_sweep_get_the_same_trials(ws, submitted):
    sweep = sweep_job(
        _ctx(),
        workspace=ws,
        tasks=ws.task_names,
        method="ties",
        params={"density": 0.5},
        param="lam",
        values=LAMS,
        split="val",
    ).sweep
    grid = grid_sweep_job(
        _ctx(), workspace=ws, tasks=ws.task_names, method="ties", grid={"lam": LAMS}, params={"density": 0.5}
    )
    assert [r.params for r in submitted] == [{"density": 0.5, "lam": v} for v in LAMS] * 2
    assert sweep.mean_normalized == tuple(t.mean_normalized for t in grid.trials)
    for i, trial in enumerate(grid.trials):
        direct = _direct(ws, ws.task_names, "ties", trial.params)
        assert trial.accuracy == direct.merged.accuracy
        assert {t: v[i] for t, v in sweep.per_task.items()} == direct.merged.accuracy
    assert sweep.best_value == grid.best.params["lam"]


def test_the_landscape_submits_its_points_row_major(ws, submitted):
    pair = ws.task_names[:2]
    job = landscape_job(_ctx(), workspace=ws, tasks=pair, values=LAMS, split="val")
    assert [r.params["lam"] for r in submitted] == [[a, b] for a in LAMS for b in LAMS]
    assert exact_grid(ws, pair, LAMS, split="val") == job.exact
    assert job.exact[2][0] == _direct(ws, pair, "task_arithmetic", {"lam": [1.0, 0.25]}).mean_normalized


def _trial(index: int, score: float) -> TrialResult:
    return TrialResult(index, {"lam": index / 10}, "val", {}, {}, score, score)


def test_one_tie_rule_the_earlier_setting_everywhere():
    assert best_index([0.5, 0.7, 0.7, 0.2]) == 1
    assert best_index([None, float("nan"), 0.1]) == 2 and best_index([]) is None and best_index([None]) is None
    # a sweep over descending values: the earlier value wins a tie (not the smaller one)
    sweep = Sweep("val", "lam", (1.0, 0.5, 0.25), (0.1, 0.1, 0.1), (0.8, 0.8, 0.6), {})
    assert sweep.best_value == 1.0
    # trials finishing out of order: the lowest index wins a tie, whatever order they came back in
    trials = (_trial(2, 0.9), _trial(0, 0.5), _trial(1, 0.9))
    assert best_trial(trials).index == 1
    assert SearchOutcome("grid", "m", (), tuple(sorted(trials, key=lambda t: t.index)), 3).best.index == 1
    assert LoggedSweep(None, tuple(sorted(trials, key=lambda t: t.index))).best.index == 1
    # a landscape: the earlier point in row-major order (λ₁ first)
    grid = ((0.1, 0.9), (0.9, None))
    assert Landscape(("a", "b"), (0.0, 1.0), "val", grid, grid).best() == (0.0, 1.0, 0.9)
