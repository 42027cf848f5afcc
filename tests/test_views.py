"""Every view renders; moving a slider shows what the engine computes; URL state round-trips."""

import json
import shutil
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.merge import get_method
from engine.merge.pipeline import pipeline_display
from engine.workspace import Workspace
from ui import owner
from ui.pages import PAGES

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")


@pytest.fixture()
def app(tiny_collection_dir, data_home):
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tiny_collection_dir)]}))
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["collection"] = str(tiny_collection_dir)
    at.session_state[owner.TOKEN_KEY] = BROWSER_TOKEN  # as if its browser had sent this cookie
    return at


def _open(at: AppTest, view: str) -> None:
    """Run the app (app.py sets the defaults), then switch to `view`."""
    at.run()
    at.switch_page(view).run()


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.mark.parametrize("view", [v.file for v in PAGES])
def test_every_view_renders(app, view):
    _open(app, view)
    assert not app.exception


def test_the_sidebar_says_how_the_pool_is_held_and_config_json_chooses(app, tiny_collection_dir, data_home, tmp_path):
    """The memory plan's line under the pickers; "store" in the data home's config.json picks the backing (on a
    copy of the pool: this process may have opened the tiny one in memory already)."""
    _open(app, "views/merge.py")
    assert any("opening in memory (" in c.value and " free)" in c.value for c in app.sidebar.caption)
    pool = shutil.copytree(tiny_collection_dir, tmp_path / "pool")
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(pool)], "store": "built"}))
    built = AppTest.from_file(APP, default_timeout=120)
    built.session_state["collection"] = str(pool)
    _open(built, "views/merge.py")
    assert not built.exception
    assert any("opening out of core (as asked)" in c.value for c in built.sidebar.caption)
    assert len(list((data_home / "cache" / "stores").glob("*.float32.taskstore"))) == 1


def test_merge_slider_shows_the_engine_result(app, tiny_collection_dir, data_home):
    _open(app, "views/merge.py")
    app.slider(key="task_arithmetic.lam").set_value(0.8).run()
    assert not app.exception
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    expected = ws.compare(ws.task_names, "task_arithmetic", {"lam": 0.8})
    assert _metric(app, "mean accuracy (merged)") == f"{expected.mean_merged:.1%}"
    chart = json.loads(app.get("plotly_chart")[0].proto.spec)
    merged = next(t for t in chart["data"] if t["name"] == "merged")
    assert merged["y"] == [expected.merged.accuracy[t] for t in ws.task_names]


def test_per_task_sliders_and_task_choice(app, tiny_collection_dir, data_home):
    _open(app, "views/merge.py")
    app.multiselect(key="tasks").set_value(["colour", "texture"]).run()
    app.toggle(key="per_task").set_value(True).run()
    app.slider(key="task_arithmetic.lam.texture").set_value(1.0).run()
    assert not app.exception
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    expected = ws.compare(["colour", "texture"], "task_arithmetic", {"lam": [0.3, 1.0]})
    assert _metric(app, "mean accuracy (merged)") == f"{expected.mean_merged:.1%}"


def test_url_state_round_trips(app):
    app.query_params["task_arithmetic.lam"] = "0.55"
    app.query_params["tasks"] = ["colour", "brightness"]
    _open(app, "views/merge.py")
    assert not app.exception
    assert app.slider(key="task_arithmetic.lam").value == pytest.approx(0.55)
    assert app.multiselect(key="tasks").value == ["colour", "brightness"]


def test_a_bad_collection_shows_an_error_and_the_app_stays_up(app, tmp_path):
    app.session_state["collection"] = str(tmp_path / "not-a-collection")
    _open(app, "views/merge.py")
    assert not app.exception
    assert any("outside the allowed roots" in e.value or "manifest" in e.value for e in app.error)


def test_jobs_page_shows_the_data_home_and_clears_its_caches(app, data_home):
    from engine.home import DataHome

    home = DataHome.from_env().ensure()
    (home.cache / "heads").mkdir(parents=True, exist_ok=True)
    (home.cache / "heads" / "h.safetensors").write_bytes(b"x" * 100)  # as a page building heads leaves it
    _open(app, "views/jobs.py")
    before = {f.name: f.files for f in home.usage()}
    table = next(d.value for d in app.dataframe if "folder" in d.value.columns)
    assert dict(zip(table["folder"], table["files"])) == before and before["cache"] > 0
    (home.exports / "keep.safetensors").write_bytes(b"x")
    next(b for b in app.button if b.label == "Clear caches").click().run()
    assert not app.exception and any("Cleared" in s.value for s in app.success)
    assert {f.name: f.files for f in home.usage()}["cache"] == 0 and (home.exports / "keep.safetensors").is_file()


def test_jobs_page_with_a_running_job_and_with_none(app, tiny_collection_dir, data_home):
    import threading

    from ui import resources

    _open(app, "views/jobs.py")
    assert not app.exception
    gate = threading.Event()

    def waiting_job(ctx):
        ctx.report(1, 4, "waiting for the gate")
        gate.wait(30)
        return 1

    runner = resources.job_runner()
    job = runner.submit("demo wait", waiting_job, owner="another-session")
    try:
        app.run()
        assert not app.exception
        assert any("demo wait" in m.value and "-badge[" in m.value for m in app.markdown)
        # another session's job is shown read-only: only the session that started a job may cancel it
        assert not any(b.label == "Cancel" for b in app.button)
        assert any("another session's" in c.value for c in app.caption)
    finally:
        gate.set()
        runner.wait(job, timeout=30)


BROWSER_TOKEN = "t" * 43  # the cookie of the `app` fixture's browser (ui/owner.py)
APPTEST_SESSION = owner.owner_of(BROWSER_TOKEN)  # the owner its jobs are recorded with


@pytest.fixture()
def gated_job():
    """submit(owner) -> job id of a job that runs until the test ends (then it is let go and waited for)."""
    import threading

    from ui import resources

    gate, started = threading.Event(), []

    def waiting_job(ctx):
        ctx.report(1, 4, "waiting for the gate")
        while not gate.wait(0.05):
            ctx.check_cancelled()
        return 1

    def submit(owner: str) -> int:
        started.append(resources.job_runner().submit("demo wait", waiting_job, owner=owner))
        return started[-1]

    yield submit
    gate.set()
    for job in started:
        resources.job_runner().wait(job, timeout=30)


def test_a_page_following_another_sessions_job_shows_it_read_only(app, gated_job):
    """widgets.job_progress (Compare, Merge parts, fine-tune, learn pages): a job id in this session's state
    that another session started shows its progress, but no Cancel, and the job keeps running."""
    from engine.jobs.runner import JobState
    from ui import resources

    job = gated_job("another-session")
    app.session_state["compare_job"] = job
    _open(app, "views/compare.py")
    assert not app.exception
    assert any("demo wait" in m.value and "-badge[" in m.value for m in app.markdown)
    assert not any(b.label == "Cancel" for b in app.button)
    assert any("another session's" in c.value for c in app.caption)
    assert resources.job_runner().status(job).state is JobState.RUNNING


def test_the_owner_session_can_cancel_its_job_from_the_page(app, gated_job):
    from engine.jobs.runner import JobState
    from ui import resources

    job = gated_job(APPTEST_SESSION)
    app.session_state["compare_job"] = job
    _open(app, "views/compare.py")
    assert not any("another session's" in c.value for c in app.caption)
    next(b for b in app.button if b.label == "Cancel").click().run()
    assert not app.exception
    assert resources.job_runner().wait(job, timeout=30).state is JobState.CANCELLED


def test_the_jobs_page_lets_the_owner_cancel_and_nobody_else(app, gated_job):
    from engine.jobs.runner import JobState
    from ui import resources

    mine, theirs = gated_job(APPTEST_SESSION), gated_job("another-session")  # queued or running
    _open(app, "views/jobs.py")
    assert not app.exception
    cancels = [b for b in app.button if b.label == "Cancel"]
    assert [b.key for b in cancels] == [f"cancel-{mine}"]
    cancels[0].click().run()
    assert resources.job_runner().wait(mine, timeout=30).state is JobState.CANCELLED
    assert resources.job_runner().status(theirs).state in (JobState.QUEUED, JobState.RUNNING)


def test_cancel_job_refuses_a_session_that_does_not_own_the_job(gated_job):
    """The server-side check behind every Cancel button: outside that session (here: no session at all,
    owner "script") the job is not cancelled."""
    from engine.jobs.runner import JobState
    from ui import resources

    job = gated_job("another-session")
    assert resources.job_owner(job) == "another-session" and not resources.owns_job(job)
    assert resources.cancel_job(job) is False
    assert resources.job_runner().status(job).state in (JobState.QUEUED, JobState.RUNNING)
    assert resources.job_owner(10_000) == "" and resources.cancel_job(10_000) is False


def test_save_run_and_export_from_the_merge_page(app, tiny_collection_dir, data_home):
    from engine.io.checkpoints import load_checkpoint
    from engine.runs.log import RunLog

    _open(app, "views/merge.py")
    next(b for b in app.button if b.label == "Save run").click().run()
    assert not app.exception
    runs = RunLog(data_home / "runs" / "runs.sqlite3").runs(kind="merge")
    assert len(runs) == 1 and set(runs[0].outputs["accuracy"]) == {"colour", "brightness", "texture"}
    next(b for b in app.button if b.label == "Export checkpoint").click().run()
    assert not app.exception
    exported = list((data_home / "exports").glob("*.safetensors"))
    assert len(exported) == 1 and load_checkpoint(exported[0]).meta.variant == "merged"
    (download,) = app.get("download_button")
    assert download.proto.label == f"Download {exported[0].stem}.zip"  # the zip test_export_bundle loads
    assert (data_home / "exports" / f"{exported[0].stem}.zip").is_file()


def test_a_pasted_recipe_sets_the_sliders(app, tiny_collection_dir, data_home):
    _open(app, "views/merge.py")
    app.text_area(key="_recipe_text").input("tasks: [colour, texture]\nparams: {lam: [0.2, 0.9]}\n").run()
    next(b for b in app.button if b.label == "Apply recipe").click().run()
    assert not app.exception
    assert app.multiselect(key="tasks").value == ["colour", "texture"]
    assert app.toggle(key="per_task").value is True
    assert app.slider(key="task_arithmetic.lam.texture").value == pytest.approx(0.9)
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    expected = ws.compare(["colour", "texture"], "task_arithmetic", {"lam": [0.2, 0.9]})
    assert _metric(app, "mean accuracy (merged)") == f"{expected.mean_merged:.1%}"
    app.text_area(key="_recipe_text").input("params: {lam: 9}\nmethod: nope\n").run()
    next(b for b in app.button if b.label == "Apply recipe").click().run()
    assert any("nope: is not a registered merge method" in e.value for e in app.error)


def test_the_sweep_button_draws_and_logs_the_curve(app, data_home):
    from engine.runs.log import RunLog

    _open(app, "views/merge.py")
    next(b for b in app.button if b.label == "λ sweep").click().run()
    assert not app.exception
    charts = [json.loads(c.proto.spec) for c in app.get("plotly_chart")]
    mean = next(t for c in charts for t in c["data"] if t.get("name") == "mean")
    (run,) = RunLog(data_home / "runs" / "runs.sqlite3").runs(kind="sweep")
    assert mean["y"] == run.outputs["curve"]["mean_accuracy"] and len(mean["y"]) == 21
    lines = [s["x0"] for s in next(c for c in charts if c["layout"].get("shapes"))["layout"]["shapes"]]
    assert lines == [run.outputs["best_value"], 0.3]  # the best value, then "you are here" (the slider's)
    best = run.outputs["best_value"]
    use = next(b for b in app.button if b.key == "use_best")
    assert use.label == f"Use the best λ = {best:g}" and not use.disabled
    use.click().run()
    assert not app.exception
    assert app.slider(key="task_arithmetic.lam").value == pytest.approx(best)
    assert app.query_params.get("lam") == f"{best:.6g}" or best == 0.3
    assert next(b for b in app.button if b.key == "use_best").disabled  # already there


def test_the_headline_metrics_are_explained(app):
    _open(app, "views/merge.py")
    helps = {m.label: m.help for m in app.metric}
    assert "fine-tuned" in helps["mean normalized accuracy"] and "divided" in helps["mean normalized accuracy"]
    assert "averaged" in helps["mean accuracy (merged)"] and helps["tasks · images"]


def test_per_task_moves_say_when_the_keep_mask_is_recomputed(app, tiny_collection_dir, data_home):
    """A keep mask larger than half the cache budget is not kept: the page says each per-task move recomputes it.
    The process's cache and workspaces are Streamlit resources: cleared before (an earlier test made them with the
    default budget) and after (later tests must not inherit this tiny one)."""
    config = {"allowed_roots": [str(tiny_collection_dir)], "cache_budget_mb": 0.01}  # 10 KiB; the mask is 20 KiB
    (data_home / "config.json").write_text(json.dumps(config))
    st.cache_resource.clear()
    try:
        _open(app, "views/merge.py")
        app.selectbox(key="method").set_value("magnitude").run()
        assert not any("does not fit the cache budget" in c.value for c in app.caption)  # one λ for all: no mask
        app.toggle(key="per_task").set_value(True).run()
        app.slider(key="magnitude.lam.colour").set_value(0.9).run()
        assert not app.exception
        assert any("keep mask of these 3 tasks" in c.value and "recomputes it" in c.value for c in app.caption)
    finally:
        st.cache_resource.clear()


def test_ties_controls_and_sparsity_figures_on_the_merge_page(app, tiny_collection_dir, data_home):
    _open(app, "views/merge.py")
    app.selectbox(key="method").set_value("ties").run()
    app.slider(key="ties.density").set_value(0.5).run()
    app.toggle(key="show_sparsity").set_value(True).run()
    assert not app.exception
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    expected = ws.compare(ws.task_names, "ties", {"density": 0.5, "lam": 1.0})
    assert _metric(app, "mean accuracy (merged)") == f"{expected.mean_merged:.1%}"
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in app.get("plotly_chart")]
    assert "Sign conflicts between tasks, per layer" in titles


@pytest.mark.parametrize(
    "method, scale", [("tsv_m", "alpha"), ("iso_c", "alpha"), ("iso_cts", "alpha"), ("cart", "lam")]
)
def test_subspace_methods_on_the_merge_page(app, tiny_collection_dir, data_home, method, scale):
    _open(app, "views/merge.py")
    app.selectbox(key="method").set_value(method).run()
    app.slider(key=f"{method}.{scale}").set_value(1.2).run()
    app.toggle(key="show_sparsity").set_value(True).run()
    assert not app.exception and not app.error
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    expected = ws.compare(ws.task_names, method, {scale: 1.2})
    assert _metric(app, "mean accuracy (merged)") == f"{expected.mean_merged:.1%}"
    table = app.dataframe[0].value
    ranks = ws.merges.ranks(ws.task_names, method, {scale: 1.2})
    assert list(table["layer"]) == [r.layer for r in ranks] and list(table["rank kept"]) == [r.rank for r in ranks]
    symbol = {"alpha": "α", "lam": "λ"}[scale]
    next(b for b in app.button if b.label == f"{symbol} sweep").click().run()
    assert not app.exception
    charts = [json.loads(c.proto.spec) for c in app.get("plotly_chart")]
    mean = next(t for c in charts for t in c["data"] if t.get("name") == "mean")
    assert len(mean["x"]) == 21 and mean["x"][-1] == get_method(method).scale.high


def test_wudi_on_the_merge_page_runs_as_a_job_then_moves_alpha_at_once(app, tiny_collection_dir, data_home):
    import time

    _open(app, "views/merge.py")
    app.selectbox(key="method").set_value("wudi").run()
    assert not app.exception and any("background job" in i.value for i in app.info)
    assert not app.metric  # nothing merged before the user starts it
    next(b for b in app.button if b.key == "parts_start").click().run()
    deadline = time.monotonic() + 60
    while not app.metric and time.monotonic() < deadline:
        time.sleep(0.5)
        app.run()
    assert not app.exception and app.metric, "the WUDI job did not finish within 60 s"
    app.slider(key="wudi.alpha").set_value(0.4).run()
    assert not app.exception and not app.info  # the α move merged from the job's parts, no new job
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    expected = ws.compare(ws.task_names, "wudi", {"alpha": 0.4})
    assert _metric(app, "mean accuracy (merged)") == f"{expected.mean_merged:.1%}"


def test_landscape_page_shows_both_grids_and_links_the_best_point_to_merge(app, tiny_collection_dir, data_home):
    from engine.jobs.landscape import Landscape, exact_grid, preview_grid

    _open(app, "views/landscape.py")
    assert not app.exception and not app.error
    app.select_slider(key="landscape_step").set_value(0.25).run()
    assert not app.exception
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    pair, values = ws.task_names[:2], (0.0, 0.25, 0.5, 0.75, 1.0)
    expected = Landscape(
        pair,
        values,
        "interactive",
        exact_grid(ws, pair, values, split="interactive"),
        preview_grid(ws, pair, values, split="interactive"),
    )
    charts = {
        json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec) for c in app.get("plotly_chart")
    }
    exact = charts["exact evaluation (interactive)"]["data"][0]["z"]
    preview = charts["tangent-space preview (interactive)"]["data"][0]["z"]
    assert sum(exact, []) == pytest.approx(sum(map(list, expected.exact), []))
    assert sum(preview, []) == pytest.approx(sum(map(list, expected.preview), []))
    a, b, value = expected.best()
    link = f"tasks={pair[0]}&tasks={pair[1]}&per_task=true"
    assert any(link in m.value and f"{value:.1%}" in m.value for m in app.markdown)


def test_a_landscape_link_opens_merge_with_those_two_lambdas(app, tiny_collection_dir, data_home):
    from ui.links import two_task_merge_link

    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    pair = ws.task_names[:2]
    link = two_task_merge_link(pair, (0.25, 0.75))
    from urllib.parse import parse_qsl, urlsplit

    for key, value in parse_qsl(urlsplit(link).query):
        app.query_params.setdefault(key, [])
        app.query_params[key] = [*app.query_params[key], value] if key == "tasks" else value
    app.run()
    app.switch_page("views/merge.py").run()
    assert not app.exception
    assert app.multiselect(key="tasks").value == list(pair) and app.toggle(key="per_task").value
    assert app.slider(key=f"task_arithmetic.lam.{pair[0]}").value == 0.25
    assert app.slider(key=f"task_arithmetic.lam.{pair[1]}").value == 0.75
    expected = ws.compare(pair, "task_arithmetic", {"lam": [0.25, 0.75]})
    assert _metric(app, "mean accuracy (merged)") == f"{expected.mean_merged:.1%}"


def test_subspaces_page_shows_the_engine_statistics(app, tiny_collection_dir, data_home):
    _open(app, "views/subspaces.py")
    assert not app.exception
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    stats = ws.subspace_stats()
    layer = stats.layers[-1]
    app.selectbox(key="subspace_layer").set_value(layer).run()
    assert not app.exception
    charts = {
        json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec) for c in app.get("plotly_chart")
    }
    spectrum = charts[f"Singular values of each task matrix: {layer}"]
    assert [t["name"] for t in spectrum["data"]] == list(ws.task_names)
    assert spectrum["data"][0]["y"] == pytest.approx(stats.spectra[-1][0].tolist())
    overall = charts["Top-k alignment, mean over layers"]["data"][0]["z"]
    assert sum(overall, []) == pytest.approx(sum(stats.overall_alignment.tolist(), []))
    assert any("Spearman" in t for t in charts) or any("not computed yet" in i.value for i in app.info)
    pipeline = charts[f"Singular values of the merged update Δ = θ − θ₀: {layer}"]  # TA, then TA → SVC
    assert [t["name"] for t in pipeline["data"]] == ["Task arithmetic", "Task arithmetic → SVC"]
    from engine.merge.spectra import update_spectra

    merged = {
        "before": ws.merge(ws.task_names, "task_arithmetic", {}),
        "after": ws.merge(ws.task_names, "task_arithmetic", {}, calibrate=["svc"]),
    }
    expected = update_spectra(ws.matrix.theta0, merged, ws.matrix.spec, layer)
    floor = 1e-6 * max(float(v.max()) for v in expected.values())  # numerical zeros are not drawn
    assert pipeline["data"][0]["y"] == pytest.approx(expected["before"][expected["before"] > floor].tolist(), rel=1e-4)
    assert pipeline["data"][1]["y"] == pytest.approx(expected["after"][expected["after"] > floor].tolist(), rel=1e-4)


def test_an_empty_collection_box_means_the_demo_zoo(data_home):
    from engine.home import ASSETS_DIR
    from engine.pool.collection import load_collection

    data_home.mkdir(parents=True, exist_ok=True)
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["collection"] = "  "
    _open(at, "views/merge.py")
    assert not at.exception and not at.error
    assert at.multiselect(key="tasks").value == list(load_collection(ASSETS_DIR / "zoo").task_names)


def test_wudi_on_the_zoo_opens_at_its_chosen_steps_and_merges_from_the_shipped_parts(data_home):
    """WUDI's steps slider opens at the 1000 steps the zoo's comparison chose, whose parts ship in the zoo's warm
    folder: the page merges at once from an empty data home, no background job offered."""
    from engine.home import ASSETS_DIR

    data_home.mkdir(parents=True, exist_ok=True)
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["collection"] = str(ASSETS_DIR / "zoo")
    _open(at, "views/merge.py")
    at.selectbox(key="method").set_value("wudi").run()
    assert not at.exception and not at.error
    assert at.slider(key="wudi.steps").value == 1000
    assert not any("background job" in i.value for i in at.info) and at.metric
    assert not (data_home / "cache" / "merge_parts").exists()  # read from assets/zoo/warm, nothing computed


def test_zoo_page_labels_the_variant_curve_by_the_split_it_plots(data_home):
    """The curve is mean val accuracy (λ is chosen on val), the table test: title and caption say so."""
    from engine.home import ASSETS_DIR

    data_home.mkdir(parents=True, exist_ok=True)
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["collection"] = str(ASSETS_DIR / "zoo")
    _open(at, "views/zoo.py")
    assert not at.exception
    curve = next(
        json.loads(c.proto.spec)
        for c in at.get("plotly_chart")
        if "against λ" in json.loads(c.proto.spec)["layout"]["title"]["text"]
    )
    assert "val" in curve["layout"]["title"]["text"]
    assert any("The curve: mean accuracy on val" in c.value for c in at.caption)


def test_compare_page_on_the_zoo_shows_the_stored_table_with_merge_links(data_home):
    from engine.home import ASSETS_DIR

    data_home.mkdir(parents=True, exist_ok=True)
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["collection"] = str(ASSETS_DIR / "zoo")
    _open(at, "views/compare.py")
    assert not at.exception and not at.error
    stored = json.loads((ASSETS_DIR / "zoo" / "plane.json").read_text())["comparison"]["results"]  # report's + more
    table = at.dataframe[0].value
    best = max(stored, key=lambda r: r["test_mean_normalized"])
    assert table["test normalized"].iloc[0] == best["test_mean_normalized"]
    assert table["open"].iloc[0].startswith(f"merge?method={best['method'].split('+')[0]}&")
    assert any("top 1/K directions carry" in c.value for c in at.caption)


def test_compare_page_on_the_zoo_s_lora_adapters_shows_their_stored_table(data_home):
    """Every task on the zoo's `lora` variant: the Compare page reads lora.json (no job to start), and its links
    open the Merge page on the same adapters."""
    from engine.home import ASSETS_DIR

    data_home.mkdir(parents=True, exist_ok=True)
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["collection"] = str(ASSETS_DIR / "zoo")
    _open(at, "views/compare.py")
    at.selectbox(key="ckpt_all").set_value("lora").run()
    assert not at.exception and not at.error
    stored = json.loads((ASSETS_DIR / "zoo" / "lora.json").read_text())["methods"]["results"]
    table = at.dataframe[0].value
    assert sorted(table["method"]) == sorted(pipeline_display(r["method"]).split(" (")[0] for r in stored)
    best = max(stored, key=lambda r: r["test_mean_normalized"])
    assert table["test normalized"].iloc[0] == best["test_mean_normalized"]
    assert "ckpt=lora" in table["open"].iloc[0]
    assert any("add-lora" in c.value and "each adapter alone" in c.value for c in at.caption)
    assert not [b for b in at.button if b.label.startswith("Compare every method")]


@pytest.mark.slow
def test_the_pages_on_the_zoo_s_lora_adapters_kept_factored(data_home):
    """ "store": "factored" in config.json and every task on `lora`: the pages that read rows, layers or the whole
    task matrix (each task's own accuracy, SVC's layers, the tangent preview, a forgetting vector, the spectra)
    render from the adapters' factors, and the sidebar says so."""
    from engine.home import ASSETS_DIR

    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"store": "factored"}))
    for view in ("views/merge.py", "views/subspaces.py", "views/landscape.py", "views/forgetting.py", "views/zoo.py"):
        at = AppTest.from_file(APP, default_timeout=300)
        at.session_state["collection"] = str(ASSETS_DIR / "zoo")
        _open(at, view)
        at.selectbox(key="ckpt_all").set_value("lora").run()
        assert not at.exception and not at.error, view
        assert any("keeping LoRA adapters as their factors (as asked)" in c.value for c in at.sidebar.caption), view


def test_an_engine_error_no_page_caught_is_shown_and_the_app_stays_up(data_home, monkeypatch):
    """The Merge page's tangent preview on the zoo's adapters kept factored, on a machine with 1 KiB free: the
    preview needs the rows whole, the engine says what that needs, and app.py shows it where the page stopped."""
    from engine.home import ASSETS_DIR
    from engine.store.plan import MemoryFacts

    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"store": "factored"}))
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["collection"] = str(ASSETS_DIR / "zoo")
    _open(at, "views/merge.py")
    at.selectbox(key="ckpt_all").set_value("lora").run()
    monkeypatch.setattr(MemoryFacts, "read", classmethod(lambda cls: MemoryFacts(1024)))
    at.toggle(key="preview").set_value(True).run()
    assert not at.exception
    assert any("τJp: reads the task vectors as float32 in memory" in e.value for e in at.error)
    assert any("keeping LoRA adapters as their factors" in c.value for c in at.sidebar.caption)


def test_compare_page_runs_the_comparison_as_a_job_elsewhere(app, monkeypatch):
    import engine.jobs.compare as compare

    small = {"task_arithmetic": {"lam": (0.3, 0.6)}, "iso_c": {"alpha": (1.0, 1.5)}}
    monkeypatch.setattr(compare, "DEFAULT_GRIDS", small)  # two methods, two points each: a quick job
    _open(app, "views/compare.py")
    next(b for b in app.button if b.label == "Compare every method as a background job").click().run()
    _run_until(app, lambda at: bool(at.dataframe) or bool(at.error))
    assert not app.exception and not app.error
    table = app.dataframe[0].value
    assert sorted(table["method"]) == ["Iso-C", "Task arithmetic"]  # short names: the chart carries the long ones
    assert list(table)[:2] == ["method", "test normalized"]  # what decides, before the settings


def test_forgetting_page_shows_the_engine_numbers(app, tiny_collection_dir, data_home):
    from engine.eval.evaluate import evaluate
    from engine.merge.forgetting import negate

    _open(app, "views/forgetting.py")
    app.slider(key="forget_alpha").set_value(1.5).run()
    assert not app.exception
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    expected = evaluate(negate(ws, "colour", 1.5), ws.suite, "interactive").accuracy["colour"]
    assert _metric(app, "target: colour (interactive split)") == f"{expected:.1%}"
    chart = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert len(chart["data"][0]["x"]) == 41


def test_sta_controls_on_the_merge_page(app, tiny_collection_dir, data_home):
    _open(app, "views/merge.py")
    app.selectbox(key="method").set_value("sta").run()
    if any("not cached yet" in i.value for i in app.info):  # the workspace is process-wide: maybe computed already
        assert len(app.metric) == 0  # the page stopped before merging
        app.button(key="importance_tau_now").click().run()
    app.slider(key="sta.threshold").set_value(0.2).run()
    app.toggle(key="show_sparsity").set_value(True).run()
    assert not app.exception
    assert any("Provisional definition" in c.value for c in app.caption)
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    expected = ws.compare(ws.task_names, "sta", {"threshold": 0.2, "lam": 1.0})
    assert _metric(app, "mean accuracy (merged)") == f"{expected.mean_merged:.1%}"
    kept = app.dataframe[0].value["kept fraction"].tolist()
    report = ws.merges.sparsity(ws.task_names, "sta", {"threshold": 0.2})
    assert kept == [report.kept_fraction[t] for t in ws.task_names] and max(kept) < 1.0


def test_forgetting_page_with_sta(app, tiny_collection_dir, data_home):
    from engine.eval.evaluate import evaluate
    from engine.merge.forgetting import negate

    _open(app, "views/forgetting.py")
    app.selectbox(key="forget_method").set_value("sta").run()
    if any("not cached yet" in i.value for i in app.info):
        app.button(key="importance_grad0_now").click().run()
    app.slider(key="forget_threshold").set_value(0.02).run()
    app.slider(key="forget_margin").set_value(1.0).run()
    app.slider(key="forget_alpha").set_value(2.0).run()
    assert not app.exception
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    theta = negate(ws, "colour", 2.0, method="sta", threshold=0.02, margin=1.0)
    expected = evaluate(theta, ws.suite, "interactive").accuracy["colour"]
    assert _metric(app, "target: colour (interactive split)") == f"{expected:.1%}"
    chart = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert "(m ⊙ τ)" in chart["layout"]["title"]["text"]
    next(b for b in app.button if b.label == "Compare methods").click().run()  # no stored report here
    assert not app.exception
    table = app.dataframe[0].value
    assert len(table) == 3 and table["chosen α"].notna().all()


def test_sta_view_shows_the_engine_summary(app, tiny_collection_dir, data_home):
    from engine.sta.stats import importance_summary

    _open(app, "views/sta.py")
    if any("not cached yet" in i.value for i in app.info):  # the workspace is process-wide: maybe computed already
        app.button(key="importance_tau_now").click().run()
    app.slider(key="sta_threshold").set_value(0.3).run()
    assert not app.exception
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    summary = importance_summary(ws.importance.codes("tau"), ws.matrix.spec, tasks=ws.task_names, threshold=0.3)
    assert app.dataframe[0].value["kept at κ"].tolist() == pytest.approx(summary.kept_fraction.tolist())
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in app.get("plotly_chart")]
    assert titles == [
        "Importance per entry, normalised per tensor",
        "Mask overlap between tasks at κ = 0.3 (Jaccard)",
        "Share of each layer kept at κ = 0.3",
    ]


def test_importance_maps_as_a_background_job(app, tiny_collection_dir, data_home):
    import time

    from engine.runs.log import RunLog

    _open(app, "views/sta.py")
    app.selectbox(key="sta_kind").set_value("theta").run()  # no other view test computes this kind
    app.button(key="importance_theta_job").click().run()
    assert not app.exception and any("Started job #" in s.value for s in app.success)
    deadline = time.monotonic() + 120
    while not app.get("plotly_chart") and time.monotonic() < deadline:  # the job caches the maps
        time.sleep(0.5)
        app.run()
    assert len(app.get("plotly_chart")) == 3
    runs = RunLog(data_home / "runs" / "runs.sqlite3").runs()
    assert any(r.kind == "importance" and r.method == "sta:theta" for r in runs)


def test_forgetting_page_on_the_zoo_shows_the_stored_comparison(data_home):
    from engine.home import ASSETS_DIR

    data_home.mkdir(parents=True, exist_ok=True)
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["collection"] = str(ASSETS_DIR / "zoo")
    at.session_state["forget_target"] = "digits"
    _open(at, "views/forgetting.py")
    assert not at.exception
    stored = json.loads((ASSETS_DIR / "zoo" / "forgetting.json").read_text())["targets"]["digits"]
    table = at.dataframe[0].value
    assert table["chosen α"].tolist() == [f"{stored[m]['outcome']['alpha']:.2f}" for m in stored]
    assert table["forgotten"].tolist() == [stored[m]["succeeded"] for m in stored]


def test_interference_page_shows_the_engine_matrix_and_pairs(app, tiny_collection_dir, data_home):
    _open(app, "views/interference.py")
    if any("not cached yet" in i.value for i in app.info):  # the workspace is process-wide: maybe computed already
        app.button(key="taujp_now").click().run()
    app.slider(key="interference_lam").set_value(0.5).run()
    app.selectbox(key="interference_vector").set_value("texture").run()
    app.selectbox(key="interference_task").set_value("brightness").run()
    assert not app.exception
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    matrix = ws.taujp.matrix()
    charts = {
        json.loads(c.proto.spec)["layout"]["title"]["text"].split(":")[0]: json.loads(c.proto.spec)
        for c in app.get("plotly_chart")
    }
    heat = charts["τJp"]["data"][0]["z"]
    assert heat[0][0] is None and heat[0][1] == pytest.approx(matrix.values[0, 1].item(), rel=1e-5)
    drops = ws.taujp.tangent_pair_drops(0.5)  # the default: first order, from the stored products
    scatter = charts["Interference"]["data"][0]
    assert len(scatter["x"]) == 6 and sorted(scatter["y"]) == pytest.approx(sorted(drops.values()))
    layers = charts["τ_texture on brightness inputs, per layer"]["data"][0]
    parts = ws.taujp.layers("texture", "brightness")
    assert layers["x"] == pytest.approx([parts[n] for n in layers["y"]], rel=1e-5) and set(layers["y"]) == set(parts)
    from engine.params import network_order

    assert layers["y"] == [list(parts)[i] for i in network_order(list(parts))]  # conv1 … blocks … proj, from the top


def test_merge_preview_toggle_shows_preview_and_exact(app, tiny_collection_dir, data_home):
    _open(app, "views/merge.py")
    app.toggle(key="preview").set_value(True).run()
    app.slider(key="task_arithmetic.lam").set_value(0.6).run()
    assert not app.exception
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    expected = ws.taujp.preview(ws.task_names, {"lam": 0.6})
    chart = json.loads(app.get("plotly_chart")[0].proto.spec)
    series = {t["name"]: t["y"] for t in chart["data"]}
    assert series["tangent preview"] == pytest.approx([expected[t] for t in ws.task_names])
    assert series["merged"] == [
        ws.compare(ws.task_names, "task_arithmetic", {"lam": 0.6}).merged.accuracy[t] for t in ws.task_names
    ]
    assert any("Tangent preview vs exact" in c.value for c in app.caption)


def _run_until(at: AppTest, done, *, timeout: float = 120.0) -> None:
    """Rerun the app until `done(at)` (a background job finishing), or fail after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not done(at):
        assert time.monotonic() < deadline, "the fine-tune job did not finish in time"
        time.sleep(0.5)
        at.run()


def test_a_tiny_finetune_from_the_page_appears_in_every_checkpoint_list(app, tiny_collection_dir, data_home):
    _open(app, "views/finetune.py")
    app.selectbox(key="ft_task").set_value("texture")
    app.selectbox(key="ft_mode").set_value("tau_jp")
    app.number_input(key="ft_steps").set_value(4)
    app.number_input(key="ft_batch").set_value(8).run()
    next(b for b in app.button if b.label == "Fine-tune as a background job").click().run()
    assert not app.exception and not app.error
    _run_until(app, lambda at: bool(at.success) or bool(at.error))
    assert not app.error, app.error[0].value
    assert "Saved `tau_jp-b0.1-s4-" in app.success[0].value
    chart = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert [t["name"] for t in chart["data"]][:2] == ["cross-entropy", "τJp penalty R (× β = 0.1 in the loss)"]
    assert len(chart["data"][0]["y"]) == 4
    saved = list((data_home / "checkpoints" / "finetuned").rglob("*.safetensors"))
    assert len(saved) == 1 and saved[0].parent.name == "texture"
    assert not list(tiny_collection_dir.rglob("tau_jp*")), "never written into the collection"
    app.switch_page("views/merge.py").run()
    options = app.selectbox(key="ckpt.texture").options
    assert saved[0].stem in options
    app.selectbox(key="ckpt.texture").set_value(saved[0].stem).run()
    assert any("are linearized checkpoints" in e.value for e in app.error), "mixing kinds is refused clearly"
    app.selectbox(key="ckpt.texture").set_value("standard").run()
    assert not app.error and not app.exception


@pytest.mark.parametrize(
    "mode, key, value, subject",
    [("tau_jp", "ft_beta", -0.5, "beta"), ("tau_jp", "ft_steps", 0, "steps"), ("lora", "ft_rank", 0, "lora_rank")],
)
def test_bad_finetune_settings_show_a_clear_error(app, mode, key, value, subject):
    _open(app, "views/finetune.py")
    app.selectbox(key="ft_mode").set_value(mode).run()
    app.number_input(key=key).set_value(value).run()
    next(b for b in app.button if b.label == "Fine-tune as a background job").click().run()
    assert not app.exception
    assert any(e.value.startswith(f"{subject}: invalid fine-tuning setting") for e in app.error)
    assert "ft_job" not in app.session_state


def test_a_lora_finetune_from_the_page_is_an_adapter_every_list_offers(app, tiny_collection_dir, data_home):
    """Mode LoRA with rank 2 on q and v: the job saves a PEFT adapter folder in the data home; the list below says
    its rank, and the Merge page merges it beside the shipped full checkpoints."""
    _open(app, "views/finetune.py")
    app.selectbox(key="ft_task").set_value("texture")
    app.selectbox(key="ft_mode").set_value("lora").run()
    assert not app.number_input(key="ft_rank").disabled and app.number_input(key="ft_beta").disabled
    app.number_input(key="ft_rank").set_value(2)
    app.multiselect(key="ft_targets").set_value(["q", "v"])
    app.number_input(key="ft_steps").set_value(4)
    app.number_input(key="ft_batch").set_value(8).run()
    next(b for b in app.button if b.label == "Fine-tune as a background job").click().run()
    assert not app.exception and not app.error
    _run_until(app, lambda at: bool(at.success) or bool(at.error))
    assert not app.error, app.error[0].value
    assert "Saved `lora-r2-s4-" in app.success[0].value
    (config,) = (data_home / "checkpoints" / "finetuned").rglob("adapter_config.json")
    name = config.parent.name
    assert json.loads(config.read_text())["target_modules"] == [f"encoder.layers.0.self_attn.{p}_proj" for p in "qv"]
    row = app.dataframe[-1].value.iloc[0]
    assert row["checkpoint"] == name and row["mode"] == "LoRA (low rank)" and row["rank"] == 2
    app.switch_page("views/merge.py").run()
    assert name in app.selectbox(key="ckpt.texture").options
    app.selectbox(key="ckpt.texture").set_value(name).run()
    assert not app.error and not app.exception, "a LoRA fine-tune merges with the full ones"


def test_the_penalty_without_other_tasks_is_refused(app, tiny_collection_dir, data_home, tmp_path):
    import shutil

    root = tmp_path / "one-task"
    shutil.copytree(tiny_collection_dir, root)
    manifest = json.loads((root / "collection.json").read_text())
    manifest["tasks"] = {"colour": manifest["tasks"]["colour"]}
    (root / "collection.json").write_text(json.dumps(manifest))
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tmp_path)]}))
    app.session_state["collection"] = str(root)
    _open(app, "views/finetune.py")
    next(b for b in app.button if b.label == "Fine-tune as a background job").click().run()
    assert any("other tasks' inputs" in e.value for e in app.error)


def test_a_tiny_atlas_and_dvbasi_run_from_the_page(app, data_home, monkeypatch):
    from engine.runs.log import RunLog

    _open(app, "views/learned.py")
    assert not app.exception
    app.number_input(key="dv_iterations").set_value(1)
    app.number_input(key="dv_epochs").set_value(2)
    app.number_input(key="dv_patience").set_value(2).run()
    next(b for b in app.button if b.label == "Learn as a background job").click().run()
    assert not app.exception and not app.error
    _run_until(app, lambda at: bool(at.success) or bool(at.error))
    assert not app.error, app.error[0].value
    assert "test mean accuracy" in app.success[0].value
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in app.get("plotly_chart")]
    assert "Learning the coefficients" in titles and any(t.startswith("DV-BASI iterations") for t in titles)
    (run,) = RunLog(data_home / "runs" / "runs.sqlite3").runs(kind="learned")
    assert run.status == "done" and len(run.outputs["curves"]["iterations"]) == 1
    assert run.outputs["start"]["point"] == "aTLAS"
    table = app.dataframe[-1].value
    assert list(table.columns) == ["task", "start: aTLAS", "learned", "task arithmetic (λ = 0.3)", "fine-tuned"]
    assert list(table["learned"]) == [run.outputs["accuracy"][t] for t in table["task"]]
    import engine.workspace

    evaluations = []
    original = engine.workspace.evaluate
    monkeypatch.setattr(engine.workspace, "evaluate", lambda *a, **k: evaluations.append(a[2]) or original(*a, **k))
    app.run()
    app.run()
    assert evaluations == []  # a finished run renders once; reruns read its test comparison from the cache
    app.multiselect(key="dv_overlay").set_value([run.id]).run()
    assert not app.exception


def test_learned_page_on_the_zoo_shows_the_stored_table_and_how_it_was_learned(data_home):
    from engine.home import ASSETS_DIR

    data_home.mkdir(parents=True, exist_ok=True)
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["collection"] = str(ASSETS_DIR / "zoo")
    _open(at, "views/learned.py")
    assert not at.exception
    learned = json.loads((ASSETS_DIR / "zoo" / "report.json").read_text())["learned"]
    table = at.dataframe[-1].value
    assert (
        table.loc[table["method"] == "aTLAS + DV-BASI", "supervised"].item()
        == learned["supervised"]["dv_basi"]["test_mean"]
    )
    assert any(
        "aTLAS: up to 120 epochs, patience 20; DV-BASI: 4 iterations of up to 40 epochs" in c.value for c in at.caption
    )


@pytest.mark.parametrize("key, value, subject", [("dv_iterations", 0, "iterations"), ("dv_patience", 0, "patience")])
def test_bad_learning_settings_show_a_clear_error(app, key, value, subject):
    _open(app, "views/learned.py")
    app.number_input(key=key).set_value(value).run()
    next(b for b in app.button if b.label == "Learn as a background job").click().run()
    assert not app.exception
    assert any(e.value.startswith(f"{subject}: invalid setting") for e in app.error)
    assert "dv_job" not in app.session_state


def test_home_starts_with_the_tour_and_links_every_page(app):
    from ui.pages import PAGES

    app.run()  # Home is the default page
    assert not app.exception
    linked = [link.proto.page for link in app.get("page_link")]
    assert linked[0] == "tour"
    assert set(linked) == {v.url_path for v in PAGES if v.url_path}  # every page but Home itself
