"""Sweeps and searches on a local Ray cluster of 2 worker processes (one cluster for the module): the same
trials as in process, a killed worker's trial retried elsewhere, cancel, and a reproducible seeded search."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import ray

from engine.jobs.runner import JobContext, JobState, LocalRunner
from engine.jobs.search import grid_sweep_job, search_job
from engine.runs.log import RunLog
from engine.search.axes import parse_axes
from engine.search.coefficients import SearchSpace, coefficient_search
from engine.search.grid import grid_sweep
from engine.search.logged import read_sweep
from engine.search.ray_trials import LOOPBACK, RayEvaluator, WorkerSpec, connect
from engine.search.ref import WorkspaceRef
from engine.search.trials import LocalEvaluator
from engine.workspace import Workspace

# one local Ray cluster at a time (make test runs two workers); minutes of cluster work: not in make test-fast
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

TIES_GRID = {"density": [0.2, 0.5, 0.8], "lam": [0.25 * i for i in range(1, 9)]}  # 24 trials


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Ray started in this process as MERGELAB_RAY=local starts it, with 2 CPUs: 2 trial workers (whose
    data home, for evaluators not handed one, is the one set while the cluster starts)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MERGELAB_HOME", str(tmp_path_factory.mktemp("ray-home")))
        connect("local", num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ws(tiny_collection_dir, tmp_path_factory):
    return Workspace.open(tiny_collection_dir, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def local_grid(ws):
    axes = tuple((k, tuple(v)) for k, v in TIES_GRID.items())
    return grid_sweep(LocalEvaluator(ws), method="ties", tasks=ws.task_names, axes=axes)


@pytest.fixture
def opened_here(monkeypatch) -> list[tuple[str, ...]]:
    """The tasks of every Workspace.from_collection call in this (the driver's) process, as they happen: the
    real function still runs; Ray's workers are other processes and are not counted."""
    calls, real = [], Workspace.from_collection.__func__

    def counting(cls, collection, **kwargs):
        calls.append(tuple(kwargs.get("tasks") or collection.task_names))
        return real(cls, collection, **kwargs)

    monkeypatch.setattr(Workspace, "from_collection", classmethod(counting))
    return calls


def trial_worker_pids() -> list[int]:
    """The processes of the cluster's trial workers (Ray titles an actor's process after its class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and title.startswith(b"ray::TrialWorker"):
            pids.append(int(entry.name))
    return pids


def test_local_ray_binds_to_the_loopback_with_no_dashboard(cluster):
    (node,) = ray.nodes()
    assert node["NodeManagerAddress"] == LOOPBACK and ray.cluster_resources()["CPU"] == 2
    assert not ray._private.worker.global_worker.node.address_info.get("webui_url")


def test_a_grid_on_two_ray_workers_equals_the_local_runner_trial_by_trial(cluster, ws, local_grid, tmp_path):
    log = RunLog(tmp_path / "runs.sqlite3")
    runner = LocalRunner(run_log=log)
    args = dict(tasks=ws.task_names, method="ties", grid=TIES_GRID, ray="local")
    job = runner.submit("ties grid", grid_sweep_job, workspace=ws, run_log=log, **args)
    status = runner.wait(job, timeout=240)
    assert status.state is JobState.DONE, status.error
    outcome = status.result
    assert outcome.trials == local_grid.trials and outcome.best == local_grid.best and outcome.planned == 24
    assert len({t.worker for t in outcome.trials}) == 2  # both workers took trials
    (sweep,) = log.runs(top_level=True)  # the sweep is one row, its trials under it
    assert sweep.kind == "grid_sweep" and sweep.status == "done" and sweep.inputs["workers"] == 2
    rows = log.runs(parent_id=sweep.id)
    assert sorted(r.inputs["index"] for r in rows) == list(range(24))
    by_index = {r.inputs["index"]: r for r in rows}
    assert all(by_index[t.index].outputs["accuracy"] == dict(t.accuracy) for t in local_grid.trials)


def test_workers_open_the_pool_as_the_home_says_sharing_one_built_store(cluster, ws, local_grid, tmp_path):
    """With "store": "built" in the home's config.json, both workers map the one store the first built (built once,
    under its lock) and their trials equal the in-memory ones."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text('{"store": "built"}')
    axes = tuple((k, tuple(v)) for k, v in TIES_GRID.items())
    evaluator = RayEvaluator(WorkerSpec(WorkspaceRef.of(ws), home=str(home)), workers=2)
    try:
        on_store = grid_sweep(evaluator, method="ties", tasks=ws.task_names, axes=axes)
    finally:
        evaluator.close()
    assert on_store.trials == local_grid.trials and len({t.worker for t in on_store.trials}) == 2
    assert len(list((home / "cache" / "stores").glob("*.float32.taskstore"))) == 1


def test_a_killed_worker_s_trials_are_retried_and_logged_once(cluster, ws, local_grid, tmp_path):
    log, killed = RunLog(tmp_path / "runs.sqlite3"), []

    def update(**change):
        if change.get("step") == 3 and not killed:  # mid-sweep: both workers have a trial in flight
            worker = log.runs(kind="trial")[0].outputs["worker"]  # host:pid of one of this sweep's workers
            killed.append(int(worker.rsplit(":", 1)[1]))
            assert killed[0] in trial_worker_pids()
            os.kill(killed[0], signal.SIGKILL)

    ctx = JobContext(update, threading.Event())
    outcome = grid_sweep_job(
        ctx, workspace=ws, tasks=ws.task_names, method="ties", grid=TIES_GRID, ray="local", run_log=log
    )
    assert killed and outcome.complete and outcome.trials == local_grid.trials
    (sweep,) = log.runs(top_level=True)
    assert sweep.status == "done" and sweep.outputs["retried"] >= 1
    indices = [r.inputs["index"] for r in log.runs(parent_id=sweep.id)]
    assert sorted(indices) == list(range(24))  # every trial exactly once
    workers = {t.worker for t in outcome.trials[6:]}
    assert all(not w.endswith(f":{killed[0]}") for w in workers)  # after the kill, only the other worker


def test_cancel_stops_the_ray_sweep_and_no_trial_starts_after_it(cluster, ws, tmp_path):
    log = RunLog(tmp_path / "runs.sqlite3")
    runner = LocalRunner(run_log=log)
    lams = [round(0.005 * i, 3) for i in range(301)]
    args = dict(tasks=ws.task_names, method="task_arithmetic", grid={"lam": lams}, ray="local")
    job = runner.submit("long grid", grid_sweep_job, workspace=ws, run_log=log, **args)
    deadline = time.monotonic() + 180
    while runner.status(job).step < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.cancel(job)
    cancel_returned = time.time()
    status = runner.wait(job, timeout=60)
    assert status.state is JobState.CANCELLED
    (sweep,) = log.runs(top_level=True)
    assert sweep.status == "cancelled" and sweep.partial and sweep.status_shown == "cancelled (partial)"
    assert 4 <= sweep.outputs["step"] < 301 and sweep.outputs["total"] == 301
    assert sweep.outputs["last_trial_started"] <= cancel_returned
    assert sweep.outputs["trials_started"] < 301
    rows = log.runs(parent_id=sweep.id)
    assert len(rows) == sweep.outputs["step"] == len({r.inputs["index"] for r in rows})


def test_a_seeded_search_on_ray_asks_and_finds_what_it_does_in_process(cluster, ws):
    space = SearchSpace("task_arithmetic", ws.task_names)
    kwargs = dict(strategy="cma", trials=12, batch=4, seed=3)
    evaluator = RayEvaluator(WorkerSpec(WorkspaceRef.of(ws)))
    try:
        on_ray = coefficient_search(evaluator, space, **kwargs)
    finally:
        evaluator.close()
    in_process = coefficient_search(LocalEvaluator(ws), space, **kwargs)
    assert on_ray.trials == in_process.trials and on_ray.best == in_process.best
    assert on_ray.test == in_process.test and on_ray.test.split == "test"


def test_a_search_job_on_ray_logs_its_trials_and_the_best_on_test(cluster, ws, tmp_path):
    log = RunLog(tmp_path / "runs.sqlite3")
    ctx = JobContext(lambda **_: None, threading.Event())
    outcome = search_job(ctx, workspace=ws, tasks=ws.task_names, trials=8, batch=4, seed=0, ray="local", run_log=log)
    (sweep,) = log.runs(top_level=True)
    assert sweep.kind == "search" and sweep.status == "done"
    assert sweep.outputs["test"]["split"] == "test" and sweep.outputs["best"]["index"] == outcome.best.index
    assert sorted(r.inputs["index"] for r in log.runs(parent_id=sweep.id)) == list(range(8))


def test_the_cli_s_ray_driver_opens_no_workspace_and_finds_the_local_runner_s_trials(
    cluster, ws, tiny_collection_dir, data_home, tmp_path, capsys, opened_here
):
    import json

    from engine.cli import main

    recipe = tmp_path / "ta.json"
    recipe.write_text(json.dumps({"collection": str(tiny_collection_dir), "method": "task_arithmetic"}))
    assert main(["sweep", str(recipe), "--grid", "lam=0:1:6", "--ray", "local"]) == 0
    assert opened_here == []  # the workers opened θ₀, T and the suite; the driver read sidecars only
    on_ray = json.loads(capsys.readouterr().out)
    assert main(["sweep", str(recipe), "--grid", "lam=0:1:6"]) == 0
    assert opened_here == [ws.task_names]  # in process: one workspace, as before Ray
    in_process = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in on_ray.items() if k != "run"} == {k: v for k, v in in_process.items() if k != "run"}
    log = RunLog(data_home / "runs" / "runs.sqlite3")
    ray_sweep, local_sweep = read_sweep(log, on_ray["run"]), read_sweep(log, in_process["run"])
    assert ray_sweep.run.inputs["backend"] == "local" and ray_sweep.run.inputs["workers"] == 2
    assert local_sweep.run.inputs["backend"] == "local" and local_sweep.run.device == "cpu"
    local = grid_sweep(
        LocalEvaluator(ws), method="task_arithmetic", tasks=ws.task_names, axes=parse_axes(["lam=0:1:6"])
    )
    assert len(ray_sweep.trials) == 6 and ray_sweep.trials == local.trials == local_sweep.trials
    assert len({t.worker for t in ray_sweep.trials}) == 2 and ray_sweep.run.inputs["checkpoints"] == {
        t: "standard" for t in ws.task_names
    }


def test_a_ray_sweep_from_its_json_spec_runs_on_the_reference_unopened(
    cluster, ws, local_grid, tiny_collection_dir, data_home, tmp_path, opened_here
):
    """As the Sweeps page submits it: the sidebar's path (relative to the data home), no workspace opened."""
    from engine.jobs.spec import JobSpec, submit

    data_home.mkdir(parents=True, exist_ok=True)  # the dashboard's policy admits the collection's folder
    (data_home / "config.json").write_text(f'{{"allowed_roots": ["{tiny_collection_dir}"]}}')
    (data_home / "tiny").symlink_to(tiny_collection_dir)
    log = RunLog(tmp_path / "runs.sqlite3")
    runner = LocalRunner(run_log=log)
    args = {"tasks": list(ws.task_names), "method": "ties", "grid": TIES_GRID, "ray": "local"}
    ref = WorkspaceRef.of(ws, collection="tiny")
    spec = JobSpec.from_json(JobSpec("grid_sweep", ref, args, name="ties grid").to_json())
    status = runner.wait(submit(runner, spec), timeout=240)  # no resolve: a runner that would open it afresh
    assert status.state is JobState.DONE, status.error
    assert opened_here == [] and status.result.trials == local_grid.trials
    (sweep,) = log.runs(top_level=True)
    assert sweep.inputs["collection"] == str(tiny_collection_dir.resolve())  # as the workers opened it
