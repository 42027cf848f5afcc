"""Links that reproduce and state that holds, on the Merge page and the sidebar (ui/links.py, ui/state.py).

The URL names values as the engine does, leaves defaults out, names what it could not apply, and the widgets,
the URL and the numbers agree after every error. The browser tests (tests/e2e/test_links.py) walk the same
items as a user's steps.
"""

import json

import pytest
from streamlit.testing.v1 import AppTest

from engine.home import ASSETS_DIR
from engine.pool.collection import load_collection
from engine.workspace import Workspace
from tests.test_views import APP, _metric, _open

ZOO = str(ASSETS_DIR / "zoo")


@pytest.fixture()
def app(tiny_collection_dir, data_home):
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tiny_collection_dir)]}))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["collection"] = str(tiny_collection_dir)
    return at


def _apply_recipe(at: AppTest, text: str) -> None:
    at.text_area(key="_recipe_text").input(text).run()
    next(b for b in at.button if b.label == "Apply recipe").click().run()


def _warnings(at: AppTest) -> str:
    return " | ".join(w.value for w in at.warning)


def test_the_url_uses_engine_names_and_leaves_defaults_out(app, tiny_collection_dir, data_home):
    app.query_params.update(method="ties", density="0.5")
    _open(app, "views/merge.py")
    assert not app.exception and not app.warning
    assert app.selectbox(key="method").value == "ties"
    assert app.slider(key="ties.density").value == pytest.approx(0.5)
    assert {k: v for k, v in app.query_params.items() if k != "collection"} == {"method": "ties", "density": "0.5"}
    app.slider(key="ties.density").set_value(0.2).run()  # back to its default: out of the URL
    assert "density" not in app.query_params and app.query_params["method"] == "ties"
    app.selectbox(key="method").set_value("task_arithmetic").run()
    assert set(app.query_params) == {"collection"}
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    expected = ws.compare(ws.task_names, "task_arithmetic", {"lam": 0.3})
    assert _metric(app, "mean accuracy (merged)") == f"{expected.mean_merged:.1%}"


def test_links_in_the_old_method_qualified_form_still_open(app):
    app.query_params.update({"task_arithmetic.lam": "0.55", "tasks": ["colour", "brightness"]})
    _open(app, "views/merge.py")
    assert app.slider(key="task_arithmetic.lam").value == pytest.approx(0.55)
    assert app.query_params["lam"] == "0.55" and "task_arithmetic.lam" not in app.query_params
    assert app.query_params["tasks"] == ["colour", "brightness"]


@pytest.mark.parametrize(
    ("query", "bad", "named"),
    [
        ({"method": "nope"}, "method", "`method=nope` is not one of task_arithmetic"),
        ({"method": "ties", "density": "7"}, "density", "`density=7` is outside its range 0.01 to 1: kept density=0.2"),
        ({"lam": "abc"}, "lam", "`lam=abc` is not a number"),
        ({"tasks": ["colour", "sky"]}, "tasks", "`tasks=sky` is not one of"),
        ({"drop": "0.5"}, "drop", "Ignored `drop=0.5` from the link: not a setting of Task arithmetic"),
    ],
)
def test_unknown_or_out_of_range_values_give_a_notice_naming_them(app, query, bad, named):
    app.query_params.update(query)
    _open(app, "views/merge.py")
    assert not app.exception and not app.error
    assert named in _warnings(app)
    assert app.query_params.get(bad) != query[bad]  # nothing invalid stays in the URL
    app.slider(key=f"{app.selectbox(key='method').value}.lam").set_value(0.4).run()
    assert not app.warning  # the notice goes once the user moves on


def test_a_link_holds_each_tasks_checkpoint_variant(data_home):
    """On the demo zoo: `ckpt=tau_jp` opens every task's τJp checkpoint, and the page shows their numbers."""
    data_home.mkdir(parents=True, exist_ok=True)
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params.update(ckpt="tau_jp", lam="1")
    _open(at, "views/merge.py")
    assert not at.exception and not at.error
    ws = Workspace.open(ZOO, cache_dir=data_home / "cache", variant="tau_jp")
    assert all(at.selectbox(key=f"ckpt.{t}").value == "tau_jp" for t in ws.task_names)
    expected = ws.compare(ws.task_names, "task_arithmetic", {"lam": 1.0})
    assert _metric(at, "mean accuracy (merged)") == f"{expected.mean_merged:.1%}"
    assert at.query_params == {"ckpt": "tau_jp", "lam": "1"}
    at.selectbox(key="ckpt.digits").set_value("linearized").run()  # one task differs: per-task names
    assert at.query_params["ckpt.digits"] == "linearized" and at.query_params["ckpt.faces"] == "tau_jp"
    assert "ckpt" not in at.query_params


def test_mixing_linearized_and_standard_is_explained_before_it_is_refused(data_home):
    data_home.mkdir(parents=True, exist_ok=True)
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["ckpt.digits"] = "tau_jp"
    _open(at, "views/merge.py")
    assert not at.exception
    assert "digits (tau_jp) is a linearized checkpoint" in _warnings(at)
    assert "pick a linearized variant (linearized, tau_jp) for every task" in _warnings(at)


def test_a_bad_collection_then_a_good_one_leaves_widgets_and_numbers_agreeing(app, tiny_collection_dir, data_home):
    _open(app, "views/merge.py")
    app.slider(key="task_arithmetic.lam").set_value(0.8).run()
    app.sidebar.text_input(key="collection").input(str(tiny_collection_dir / "nope")).run()
    assert app.error and not app.exception
    app.sidebar.text_input(key="collection").input(str(tiny_collection_dir)).run()
    assert not app.exception and not app.error
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")
    assert app.multiselect(key="tasks").value == list(ws.task_names)
    lam = app.slider(key="task_arithmetic.lam").value
    expected = ws.compare(ws.task_names, "task_arithmetic", {"lam": lam})
    assert _metric(app, "mean accuracy (merged)") == f"{expected.mean_merged:.1%}"
    chart = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert next(t for t in chart["data"] if t["name"] == "merged")["x"] == list(ws.task_names)


def test_a_recipe_out_of_range_shows_the_command_lines_message_and_changes_nothing(app):
    from engine.errors import MergelabError
    from engine.runs.recipes import parse_recipe

    _open(app, "views/merge.py")
    before = dict(app.query_params)
    _apply_recipe(app, "method: ties\nparams: {density: 7}\n")
    assert not app.exception
    with pytest.raises(MergelabError) as cli:
        parse_recipe("method: ties\nparams: {density: 7}\n", source="pasted recipe", defaults={"collection": "x"})
    assert [e.value for e in app.error] == [str(cli.value)]
    assert app.selectbox(key="method").value == "task_arithmetic" and dict(app.query_params) == before
    app.switch_page("views/zoo.py").run()  # the error does not follow the user around
    assert not app.exception and not app.error


def test_a_recipe_applies_its_collection_checkpoints_tasks_and_parameters(tiny_collection_dir, data_home):
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tiny_collection_dir)]}))
    at = AppTest.from_file(APP, default_timeout=180)
    _open(at, "views/merge.py")  # on the demo zoo
    _apply_recipe(
        at, f"collection: {ZOO}\nvariant: tau_jp\ntasks: [digits, faces]\nmethod: ties\nparams: {{lam: 1.4}}\n"
    )
    assert not at.exception and not at.error
    assert at.selectbox(key="method").value == "ties" and at.multiselect(key="tasks").value == ["digits", "faces"]
    assert at.selectbox(key="ckpt.digits").value == "tau_jp" and at.slider(key="ties.lam").value == pytest.approx(1.4)
    ws = Workspace.open(ZOO, cache_dir=data_home / "cache", variant="tau_jp")
    expected = ws.compare(["digits", "faces"], "ties", {"lam": 1.4})
    assert _metric(at, "mean accuracy (merged)") == f"{expected.mean_merged:.1%}"
    _apply_recipe(at, f"collection: {tiny_collection_dir}\nmethod: dare\n")  # another collection
    assert not at.exception and not at.error
    assert at.sidebar.text_input(key="collection").value == str(tiny_collection_dir)
    assert at.multiselect(key="tasks").value == list(load_collection(tiny_collection_dir).task_names)
    _apply_recipe(at, "tasks: [colour, nope]\n")
    assert any("'nope'" in e.value and "is not a task of" in e.value for e in at.error)


def test_results_asked_for_stay_until_their_inputs_change(app, tiny_collection_dir, data_home):
    from engine.merge import get_method

    _open(app, "views/merge.py")
    next(b for b in app.button if b.label == "λ sweep").click().run()
    chart = json.loads(app.get("plotly_chart")[-1].proto.spec)
    assert max(chart["data"][0]["x"]) == get_method("task_arithmetic").scale.high  # the declared range
    next(b for b in app.button if b.label == "Evaluate on test").click().run()
    assert any("Test: mean accuracy" in m.value for m in app.markdown)
    app.toggle(key="show_sparsity").set_value(True).run()  # another result: both stay
    assert any("Test: mean accuracy" in m.value for m in app.markdown)
    app.slider(key="task_arithmetic.lam").set_value(0.5).run()  # the sweep's own scale: the sweep stays
    assert "Accuracy over lam" in _chart_titles(app)
    assert not any("Test: mean accuracy" in m.value for m in app.markdown)  # its input changed
    app.multiselect(key="tasks").set_value(["colour", "texture"]).run()
    assert "Accuracy over lam" not in _chart_titles(app)  # the sweep's tasks changed


def _chart_titles(at: AppTest) -> str:
    return " | ".join(
        json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "") for c in at.get("plotly_chart")
    )


def test_link_values_read_back_what_they_write_and_refuse_the_rest():
    from ui import links

    lam = links.number("lam", "k", low=-1.5, high=1.5, default=0.3)
    assert lam.write(0.1 + 0.2) == ["0.3"] and lam.read(lam.write(-1.25)) == -1.25
    for bad, why in (("2", "outside its range -1.5 to 1.5"), ("nan", "outside"), ("x", "not a number")):
        with pytest.raises(links.LinkValueError, match=why):
            lam.read([bad])
    tasks = links.subset("tasks", "tasks", ["a", "b", "c"])
    assert tasks.read(["c", "a", "c"]) == ["c", "a"] and tasks.default == ["a", "b", "c"]
    with pytest.raises(links.LinkValueError, match="`tasks=z` is not one of a, b, c"):
        tasks.read(["a", "z"])
    on = links.flag("per_task", "per_task")
    assert on.read(["true"]) is True and on.read(["0"]) is False and on.write(True) == ["true"]
    with pytest.raises(links.LinkValueError, match="not true or false"):
        on.read(["yes please"])
    method = links.choice("method", "method", ["ties", "dare"], "ties")
    assert method.read(["dare"]) == "dare"
    with pytest.raises(links.LinkValueError, match="`method=TIES` is not one of ties, dare"):
        method.read(["TIES"])


def test_forgetting_and_interference_links_use_engine_names(data_home):
    """On the demo zoo: a Forgetting link names the method as the engine does (`method=sta`, not its label),
    and the Interference page's pair and λ round-trip."""
    data_home.mkdir(parents=True, exist_ok=True)
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params.update(target="faces", method="task_arithmetic", alpha="0.5")
    _open(at, "views/forgetting.py")
    assert not at.exception and not at.error
    assert at.selectbox(key="forget_target").value == "faces" and at.slider(key="forget_alpha").value == 0.5
    assert at.query_params["target"] == "faces" and at.query_params["alpha"] == "0.5"
    at.selectbox(key="forget_method").set_value("sta").run()
    assert at.query_params["method"] == "sta"


def test_a_pages_settings_are_still_there_after_visiting_another_page(app):
    _open(app, "views/merge.py")
    app.selectbox(key="method").set_value("ties").run()
    app.slider(key="ties.lam").set_value(0.5).run()
    app.query_params.clear()  # as a click in the navigation leaves it
    app.switch_page("views/zoo.py").run()
    app.switch_page("views/merge.py").run()
    assert not app.exception
    assert app.selectbox(key="method").value == "ties" and app.slider(key="ties.lam").value == 0.5
    assert app.query_params["method"] == "ties" and app.query_params["lam"] == "0.5"


@pytest.mark.parametrize("then", ["iso_c", "dare"])
def test_switching_methods_by_hand_after_a_link_gives_no_notice(app, then):
    app.query_params.update(method="ties", density="0.21")
    _open(app, "views/merge.py")
    assert not app.exception and not app.warning
    app.selectbox(key="method").set_value(then).run()  # the URL still holds density=0.21 on this rerun
    assert not app.exception
    assert not app.warning, _warnings(app)
    assert "density" not in app.query_params
    app.run()
    assert not app.warning, _warnings(app)
