"""The Sweeps page: a logged search drawn as its Pareto plane and coordinates, with a link to its best trial."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from streamlit.testing.v1 import AppTest

from engine.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGE, APP = str(ROOT / "views" / "sweeps.py"), str(ROOT / "app.py")


@pytest.fixture()
def session(tiny_collection_dir, data_home):
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tiny_collection_dir)]}))

    def open_page() -> AppTest:
        at = AppTest.from_file(PAGE, default_timeout=120).run()  # the page alone: app.py does not list it yet
        assert not at.exception, at.exception
        return at

    return open_page


def test_with_no_sweep_the_page_says_how_to_run_one(session):
    at = session()
    assert any("python -m engine sweep" in i.value for i in at.info)


def test_a_search_is_drawn_and_its_best_trial_links_to_merge(session, tiny_collection_dir, tmp_path, capsys):
    recipe = tmp_path / "ta.json"
    recipe.write_text(json.dumps({"collection": str(tiny_collection_dir), "method": "task_arithmetic"}))
    assert main(["search", str(recipe), "--trials", "6", "--batch", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    at = session()
    assert len(at.get("plotly_chart")) == 2
    at.selectbox(key="sweep_y").set_value("colour").run()
    assert not at.exception, at.exception
    (link,) = [m.value for m in at.markdown if "Open the best trial in Merge" in m.value]
    query = parse_qs(link.split("(merge?", 1)[1].rstrip(")"))
    assert query["method"] == ["task_arithmetic"] and query["per_task"] == ["true"]
    assert query["tasks"] == ["colour", "brightness", "texture"] and query["collection"] == [str(tiny_collection_dir)]
    for task, value in zip(query["tasks"], printed["best_params"]["lam"]):
        assert query[f"lam.{task}"] == [f"{value:.6g}"]
    assert any(f"{printed['val_mean_normalized']:.1%}" in m.value for m in at.markdown)


def test_the_best_trial_s_link_opens_merge_at_its_setting(session, tiny_collection_dir, tmp_path, capsys):
    recipe = tmp_path / "ta.json"
    recipe.write_text(json.dumps({"collection": str(tiny_collection_dir), "method": "task_arithmetic"}))
    assert main(["search", str(recipe), "--trials", "4", "--batch", "2", "--seed", "5"]) == 0
    best = json.loads(capsys.readouterr().out)["best_params"]["lam"]
    (link,) = [m.value for m in session().markdown if "Open the best trial in Merge" in m.value]
    merge = AppTest.from_file(APP, default_timeout=120)
    for name, values in parse_qs(link.split("(merge?", 1)[1].rstrip(")")).items():
        merge.query_params[name] = values if len(values) > 1 else values[0]
    merge.run()
    merge.switch_page("views/merge.py").run()
    assert not merge.exception and not merge.warning, [w.value for w in merge.warning]
    assert merge.session_state["per_task"] is True
    for task, value in zip(("colour", "brightness", "texture"), best):
        assert merge.session_state[f"task_arithmetic.lam.{task}"] == pytest.approx(value, abs=1e-5)


@contextlib.contextmanager
def _one_slot_held(tiny_collection_dir: Path, data_home: Path) -> Iterator[None]:
    """config.json allows one job at a time, and a job ahead holds that slot until the block ends: a sweep
    started inside stays queued and logs nothing, so what the page shows right after its click does not depend
    on how fast the sweep runs (a tiny one could log its sweep first, and the page's tick then reruns the app,
    which drops the click's message). Every job has finished when the block ends."""
    from ui import resources

    data_home.mkdir(parents=True, exist_ok=True)
    config = {"allowed_roots": [str(tiny_collection_dir)], "job_slots": 1}
    (data_home / "config.json").write_text(json.dumps(config))
    gate, started = threading.Event(), threading.Event()

    def blocking(ctx):
        started.set()
        gate.wait(60)

    runner = resources.job_runner()
    runner.submit("ahead", blocking, owner="x")
    try:
        assert started.wait(10)
        yield
    finally:
        gate.set()
        for job in runner.jobs():  # the sweep too: nothing left running into the next test
            runner.wait(job.id, timeout=120)


def test_a_grid_started_from_the_page_runs_as_a_job_and_is_then_drawn(tiny_collection_dir, data_home):
    from engine.runs.log import RunLog

    with _one_slot_held(tiny_collection_dir, data_home):
        at = AppTest.from_file(APP, default_timeout=120)
        at.session_state["collection"] = str(tiny_collection_dir)
        at.run()
        at.switch_page("views/sweeps.py").run()
        at.text_input(key="sweep_grid").input("lam=0:9:3").run()  # out of task arithmetic's range
        next(b for b in at.button if b.label == "Start as a background job").click().run()
        assert any("lam" in e.value and "outside" in e.value for e in at.error), [e.value for e in at.error]
        at.text_input(key="sweep_grid").input("lam=0:1:3").run()
        next(b for b in at.button if b.label == "Start as a background job").click().run()
        assert not at.exception and any("Started job #" in s.value for s in at.success)
    log = RunLog(data_home / "runs" / "runs.sqlite3")
    (sweep,) = log.runs(kind="grid_sweep")
    assert sweep.status == "done" and len(log.runs(parent_id=sweep.id)) == 3
    at.run()
    assert not at.exception and at.selectbox(key="sweep_run").value == sweep.id


def test_a_started_sweep_job_shows_at_once(tiny_collection_dir, data_home):
    """Right after "Started job #N" the page shows the job (queued here: a job ahead holds the one job slot
    config.json allows), not "No sweep yet"."""
    with _one_slot_held(tiny_collection_dir, data_home):
        at = AppTest.from_file(APP, default_timeout=120)
        at.session_state["collection"] = str(tiny_collection_dir)
        at.run()
        at.switch_page("views/sweeps.py").run()
        at.text_input(key="sweep_grid").input("lam=0.1,0.5").run()
        next(b for b in at.button if b.key == "sweep_start").click().run()
        assert not at.exception, at.exception
        (started_msg,) = [s.value for s in at.success if "Started job #" in s.value]
        job = started_msg.split("#")[1].split(":")[0]
        lines = [m.value for m in at.markdown if "-badge[" in m.value]
        assert any(f"**#{job}**" in line and "queued]" in line for line in lines), lines
        assert not any("No sweep yet" in i.value for i in at.info)
