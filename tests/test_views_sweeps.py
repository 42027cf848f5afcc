"""The Sweeps page: a logged search drawn as its Pareto plane and coordinates, with a link to its best trial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.cli import main

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture()
def session(tiny_collection_dir, data_home):
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tiny_collection_dir)]}))

    def open_page() -> AppTest:
        at = AppTest.from_file(APP, default_timeout=120)
        at.session_state["collection"] = str(tiny_collection_dir)
        at.run()
        at.switch_page("views/sweeps.py").run()
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
    (link,) = at.get("page_link")
    query = link.proto.query_string if hasattr(link.proto, "query_string") else str(link.proto)
    assert "method=task_arithmetic" in query and "per_task=true" in query
    for task, value in zip(("colour", "brightness", "texture"), printed["best_params"]["lam"]):
        assert f"lam.{task}={value:.6g}" in query
    assert any(f"{printed['val_mean_normalized']:.1%}" in m.value for m in at.markdown)
