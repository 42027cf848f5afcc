import threading
import time
from dataclasses import replace

import pytest

from engine.jobs.runner import JobState, LocalRunner


def counting_job(ctx, *, steps: int, delay: float = 0.0, gate: threading.Event | None = None):
    """Real work in small steps: sums squares, reporting partial results as it goes."""
    total = 0
    for i in range(steps):
        if gate is not None:
            gate.wait(5)
        ctx.check_cancelled()
        total += i * i
        ctx.report(i + 1, steps, f"step {i + 1}", metrics={"partial_sum": total})
        time.sleep(delay)
    return total


def failing_job(ctx):
    ctx.report(1, 2, "about to fail")
    raise ValueError("bad input: checkpoint foo.safetensors")


def test_a_job_reports_progress_and_returns_its_result():
    runner = LocalRunner()
    job = runner.submit("sum", counting_job, steps=5)
    status = runner.wait(job, timeout=10)
    assert status.state is JobState.DONE and status.result == sum(i * i for i in range(5))
    assert (status.step, status.total, status.metrics) == (5, 5, {"partial_sum": 30})
    assert status.started_at <= status.finished_at


def test_cancel_mid_way_keeps_partial_results():
    runner = LocalRunner()
    gate = threading.Event()
    job = runner.submit("long", counting_job, steps=1000, delay=0.001, gate=gate)
    gate.set()
    while runner.status(job).step < 3:
        time.sleep(0.005)
    runner.cancel(job)
    status = runner.wait(job, timeout=10)
    assert status.state is JobState.CANCELLED and status.result is None
    assert 3 <= status.step < 1000 and status.metrics["partial_sum"] > 0


def test_a_failing_job_records_its_error_and_the_runner_goes_on():
    runner = LocalRunner()
    bad = runner.submit("bad", failing_job)
    good = runner.submit("good", counting_job, steps=3)
    assert runner.wait(bad, timeout=10).state is JobState.FAILED
    assert "ValueError: bad input: checkpoint foo.safetensors" in runner.status(bad).error
    assert runner.wait(good, timeout=10).state is JobState.DONE


def test_jobs_on_one_device_run_one_after_the_other():
    runner = LocalRunner()
    gate = threading.Event()
    first = runner.submit("first", counting_job, steps=2, gate=gate)
    second = runner.submit("second", counting_job, steps=2)
    time.sleep(0.1)
    assert runner.status(first).state is JobState.RUNNING
    assert runner.status(second).state is JobState.QUEUED
    gate.set()
    done_first, done_second = runner.wait(first, timeout=10), runner.wait(second, timeout=10)
    assert done_first.finished_at <= done_second.started_at


def test_a_queued_job_can_be_cancelled_before_it_starts():
    runner = LocalRunner()
    gate = threading.Event()
    first = runner.submit("first", counting_job, steps=1, gate=gate)
    second = runner.submit("second", counting_job, steps=1)
    runner.cancel(second)
    gate.set()
    assert runner.wait(second, timeout=10).state is JobState.CANCELLED
    assert runner.status(second).started_at is None
    assert runner.wait(first, timeout=10).state is JobState.DONE
    with pytest.raises(KeyError, match="no job 99"):
        runner.cancel(99)


def test_a_sweep_job_logs_its_curve_even_when_cancelled(tiny_collection_dir, tmp_path):
    from engine.jobs.sweep import sweep_job
    from engine.runs.log import RunLog
    from engine.workspace import Workspace

    ws = Workspace.open(tiny_collection_dir, cache_dir=tmp_path / "cache")
    log = RunLog(tmp_path / "runs.sqlite3")
    runner = LocalRunner()
    args = dict(
        workspace=ws, run_log=log, tasks=ws.task_names, method="task_arithmetic", params={}, param="lam", split="val"
    )
    done = runner.wait(runner.submit("sweep", sweep_job, values=[0.0, 0.5, 1.0], **args), timeout=60)
    assert done.state is JobState.DONE and len(done.result.sweep.values) == 3
    direct = ws.compare(ws.task_names, "task_arithmetic", {"lam": 0.5}, split="val").merged.mean_accuracy
    assert done.result.sweep.mean_accuracy[1] == direct
    job = runner.submit("long sweep", sweep_job, values=[i / 1000 for i in range(1000)], **args)
    while runner.status(job).step < 2:
        time.sleep(0.01)
    runner.cancel(job)
    assert runner.wait(job, timeout=60).state is JobState.CANCELLED
    cancelled, finished = log.runs(kind="sweep")
    assert cancelled.status == "cancelled" and 2 <= len(cancelled.outputs["curve"]["values"]) < 1000
    assert finished.status == "done" and finished.outputs["best_value"] in (0.0, 0.5, 1.0)


def test_importance_job_caches_every_map_and_logs_a_run(tiny_collection_dir, tmp_path):
    from engine.jobs.importance import importance_job
    from engine.runs.log import RunLog
    from engine.workspace import Workspace

    ws = Workspace.open(tiny_collection_dir, cache_dir=tmp_path / "cache")
    assert not ws.importance.ready("theta")
    runner, log = LocalRunner(), RunLog(tmp_path / "runs.sqlite3")
    status = runner.wait(runner.submit("maps", importance_job, workspace=ws, kind="theta", run_log=log), timeout=60)
    assert status.state is JobState.DONE and status.step == status.total == len(ws.task_names)
    assert ws.importance.ready("theta")
    (run,) = log.runs(kind="importance")
    assert run.method == "sta:theta" and set(run.outputs["kept_at_0.05"]) == set(ws.task_names)


def test_taujp_job_caches_the_matrix_for_the_next_workspace(tiny_collection_dir, tmp_path):
    from engine.jobs.taujp import taujp_job
    from engine.runs.log import RunLog
    from engine.taujp.store import TAUJP_IMAGES
    from engine.workspace import Workspace

    ws = Workspace.open(tiny_collection_dir, cache_dir=tmp_path / "cache")
    assert not ws.taujp.ready()
    runner, log = LocalRunner(), RunLog(tmp_path / "runs.sqlite3")
    status = runner.wait(runner.submit("τJp", taujp_job, workspace=ws, run_log=log), timeout=120)
    assert status.state is JobState.DONE and status.step == status.total == len(ws.task_names)
    again = Workspace.open(tiny_collection_dir, cache_dir=tmp_path / "cache")
    assert again.taujp.ready()
    matrix = again.taujp.matrix()
    assert matrix.images == tuple(min(TAUJP_IMAGES, len(ws.suite.tasks[t].split("val"))) for t in ws.task_names)
    (run,) = log.runs(kind="taujp")
    assert run.outputs["diagonal"] == dict(zip(ws.task_names, matrix.values.diagonal().tolist()))


def test_merge_parts_job_leaves_wudi_ready_with_its_loss_curve_and_cancels_between_steps(tiny_collection_dir, tmp_path):
    from engine.jobs.parts import PartsOutcome, merge_parts_job
    from engine.merge.wudi import wudi_run
    from engine.runs.log import RunLog
    from engine.workspace import Workspace

    ws = Workspace.open(tiny_collection_dir, cache_dir=tmp_path / "cache")
    runner, log = LocalRunner(), RunLog(tmp_path / "runs.sqlite3")
    job = runner.submit("wudi", merge_parts_job, workspace=ws, method="wudi", params={"steps": 40}, run_log=log)
    status = runner.wait(job, timeout=60)
    assert status.state is JobState.DONE and status.result.params == {"steps": 40.0}
    expected = wudi_run(ws.matrix.T, ws.matrix.spec, steps=40).losses[1:]  # the loss after each step
    assert status.result.losses == pytest.approx(expected, rel=1e-6)
    assert status.metrics["loss"] == list(status.result.losses)  # the live curve ends as the outcome's
    assert PartsOutcome.from_json(status.result.to_json()) == status.result
    assert ws.merges.parts_ready(ws.task_names, "wudi", {"steps": 40}) and not ws.merges.needs_job(
        ws.task_names, "wudi", {"steps": 40}
    )
    (run,) = log.runs(kind="merge_parts")
    assert run.method == "wudi" and run.outputs["steps"] == 40

    gate = threading.Event()

    def slow_progress_job(ctx, **kwargs):  # the real job, its cancel requested while it steps
        original = ctx.check_cancelled

        def check():
            gate.set()
            original()

        ctx.check_cancelled = check
        return merge_parts_job(ctx, **kwargs)

    job = runner.submit("wudi", slow_progress_job, workspace=ws, method="wudi", params={"steps": 1000})
    gate.wait(30)
    runner.cancel(job)
    assert runner.wait(job, timeout=60).state is JobState.CANCELLED
    assert not ws.merges.parts_ready(ws.task_names, "wudi", {"steps": 1000})  # nothing half-computed was kept


def test_landscape_job_evaluates_every_point_and_marks_the_best(tiny_collection_dir, tmp_path):
    from engine.errors import ParameterError
    from engine.jobs.landscape import Landscape, landscape_job
    from engine.runs.log import RunLog
    from engine.workspace import Workspace

    ws = Workspace.open(tiny_collection_dir, cache_dir=tmp_path / "cache")
    pair, values = ws.task_names[:2], (0.0, 0.5, 1.0)
    runner, log = LocalRunner(), RunLog(tmp_path / "runs.sqlite3")
    status = runner.wait(runner.submit("land", landscape_job, workspace=ws, tasks=pair, values=values, run_log=log), 60)
    assert status.state is JobState.DONE and status.step == status.total == 9
    land = status.result
    for i, a in enumerate(values):
        for j, b in enumerate(values):
            merged = ws.compare(pair, "task_arithmetic", {"lam": [a, b]}, split="interactive")
            assert land.exact[i][j] == merged.mean_normalized
            preview = ws.taujp.preview(pair, {"lam": [a, b]})
            finetuned = ws.finetuned("interactive")
            assert land.preview[i][j] == pytest.approx(sum(preview[t] / finetuned[t] for t in pair) / 2)
    best = land.best()
    assert best[2] == max(v for row in land.exact for v in row) and (best[0], best[1]) in {
        (a, b) for i, a in enumerate(values) for j, b in enumerate(values) if land.exact[i][j] == best[2]
    }
    assert Landscape.from_json(land.to_json()) == land
    (run,) = log.runs(kind="landscape")
    assert run.outputs["best_lam"] == list(best[:2])
    with pytest.raises(ParameterError, match="two different tasks"):
        landscape_job(None, workspace=ws, tasks=[pair[0], pair[0]], values=values)


SERVER = """
import sys, time
from engine.jobs.runner import LocalRunner
from engine.runs.log import RunLog

def endless(ctx):
    step = 0
    while True:
        step += 1
        ctx.report(step, 1000, f"step {step}", metrics={"loss": 1.0 / step})
        time.sleep(0.05)

runner = LocalRunner(run_log=RunLog(sys.argv[1]))
job = runner.submit("endless", endless, owner="session-a")
print(job, flush=True)
time.sleep(600)
"""


def test_a_job_running_when_its_process_is_killed_shows_as_interrupted_after_a_restart(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from engine.runs.log import RunLog

    root, path = Path(__file__).resolve().parent.parent, tmp_path / "runs.sqlite3"
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(path)],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        job_id = int(server.stdout.readline())
        log = RunLog(path)
        deadline = time.monotonic() + 60
        while log.job(job_id).step < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.jobs()[0].state == "running"  # the process is alive: not interrupted
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
    LocalRunner(run_log=RunLog(path))  # the restarted server
    (job,) = RunLog(path).jobs(owner="session-a")
    assert (job.id, job.name, job.kind, job.state) == (job_id, "endless", "endless", "interrupted")
    assert job.step >= 3 and job.total == 1000 and job.metrics["loss"] == pytest.approx(1.0 / job.step)
    assert job.finished is not None and RunLog(path).jobs(owner="session-b") == []


def test_every_job_is_recorded_from_submission_and_a_cancelled_one_is_logged_as_partial(tmp_path):
    from engine.runs.log import RunLog

    log = RunLog(tmp_path / "runs.sqlite3")
    runner = LocalRunner(run_log=log)
    done = runner.submit("sum", counting_job, steps=3, owner="s1")
    runner.wait(done, timeout=10)
    record = log.job(done)
    assert (record.state, record.step, record.owner, record.spec) == ("done", 3, "s1", {"steps": 3})
    assert log.runs(job_id=done) == []  # a job that logs nothing is not logged when it completes
    cancelled = runner.submit("slow", counting_job, steps=1000, delay=0.01, owner="s2")
    while runner.status(cancelled).step < 2:
        time.sleep(0.01)
    runner.cancel(cancelled)
    runner.wait(cancelled, timeout=10)
    (partial,) = log.runs(job_id=cancelled)
    assert partial.kind == "counting" and partial.status == "cancelled" and partial.outputs["partial"]
    assert 2 <= partial.outputs["step"] < 1000 and partial.outputs["reached"]["partial_sum"] > 0
    assert log.job(cancelled).state == "cancelled" and [j.id for j in log.jobs()] == [cancelled, done]


def test_a_job_takes_its_share_of_the_cores_and_no_more_than_other_processes_leave_idle():
    from engine.jobs.runner import job_threads

    assert job_threads(running=1, cores=2, load=0.2, in_use=0) == 2  # a quiet machine: every core
    assert job_threads(running=2, cores=16, load=4.0, in_use=4) == 8  # two jobs: half each
    assert job_threads(running=1, cores=2, load=8.0, in_use=0) == 1  # a loaded machine: one thread
    assert job_threads(running=1, cores=2, load=2.1, in_use=2) == 2  # its own threads are not "others"
    assert job_threads(running=3, cores=2, load=0.0, in_use=0) == 1  # never below one


def test_a_job_runs_with_the_runners_threads_in_its_own_thread():
    import torch

    def threads_job(ctx):
        seen = [torch.get_num_threads()]
        ctx.report(1, 1)
        return [*seen, torch.get_num_threads()]

    before = torch.get_num_threads()
    runner = LocalRunner(threads=1)
    assert runner.wait(runner.submit("threads", threads_job), timeout=10).result == [1, 1]
    assert torch.get_num_threads() == before  # the caller's thread keeps its own
    with pytest.raises(ValueError, match="at least 1"):
        LocalRunner(threads=0)


def test_the_estimate_counts_from_the_first_step_not_the_set_up():
    from engine.jobs.progress import job_timing

    timing = dict(started=100.0, finished=None, total=10, stepping_since=130.0, stepping_from=1)
    first = job_timing(step=1, now=131.0, **timing)  # 30 s of set-up, then one step: no rate yet
    assert (first.elapsed_s, first.left_s) == (31.0, None)
    later = job_timing(step=5, now=138.0, **timing)  # 4 steps in 8 s: 2 s a step, 5 steps left
    assert (later.elapsed_s, later.left_s) == (38.0, 10.0)
    late = job_timing(step=5, now=142.0, **timing)  # no step for a while: the estimate grows
    assert late.left_s == 15.0
    assert job_timing(step=10, now=150.0, **timing).left_s == 0.0
    finished = job_timing(**{**timing, "finished": 160.0}, step=10, now=999.0)
    assert (finished.elapsed_s, finished.left_s) == (60.0, None)
    assert job_timing(**{**timing, "started": None}, step=0) is None  # queued: nothing to show


def test_a_job_reports_where_its_rate_starts_in_the_runner_and_the_run_log(tmp_path):
    from engine.jobs import progress
    from engine.runs.log import RunLog

    def phased_job(ctx):
        ctx.starting("set-up")
        ctx.report(1, 4)
        ctx.report(3, 4)
        ctx.report(1, 2)  # a new phase with its own total: the rate starts again
        return ctx.job_id

    runner = LocalRunner(run_log=RunLog(tmp_path / "runs.sqlite3"))
    job = runner.submit("phases", phased_job)
    status = runner.wait(job, timeout=10)
    record = runner.run_log.job(job)
    assert status.stepping_from == record.stepping_from == 1
    assert status.started_at <= status.stepping_since == record.stepping_since <= status.finished_at
    running = progress.of_status(replace(status, finished_at=None, step=2), now=status.stepping_since + 3.0)
    assert running.left_s == 0.0 and running.elapsed_s >= 3.0
    assert progress.of_record(record).left_s is None  # finished: no estimate


def test_a_sweep_submitted_behind_a_running_finetune_starts_and_reports_progress(tiny_collection_dir, tmp_path):
    from engine.jobs.finetune import finetune_job
    from engine.jobs.sweep import sweep_job
    from engine.runs.log import RunLog
    from engine.train.finetune import FinetuneConfig
    from engine.workspace import Workspace

    ws = Workspace.open(tiny_collection_dir, cache_dir=tmp_path / "cache")
    log = RunLog(tmp_path / "runs.sqlite3")
    runner = LocalRunner(run_log=log, cpu_slots=2)
    config = FinetuneConfig(mode="standard", steps=100_000, batch_size=8)  # runs until cancelled
    finetune = runner.submit(
        "fine-tune", finetune_job, workspace=ws, task=ws.task_names[0], config=config, out_root=tmp_path / "ft"
    )
    try:
        while runner.status(finetune).step < 1:
            assert runner.status(finetune).state in (JobState.QUEUED, JobState.RUNNING), runner.status(finetune).error
            time.sleep(0.05)
        args = dict(tasks=ws.task_names, method="task_arithmetic", params={}, param="lam", split="val")
        sweep = runner.submit("sweep", sweep_job, workspace=ws, run_log=log, values=[0.0, 0.5, 1.0], **args)
        done = runner.wait(sweep, timeout=120)
        assert done.state is JobState.DONE and (done.step, done.total) == (3, 3)
        assert log.job(sweep).step == 3 and runner.status(finetune).state is JobState.RUNNING  # side by side
    finally:
        runner.cancel(finetune)
    assert runner.wait(finetune, timeout=60).state is JobState.CANCELLED


def test_job_slots_and_threads_come_from_the_environment_then_config_json(tmp_path, monkeypatch):
    import json

    from engine.errors import SchemaError
    from engine.home import JOB_SLOTS, DataHome

    home = DataHome(tmp_path)
    monkeypatch.delenv("MERGELAB_JOB_SLOTS", raising=False)
    monkeypatch.delenv("MERGELAB_JOB_THREADS", raising=False)
    assert (home.job_slots(), home.job_threads()) == (JOB_SLOTS, None)
    home.config_file.write_text(json.dumps({"job_slots": 3, "job_threads": 1}))
    assert (home.job_slots(), home.job_threads()) == (3, 1)
    monkeypatch.setenv("MERGELAB_JOB_SLOTS", "4")
    assert home.job_slots() == 4
    monkeypatch.setenv("MERGELAB_JOB_THREADS", "two")
    with pytest.raises(SchemaError, match="MERGELAB_JOB_THREADS"):
        home.job_threads()
    home.config_file.write_text(json.dumps({"job_slots": 0}))
    with pytest.raises(SchemaError, match="job_slots is 0"):
        home.config()


def test_progress_goes_to_the_jobs_table_in_bounded_writes_and_the_end_carries_the_latest(tmp_path):
    from engine.runs.log import RunLog

    class CountingLog(RunLog):
        writes = 0

        def update_job(self, job_id, **changes):
            CountingLog.writes += 1
            super().update_job(job_id, **changes)

    runner = LocalRunner(run_log=CountingLog(tmp_path / "runs.sqlite3"))
    status = runner.wait(runner.submit("sum", counting_job, steps=400), timeout=30)
    record = runner.run_log.job(status.id)
    assert (record.state, record.step, record.metrics) == ("done", 400, {"partial_sum": sum(i * i for i in range(400))})
    assert CountingLog.writes < 50  # not one commit per step: running, the first step, a few more, done
