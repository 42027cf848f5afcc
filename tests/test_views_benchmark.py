"""The Benchmark page: the zoo's stored table at once; on another pool, the run as a background job whose
table, per-task bars and published chart appear when it finishes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.eval.benchmark import markdown, stored_benchmark
from engine.home import ASSETS_DIR
from ui import owner

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
TOKEN = "b" * 32


@pytest.fixture()
def app(tiny_collection_dir, data_home):
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tiny_collection_dir)]}))
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state[owner.TOKEN_KEY] = TOKEN
    return at


def _charts(at: AppTest) -> dict[str, dict]:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return {s["layout"]["title"]["text"]: s for s in specs}


def test_the_zoo_shows_its_stored_table_at_once(app):
    app.run()
    app.switch_page("views/benchmark.py").run()
    assert not app.exception, app.exception
    stored = stored_benchmark(ASSETS_DIR / "zoo")
    assert any(m.value.strip() == markdown(stored).strip() for m in app.markdown)
    bars = _charts(app)["Test accuracy per task, each method at its setting chosen on val"]
    assert [t["name"].split(" · ")[0] for t in bars["data"]] == [stored.names[r.method] for r in stored.rows]
    plane = _charts(app)[f"What each method stores against what it scores ({len(stored.tasks)} tasks, test)"]
    assert len(plane["data"][0]["x"]) == len(stored.methods_done) + 1  # and the fine-tuned models
    assert plane["layout"]["xaxis"]["type"] == "log"
    assert any(c.value.startswith("**Storage–accuracy plane.** x: the bytes") for c in app.caption)


def test_a_run_on_another_pool_is_a_background_job_with_its_table(app, tiny_collection_dir):
    app.session_state["collection"] = str(tiny_collection_dir)
    app.run()
    app.switch_page("views/benchmark.py").run()
    assert not app.exception and any("No table yet" in i.value for i in app.info)
    app.multiselect(key="bench_methods").set_value(["task_arithmetic"]).run()
    app.number_input(key="bench_limit").set_value(10).run()
    next(b for b in app.button if b.label.startswith("Run the benchmark")).click().run()
    deadline = time.monotonic() + 90
    while not any("| Task arithmetic |" in m.value for m in app.markdown) and time.monotonic() < deadline:
        time.sleep(0.5)
        app.run()
    assert not app.exception, app.exception
    table = next(m.value for m in app.markdown if "| Task arithmetic |" in m.value)
    assert "| Method | colour | brightness | texture |" in table and "at most 10 images per task" in table
    assert "family unknown: not comparable" in table
    charts = _charts(app)  # task bars, the published numbers, and the run on the storage-accuracy plane
    assert len(charts) == 3
    plane = charts["What each method stores against what it scores (3 tasks, test)"]
    assert len(plane["data"][0]["x"]) == 2  # task arithmetic and the fine-tuned models
