"""Every job kind, cancelled mid-run (the real job on the tiny collection): logged as a partial run that
says what it reached; and every job says what it is starting before its first step."""

from __future__ import annotations

import threading

import pytest

from engine.jobs.runner import STARTING, Cancelled, JobContext, JobState, LocalRunner
from engine.learn.coefficients import LearnConfig
from engine.runs.log import RunLog
from engine.train.finetune import FinetuneConfig
from engine.workspace import Workspace

TINY_FINETUNE = FinetuneConfig(mode="standard", steps=25, batch_size=16, lr=3e-3, warmup_steps=2, eval_every=5)
SHORT_LEARN = LearnConfig(epochs=3, patience=3, batch_size=24)


def _jobs(ws: Workspace, tmp_path):
    """kind → (job function, its arguments): each long enough that a cancel after its first step cuts it short."""
    from engine.jobs.compare import compare_job
    from engine.jobs.finetune import finetune_job
    from engine.jobs.importance import importance_job
    from engine.jobs.landscape import landscape_job
    from engine.jobs.learn import learn_job
    from engine.jobs.parts import merge_parts_job
    from engine.jobs.search import grid_sweep_job, search_job
    from engine.jobs.sweep import sweep_job
    from engine.jobs.taujp import taujp_job

    tasks, lams = ws.task_names, [round(0.025 * i, 3) for i in range(41)]
    return {
        "sweep": (
            sweep_job,
            dict(tasks=tasks, method="task_arithmetic", params={}, param="lam", values=lams, split="val"),
        ),
        "compare": (compare_job, dict(methods=["task_arithmetic", "ties"])),
        "finetune": (finetune_job, dict(task=tasks[0], config=TINY_FINETUNE, out_root=tmp_path / "finetuned")),
        "learn": (learn_job, dict(start="atlas", atlas_config=SHORT_LEARN, config=None)),
        "merge_parts": (merge_parts_job, dict(method="wudi", params={"steps": 1000})),
        "landscape": (landscape_job, dict(tasks=tasks[:2], values=[0.0, 0.5, 1.0])),
        "importance": (importance_job, dict(kind="theta")),
        "taujp": (taujp_job, {}),
        "grid_sweep": (grid_sweep_job, dict(tasks=tasks, method="task_arithmetic", grid={"lam": lams})),
        "search": (search_job, dict(tasks=tasks, trials=12, batch=4)),
    }


KINDS = (
    "sweep",
    "compare",
    "finetune",
    "learn",
    "merge_parts",
    "landscape",
    "importance",
    "taujp",
    "grid_sweep",
    "search",
)
LOGGED_AS = {"learn": "learned"}  # the run's kind where it differs from the job's (the Learned page lists "learned")


def cancelled_after_its_first_step(runner: LocalRunner, job_fn):
    """The real job, whose cancel the runner gets as soon as the job reports its first step after set-up."""

    def job(ctx: JobContext, **kwargs):
        report = ctx.report

        def report_then_cancel(step, total, message="", metrics=None):
            report(step, total, message, metrics)
            if not message.startswith(STARTING):
                runner.cancel(ctx.job_id)

        ctx.report = report_then_cancel
        return job_fn(ctx, **kwargs)

    job.__name__ = job_fn.__name__
    return job


@pytest.fixture()
def ws(tiny_collection_dir, tmp_path):
    return Workspace.open(tiny_collection_dir, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("kind", KINDS)
def test_a_job_cancelled_mid_run_is_logged_as_partial_with_what_it_reached(kind, ws, tmp_path):
    log = RunLog(tmp_path / "runs.sqlite3")
    runner = LocalRunner(run_log=log)
    fn, args = _jobs(ws, tmp_path)[kind]
    job = runner.submit(kind, cancelled_after_its_first_step(runner, fn), workspace=ws, run_log=log, **args)
    assert runner.wait(job, timeout=120).state is JobState.CANCELLED
    top = [r for r in log.runs(job_id=job) if r.parent_id is None]
    assert len(top) == 1, [(r.kind, r.status) for r in top]
    (run,) = top
    assert run.kind == LOGGED_AS.get(kind, kind) and run.status == "cancelled"
    assert run.partial and run.status_shown == "cancelled (partial)"
    assert run.reached and run.reached != "nothing finished", run.outputs
    if "total" in run.outputs and run.outputs["total"]:
        assert 1 <= run.outputs["step"] < run.outputs["total"] or kind == "learn"


def test_a_cancelled_sweep_keeps_the_best_it_reached_labelled_so(ws, tmp_path):
    from engine.jobs.sweep import sweep_job

    log = RunLog(tmp_path / "runs.sqlite3")
    runner = LocalRunner(run_log=log)
    cancel_at = threading.Event()
    fn, args = _jobs(ws, tmp_path)["sweep"]

    def third_point_then_cancel(ctx, **kwargs):
        report = ctx.report

        def report_then_cancel(step, total, message="", metrics=None):
            report(step, total, message, metrics)
            if step == 3:
                cancel_at.set()
                runner.cancel(ctx.job_id)

        ctx.report = report_then_cancel
        return sweep_job(ctx, **kwargs)

    third_point_then_cancel.__name__ = fn.__name__
    job = runner.submit("sweep", third_point_then_cancel, workspace=ws, run_log=log, **args)
    assert runner.wait(job, timeout=120).state is JobState.CANCELLED and cancel_at.is_set()
    (run,) = log.runs(kind="sweep")
    assert run.partial and (run.outputs["step"], run.outputs["total"]) == (3, 41)
    assert run.outputs["accuracy_is"] == "best reached so far" and run.reached.startswith("3 of 41")
    curve = run.outputs["curve"]
    best = max(range(3), key=lambda i: (curve["mean_normalized"][i], -curve["values"][i]))
    assert run.outputs["best_value"] == curve["values"][best]
    assert run.mean_accuracy == pytest.approx(curve["mean_accuracy"][best])
    assert runner.status(job).metrics["values"] == curve["values"]  # the live curve, in the jobs table too
    assert log.job(job).metrics["mean_accuracy"] == curve["mean_accuracy"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_job_says_what_it_is_starting_before_its_first_step(kind, ws, tmp_path):
    """The first progress a job reports names its set-up (the page's bar shows it), before any step."""
    seen: list[dict] = []
    cancel = threading.Event()

    def update(**change):
        seen.append(change)
        if not change.get("message", "").startswith(STARTING):
            cancel.set()  # enough: the first step came

    fn, args = _jobs(ws, tmp_path)[kind]
    with pytest.raises(Cancelled):  # the job stops at its first cancel check after that step
        fn(JobContext(update, cancel), workspace=ws, **args)
    assert seen and seen[0]["message"].startswith(f"{STARTING}: ") and seen[0]["step"] == 0
    assert any(not c["message"].startswith(STARTING) for c in seen), "it went on to a first step"


def test_the_runner_says_starting_the_moment_a_worker_takes_a_job(tmp_path):
    log = RunLog(tmp_path / "runs.sqlite3")
    runner = LocalRunner(run_log=log)
    gate, taken = threading.Event(), threading.Event()

    def slow_setup_job(ctx):
        taken.set()
        gate.wait(10)  # an expensive set-up that reports nothing
        ctx.report(1, 1, "done")

    job = runner.submit("slow set-up", slow_setup_job)
    assert taken.wait(10)
    status, record = runner.status(job), log.job(job)
    gate.set()
    assert status.state is JobState.RUNNING and status.message == STARTING and record.message == STARTING
    runner.wait(job, timeout=10)
