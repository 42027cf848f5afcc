"""Jobs that hold across reloads: a page finds the job it started, Jobs & runs draws each job's curve and
says "starting" and "partial", and a finished fine-tune is in the sidebar at once. An AppTest per session:
a new AppTest on the same server process is what a browser reload is (a new session, the same runner)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.jobs.runner import JobState

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture()
def new_session(tiny_collection_dir, data_home):
    """A fresh AppTest session on the tiny collection (call it again for a reload)."""
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tiny_collection_dir)]}))

    def open_page(view: str) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=120)
        at.session_state["collection"] = str(tiny_collection_dir)
        at.run()
        at.switch_page(view).run()
        assert not at.exception, at.exception
        return at

    return open_page


def _job_lines(at: AppTest) -> list[str]:
    """The jobs' lines as drawn (ui/job_states.py): state badge, number, name, message."""
    return [m.value for m in at.markdown if "-badge[" in m.value]


def _chart_titles(at: AppTest) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def _run_until(at: AppTest, done, *, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not done(at):
        assert time.monotonic() < deadline, "the job did not finish in time"
        time.sleep(0.5)
        at.run()


def test_a_finished_finetune_is_in_the_sidebar_and_survives_a_reload_with_its_curve(new_session, data_home):
    at = new_session("views/finetune.py")
    at.selectbox(key="ft_task").set_value("texture")
    at.selectbox(key="ft_mode").set_value("standard")
    at.number_input(key="ft_steps").set_value(4)
    at.number_input(key="ft_batch").set_value(8).run()
    next(b for b in at.button if b.label == "Fine-tune as a background job").click().run()
    job = at.session_state["ft_job"]
    _run_until(at, lambda a: bool(a.success) or bool(a.error))
    assert not at.error, at.error[0].value
    (saved,) = (data_home / "checkpoints" / "finetuned").rglob("*.safetensors")
    # the run that first sees the job done: the sidebar and the list below already name the checkpoint
    assert saved.stem in at.selectbox(key="ckpt.texture").options
    assert saved.stem in list(at.dataframe[-1].value["checkpoint"])
    assert at.session_state["ft_full_run"] == job  # a whole run read the data home after the job ended

    reloaded = new_session("views/finetune.py")  # a reload: a new session, nothing in its state
    assert reloaded.session_state["ft_job"] == job
    assert any(f"done] **#{job}** fine-tune texture" in line for line in _job_lines(reloaded))
    assert "Saved `standard-s4-" in reloaded.success[0].value
    assert "Fine-tuning" in _chart_titles(reloaded)  # the live curve is back

    jobs = new_session("views/jobs.py")
    assert any(e.label == f"Curve of #{job}" for e in jobs.expander)
    curve = json.loads(jobs.get("plotly_chart")[0].proto.spec)
    assert len(curve["data"][0]["y"]) == 4  # one loss per step, from the jobs table's metrics


def test_the_jobs_page_says_starting_while_a_job_sets_up(new_session):
    from ui import resources

    gate, taken = threading.Event(), threading.Event()

    def slow_setup_job(ctx):
        taken.set()
        gate.wait(30)  # e.g. opening a large workspace, before any step
        ctx.report(1, 1, "done")

    job = resources.job_runner().submit("slow set-up", slow_setup_job, owner="another-session")
    try:
        assert taken.wait(10)
        at = new_session("views/jobs.py")
        (line,) = [line for line in _job_lines(at) if f"running] **#{job}** slow set-up · starting · " in line]
        assert line.endswith(" elapsed")  # its time so far; no estimate before its steps give a rate
    finally:
        gate.set()
        resources.job_runner().wait(job, timeout=30)


def test_a_cancelled_sweep_reads_partial_in_the_run_log_with_what_it_reached(
    new_session, tiny_collection_dir, data_home
):
    from engine.jobs.sweep import sweep_job
    from engine.workspace import Workspace
    from tests.test_jobs_cancel import cancelled_after_its_first_step
    from ui import resources

    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    runner = resources.job_runner()
    job = runner.submit(
        "λ sweep",
        cancelled_after_its_first_step(runner, sweep_job),
        workspace=ws,
        run_log=runner.run_log,
        tasks=ws.task_names,
        method="task_arithmetic",
        params={},
        param="lam",
        values=[0.1 * i for i in range(11)],
        split="val",
    )
    assert runner.wait(job, timeout=120).state is JobState.CANCELLED
    at = new_session("views/jobs.py")
    table = at.dataframe[0].value
    row = table[table["kind"] == "sweep"].iloc[0]
    assert row["status"] == "cancelled (partial)" and row["reached"].startswith("1 of 11")
    assert any(e.label == f"Curve of #{job}" for e in at.expander)  # the curve it reached
    assert "Accuracy over lam (val split)" in _chart_titles(at)


def test_each_job_state_is_drawn_its_own_way():
    """queued, running, cancelled, failed, done and interrupted: a badge colour and icon each, and a bar only
    where a fraction means something (never the full bar all finished jobs used to share)."""
    from ui.job_states import LOOKS, job_look

    looks = {s: job_look(s, step=3, total=10) for s in LOOKS}
    assert len({(look.colour, look.icon) for look in looks.values()}) == len(LOOKS)
    assert looks["queued"].fraction == 0.0 and looks["running"].fraction == 0.3
    assert looks["cancelled"].fraction == 0.3  # where it stopped
    assert looks["done"].fraction is None and looks["failed"].fraction is None
    assert looks["running"].badge == ":blue-badge[:material/play_arrow: running]"


def test_the_jobs_page_draws_queued_running_cancelled_and_done_jobs_apart(new_session):
    from ui import resources

    gate, started = threading.Event(), threading.Semaphore(0)

    def blocking(ctx):  # holds one of the runner's CPU slots: with every slot held, the next job stays queued
        started.release()
        gate.wait(30)
        return 1

    def cancellable(ctx):
        for step in range(20):
            ctx.report(step, 20, "working")
            ctx.check_cancelled()
            time.sleep(0.2)
        return 1

    runner = resources.job_runner()
    done = runner.submit("quick", lambda ctx: 1, owner="x")
    runner.wait(done, timeout=30)
    cancelled = runner.submit("stopped", cancellable, owner="x")
    deadline = time.monotonic() + 30
    while runner.status(cancelled).step < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.cancel(cancelled)
    assert runner.wait(cancelled, timeout=30).state is JobState.CANCELLED
    running, *_ = [runner.submit("blocking", blocking, owner="x") for _ in range(runner.cpu_slots)]
    assert all(started.acquire(timeout=10) for _ in range(runner.cpu_slots))
    queued = runner.submit("waiting", lambda ctx: 1, owner="x")
    try:
        at = new_session("views/jobs.py")
        lines = {int(line.split("**#")[1].split("**")[0]): line for line in _job_lines(at)}
        assert lines[done].startswith(":green-badge[:material/check_circle: done]")
        assert lines[cancelled].startswith(":orange-badge[:material/cancel: cancelled]")
        assert lines[running].startswith(":blue-badge[:material/play_arrow: running]")
        assert lines[queued].startswith(":gray-badge[:material/hourglass_empty: queued]")
        bars = sorted(p.proto.value for p in at.get("progress"))  # queued 0, cancelled where it stopped, running 0
        assert len(bars) == 2 + runner.cpu_slots and bars[0] == 0 and 0 < bars[-1] < 100
    finally:
        gate.set()
        runner.wait(queued, timeout=30)
