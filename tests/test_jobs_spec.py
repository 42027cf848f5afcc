"""Jobs described by value (JobSpec), and a grid job submitted by its spec."""

import json
import threading
import time
from dataclasses import replace

import pytest

from engine.errors import ParameterError, SchemaError
from engine.home import DataHome
from engine.jobs.runner import JobContext, JobState, LocalRunner
from engine.jobs.search import grid_sweep_job
from engine.jobs.spec import JobSpec, WorkspaceRef, from_fields, open_workspace, submit, to_fields
from engine.learn.coefficients import LearnConfig
from engine.learn.dvbasi import DvBasiConfig
from engine.runs.log import RunLog
from engine.search.grid import grid_points
from engine.search.outcome import SearchOutcome
from engine.workspace import Workspace


@pytest.fixture()
def ws(tiny_collection_dir, data_home):
    return Workspace.open(tiny_collection_dir, cache_dir=DataHome.from_env().ensure().cache)


def _shell_resolve(ref):
    home = DataHome.from_env().ensure()
    return open_workspace(ref, home=home, policy=home.shell_policy())


def test_a_job_spec_round_trips_through_json(ws, tiny_collection_dir):
    dv = DvBasiConfig(iterations=2, scaling="isotropic", learn=LearnConfig(epochs=3, patience=2, select_by="fit_loss"))
    spec = JobSpec(
        "learn",
        WorkspaceRef.of(ws, collection=str(tiny_collection_dir)),
        {"start": "atlas", "lam": 0.3, "atlas_config": to_fields(LearnConfig(epochs=4)), "config": to_fields(dv)},
        name="aTLAS + DV-BASI",
    )
    text = spec.to_json()
    assert JobSpec.from_json(text) == spec and json.loads(text)["workspace"]["checkpoints_sha256"]
    assert from_fields(DvBasiConfig, json.loads(text)["args"]["config"]) == dv  # nested configs come back whole
    with pytest.raises(SchemaError, match="kind 'train'"):
        replace(spec, kind="train")
    with pytest.raises(TypeError):
        JobSpec("grid_sweep", spec.workspace, {"config": LearnConfig()})  # args hold JSON, configs as their fields
    with pytest.raises(ParameterError, match="epochs"):
        from_fields(LearnConfig, {"epochs": 0})  # a config made from fields still checks itself


def test_the_grid_job_evaluates_every_point_and_logs_each_trial_under_the_grid(ws, tiny_collection_dir, tmp_path):
    log = RunLog(tmp_path / "runs.sqlite3")
    runner = LocalRunner(run_log=log)
    grid = {"density": [0.2, 0.6], "lam": [0.5, 1.0, 1.5]}
    args = {"tasks": list(ws.task_names), "method": "ties", "grid": grid, "split": "val"}
    spec = JobSpec("grid_sweep", WorkspaceRef.of(ws, collection=str(tiny_collection_dir)), args, name="ties grid")
    job = submit(runner, spec, owner="me", resolve=_shell_resolve)
    status = runner.wait(job, timeout=120)
    assert status.state is JobState.DONE, status.error
    outcome: SearchOutcome = status.result
    points = grid_points(tuple(grid.items()))
    assert [t.params for t in outcome.trials] == points and len(points) == 6
    for trial in outcome.trials:
        direct = ws.compare(ws.task_names, "ties", trial.params, split="val").merged
        assert trial.accuracy == direct.accuracy and trial.mean_normalized == direct.mean_normalized
    assert outcome.best.mean_normalized == max(t.mean_normalized for t in outcome.trials)
    (row,) = log.runs(kind="grid_sweep")
    assert row.status == "done" and row.outputs["trials"] == 6 and row.outputs["best_params"] == outcome.best.params
    trials = log.runs(parent_id=row.id)
    assert sorted(r.inputs["index"] for r in trials) == [t.index for t in outcome.trials] and len(trials) == 6
    assert [r.id for r in log.runs(top_level=True)] == [row.id]
    assert JobSpec.from_json(json.dumps(log.job(job).spec)) == spec  # the jobs table keeps the spec itself


def test_a_spec_whose_checkpoints_changed_does_not_run(ws, tiny_collection_dir):
    ref = WorkspaceRef.of(ws, collection=str(tiny_collection_dir))
    stale = replace(ref, checkpoints_sha256=((ref.checkpoints_sha256[0][0], "0" * 64), *ref.checkpoints_sha256[1:]))
    runner = LocalRunner()
    spec = JobSpec(
        "grid_sweep", stale, {"tasks": list(ws.task_names), "method": "task_arithmetic", "grid": {"lam": [0.3]}}
    )
    status = runner.wait(submit(runner, spec, resolve=_shell_resolve), timeout=60)
    assert status.state is JobState.FAILED and "other checkpoints than the job was asked to run on" in status.error


def test_grid_axes_must_be_declared_parameters_in_range(ws):
    ctx = JobContext(lambda **_: None, threading.Event())
    with pytest.raises(ParameterError, match="ties.rank: is not a parameter"):
        grid_sweep_job(ctx, workspace=ws, tasks=ws.task_names, method="ties", grid={"rank": [1]})
    with pytest.raises(ParameterError, match="outside"):
        grid_sweep_job(ctx, workspace=ws, tasks=ws.task_names, method="ties", grid={"density": [0.5, 2.0]})


def test_a_cancelled_grid_keeps_its_finished_trials_and_is_logged_as_partial(ws, tmp_path):
    log = RunLog(tmp_path / "runs.sqlite3")
    runner = LocalRunner(run_log=log)
    values = [round(0.01 * i, 2) for i in range(150)]
    job = runner.submit(
        "long grid",
        grid_sweep_job,
        workspace=ws,
        run_log=log,
        tasks=ws.task_names,
        method="task_arithmetic",
        grid={"lam": values},
    )
    while runner.status(job).step < 2:
        time.sleep(0.01)
    runner.cancel(job)
    assert runner.wait(job, timeout=60).state is JobState.CANCELLED
    (row,) = log.runs(kind="grid_sweep")
    assert row.status == "cancelled" and row.outputs["partial"] and 2 <= row.outputs["trials"] < 150
    assert len(log.runs(parent_id=row.id)) == row.outputs["trials"]
