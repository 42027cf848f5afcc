"""A sweep read back from the run log, its Pareto plane and coordinates, and the figures drawn of them."""

import threading

import pytest

from engine.errors import ParameterError
from engine.jobs.runner import JobContext
from engine.jobs.search import grid_sweep_job, search_job
from engine.runs.log import RunLog
from engine.search.logged import coordinates, logged_sweeps, objective, objective_plane, pareto_front, read_sweep
from engine.workspace import Workspace
from ui import figures


@pytest.fixture(scope="module")
def ws(tiny_collection_dir, tmp_path_factory):
    return Workspace.open(tiny_collection_dir, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture()
def searched(ws, tmp_path):
    log = RunLog(tmp_path / "runs.sqlite3")
    ctx = JobContext(lambda **_: None, threading.Event())
    outcome = search_job(ctx, workspace=ws, tasks=ws.task_names, strategy="cma", trials=8, batch=4, run_log=log)
    return log, outcome


def test_a_logged_search_reads_back_as_the_job_returned_it(searched):
    log, outcome = searched
    (run,) = logged_sweeps(log)
    sweep = read_sweep(log, run.id)
    assert sweep.trials == outcome.trials and sweep.best == outcome.best and sweep.tasks == outcome.tasks


def test_only_sweeps_are_read_as_sweeps(ws, tmp_path):
    log = RunLog(tmp_path / "runs.sqlite3")
    other = log.record("merge", inputs={}, outputs={})
    with pytest.raises(ParameterError, match="not a sweep"):
        read_sweep(log, other)
    assert logged_sweeps(log) == []


def test_the_pareto_front_keeps_the_points_no_other_beats_on_both():
    xs, ys = [0.1, 0.5, 0.4, 0.9, 0.5, 0.2], [0.9, 0.6, 0.5, 0.1, 0.7, 0.95]
    assert pareto_front(xs, ys) == (5, 4, 3)  # (0.2, .95), (0.5, .7), (0.9, .1); ordered by x


def test_objectives_are_a_task_the_mean_or_the_worst(searched):
    _, outcome = searched
    trial = outcome.trials[0]
    assert objective(trial, "worst") == min(trial.accuracy.values())
    assert objective(trial, "mean") == trial.mean_accuracy
    with pytest.raises(ParameterError, match="no task"):
        objective(trial, "nope")


def test_the_plane_and_its_figure_mark_the_front_and_the_best(searched):
    log, outcome = searched
    sweep = read_sweep(log, logged_sweeps(log)[0].id)
    plane = objective_plane(sweep, "mean", "worst")
    assert len(plane.xs) == 8 and plane.indices[plane.best] == outcome.best.index
    fig = figures.objective_plane_chart(plane)
    assert [t.name for t in fig.data] == ["trials", "Pareto front", "best (mean normalized, val)"]
    assert len(fig.data[1].x) == len(plane.front) >= 1


def test_coordinates_are_the_varied_values_per_task(searched, ws, tmp_path):
    log, _ = searched
    coords = coordinates(read_sweep(log, logged_sweeps(log)[0].id))
    assert coords.names == tuple(f"lam[{t}]" for t in ws.task_names) and len(coords.columns[0]) == 8
    fig = figures.coordinates_chart(coords)
    assert [d.label for d in fig.data[0].dimensions] == [*coords.names, "mean normalized"]
    grid_log = RunLog(tmp_path / "grid.sqlite3")
    ctx = JobContext(lambda **_: None, threading.Event())
    grid = {"density": [0.2, 0.6], "lam": [1.0]}
    grid_sweep_job(ctx, workspace=ws, tasks=ws.task_names, method="ties", grid=grid, run_log=grid_log)
    assert coordinates(read_sweep(grid_log, logged_sweeps(grid_log)[0].id)).names == ("density",)  # λ fixed
