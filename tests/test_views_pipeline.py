"""The Merge page carries the merge pipeline: calibrators picked after any base method, their namespaced
parameters (`svc.alpha`) as sliders, in the page's link and reopened from it; a task-specific method says it needs
the task id at inference and takes no calibrator."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from engine.workspace import Workspace
from tests.test_views import APP, _metric, _open


@pytest.fixture()
def app(tiny_collection_dir, data_home):
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tiny_collection_dir)]}))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["collection"] = str(tiny_collection_dir)
    return at


def _page_query(at: AppTest) -> dict:
    return {k: v for k, v in at.query_params.items() if k != "collection"}


def test_a_link_opens_tsv_m_with_svc_and_the_numbers_are_the_engines(app, tiny_collection_dir, data_home):
    app.query_params.update(method="tsv_m", calibrate="svc", **{"svc.alpha": "0.8"})
    _open(app, "views/merge.py")
    assert not app.exception and not app.warning
    assert app.multiselect(key="calibrate").value == ["svc"]
    assert app.slider(key="calibrate.svc.alpha").value == pytest.approx(0.8)
    assert _page_query(app) == {"method": "tsv_m", "calibrate": "svc", "svc.alpha": "0.8"}  # reopened as written
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    alpha = app.slider(key="tsv_m.alpha").value
    expected = ws.compare(ws.task_names, "tsv_m", {"alpha": alpha, "svc.alpha": 0.8}, calibrate=("svc",))
    plain = ws.compare(ws.task_names, "tsv_m", {"alpha": alpha})
    assert _metric(app, "mean accuracy (merged)") == f"{expected.mean_merged:.1%}"
    assert expected.merged.accuracy != plain.merged.accuracy or expected.mean_merged == plain.mean_merged
    assert "SVC (singular value calibration)" in " ".join(c.value for c in app.caption)


def test_picking_calibrators_writes_them_and_their_parameters_into_the_link(app):
    _open(app, "views/merge.py")
    app.selectbox(key="method").set_value("ties").run()
    app.multiselect(key="calibrate").set_value(["lines", "svc"]).run()
    assert not app.exception
    assert app.query_params["calibrate"] == ["lines", "svc"]  # in the order picked: LiNeS first
    assert "lines.beta" not in app.query_params  # at its default: left out
    app.slider(key="calibrate.lines.beta").set_value(0.5).run()
    assert app.query_params["lines.beta"] == "0.5"
    app.multiselect(key="calibrate").set_value([]).run()
    assert "calibrate" not in app.query_params and "lines.beta" not in app.query_params


def test_a_task_specific_method_says_so_and_drops_a_linked_calibrator(app):
    app.query_params.update(method="emr", calibrate="svc")
    _open(app, "views/merge.py")
    assert not app.exception
    assert "task-specific: needs the task id at inference" in " ".join(c.value for c in app.caption)
    assert "Ignored `calibrate` from the link" in " ".join(w.value for w in app.warning)
    assert app.multiselect(key="calibrate").value == [] and app.multiselect(key="calibrate").disabled
    assert "calibrate" not in app.query_params


def test_a_calibrators_parameter_without_its_calibrator_is_named_as_ignored(app):
    app.query_params.update(method="tsv_m", **{"svc.alpha": "0.8"})
    _open(app, "views/merge.py")
    assert "Ignored `svc.alpha=0.8` from the link" in " ".join(w.value for w in app.warning)


def test_a_calibrated_sweep_is_one_series_and_its_best_trial_opens_with_its_calibrator(
    tiny_collection_dir, data_home, tmp_path, capsys
):
    from urllib.parse import parse_qs

    from engine.cli import main

    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tiny_collection_dir)]}))
    recipe = tmp_path / "tsv_svc.json"
    recipe.write_text(json.dumps({"collection": str(tiny_collection_dir), "method": "tsv_m", "calibrate": ["svc"]}))
    assert main(["sweep", str(recipe), "--grid", "svc.alpha=0.5,2"]) == 0
    best = json.loads(capsys.readouterr().out)["best_params"]
    at = AppTest.from_file(APP.replace("app.py", "views/sweeps.py"), default_timeout=120).run()
    assert not at.exception
    assert "tsv_m+svc" in at.selectbox(key="sweep_run").format_func(at.selectbox(key="sweep_run").value)
    (link,) = [m.value for m in at.markdown if "Open the best trial in Merge" in m.value]
    query = parse_qs(link.split("(merge?", 1)[1].rstrip(")"))
    assert query["method"] == ["tsv_m"] and query["calibrate"] == ["svc"]
    assert query["svc.alpha"] == [f"{best['svc.alpha']:.6g}"]


def test_compare_draws_the_zoos_storage_plane_and_defines_its_x_axis(data_home):
    from engine.home import ASSETS_DIR

    data_home.mkdir(parents=True, exist_ok=True)
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["collection"] = str(ASSETS_DIR / "zoo")
    _open(at, "views/compare.py")
    assert not at.exception and not at.error
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    plane = next(c for c in charts if "stores" in c["layout"]["title"]["text"])
    assert plane["layout"]["xaxis"]["type"] == "log"
    assert any("divided by K" in c.value and "4P/K + P/8" in c.value for c in at.caption)
    assert "TSV-M → SVC" in list(at.dataframe[0].value["method"])  # a calibrated pipeline is a row
