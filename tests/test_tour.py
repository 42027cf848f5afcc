"""The Tour: six steps on the demo zoo, Previous/Next and ?step=N, live controls, presenter mode."""

import json
from pathlib import Path

import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from engine.home import ASSETS_DIR
from ui import figures

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
ZOO = ASSETS_DIR / "zoo"
TITLES = (
    "Task vectors and their similarity",
    "Addition and the role of λ",
    "Interference and TIES's sign conflicts",
    "τJp and its regulariser",
    "Forgetting by negation",
    "Learned coefficients and DV-BASI",
)


@pytest.fixture()
def tour(data_home):
    """The app on the demo zoo (the default collection: steps 4–6 read its stored results)."""
    data_home.mkdir(parents=True, exist_ok=True)
    return AppTest.from_file(APP, default_timeout=180)


def _open(at: AppTest) -> AppTest:
    at.run()
    at.switch_page("views/tour.py").run()
    assert not at.exception
    return at


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _shows_step(at: AppTest, n: int) -> None:
    assert not at.exception and not at.error
    assert at.session_state["tour_step"] == n
    assert any(TITLES[n - 1] in h.value and f"step {n} of 6" in h.value for h in at.header)
    assert _charts(at), f"step {n} has no chart"
    assert at.latex, f"step {n} has no formula"
    assert any("](" in m.value and "→" in m.value for m in at.markdown), f"step {n} has no link"
    assert at.query_params["step"] in (str(n), [str(n)])


def _button(at: AppTest, key: str):
    return next(b for b in at.button if b.key == key)


def test_walk_every_step_with_next_and_back_with_previous(tour):
    at = _open(tour)
    _shows_step(at, 1)
    for n in range(2, 7):
        _button(at, "tour_next").click().run()
        _shows_step(at, n)
    assert _button(at, "tour_next").disabled
    for n in range(5, 0, -1):
        _button(at, "tour_previous").click().run()
        _shows_step(at, n)
    assert _button(at, "tour_previous").disabled


def test_a_url_opens_a_step(tour):
    tour.query_params["step"] = "3"
    at = _open(tour)
    _shows_step(at, 3)
    assert any("TIES" in m.value for m in at.markdown)
    assert "ties" in next(m.value for m in at.markdown if "](merge?" in m.value)


def test_a_bad_step_in_the_url_opens_step_one(tour):
    tour.query_params["step"] = "9"
    _shows_step(_open(tour), 1)


def test_the_lambda_slider_shows_what_the_engine_computes(tour, data_home):
    from engine.workspace import Workspace

    tour.query_params["step"] = "2"
    at = _open(tour)
    at.slider(key="tour_lam").set_value(0.6).run()
    assert not at.exception
    ws = Workspace.open(ZOO, cache_dir=data_home / "cache")
    expected = ws.compare(list(ws.task_names), "task_arithmetic", {"lam": 0.6}, split="interactive")
    chart = _charts(at)[0]
    merged = next(t for t in chart["data"] if t["name"] == "merged")
    assert merged["y"] == pytest.approx([expected.merged.accuracy[t] for t in ws.task_names])
    assert f"{expected.mean_merged:.1%}" in chart["layout"]["title"]["text"]
    assert any("method=task_arithmetic&lam=0.6" in m.value for m in at.markdown)


def test_the_presenter_toggle_enlarges_the_figures(tour):
    at = _open(tour)
    assert _charts(at)[0]["layout"].get("font", {}).get("size") != figures.PROJECTOR_FONT
    at.toggle(key="tour_presenter").set_value(True).run()
    assert not at.exception
    layout = _charts(at)[0]["layout"]
    assert layout["font"]["size"] == figures.PROJECTOR_FONT
    assert layout["height"] == figures.PROJECTOR_HEIGHT
    assert any("<style>" in m.value for m in at.markdown)


def test_for_projector_raises_fonts_and_height():
    fig = figures.for_projector(go.Figure(go.Bar(x=["a"], y=[1])).update_layout(title="t"), font_size=30, height=700)
    assert fig.layout.font.size == 30 and fig.layout.title.font.size == 34 and fig.layout.height == 700


def test_stored_forgetting_curve_and_learned_bars_read_the_zoo():
    stored = json.loads((ZOO / "forgetting.json").read_text())["targets"]["digits"]["sta"]
    curve = figures.stored_forgetting_curve(stored["curve"])
    assert curve.chosen_alpha == stored["outcome"]["alpha"] and curve.method == "sta"
    learned = json.loads((ZOO / "report.json").read_text())["learned"]
    rows = figures.learned_table(learned)
    fig = figures.learned_bars(rows, objective="unsupervised")
    assert list(fig.data[0].x) == [r["unsupervised"] for r in rows]
    assert list(fig.data[0].y) == [r["method"] for r in rows]


def test_a_step_keeps_its_control_when_the_tour_comes_back(tour):
    tour.query_params["step"] = "2"
    at = _open(tour)
    at.slider(key="tour_lam").set_value(0.6).run()
    _button(at, "tour_next").click().run()
    _button(at, "tour_previous").click().run()
    _shows_step(at, 2)
    assert at.slider(key="tour_lam").value == 0.6


@pytest.mark.parametrize("step", range(1, 7))
def test_every_step_renders_on_a_collection_without_stored_results(tiny_collection_dir, data_home, step):
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tiny_collection_dir)]}))
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["collection"] = str(tiny_collection_dir)
    at.query_params["step"] = str(step)
    at = _open(at)
    assert not at.error and at.latex
    assert at.get("plotly_chart") or any("stores no" in i.value for i in at.info)


def test_presenter_mode_is_in_the_link_and_survives_a_reload(tour):
    at = _open(tour)
    assert "presenter" not in at.query_params
    at.toggle(key="tour_presenter").set_value(True).run()
    assert at.query_params["presenter"] in ("true", ["true"])
    assert any("&presenter=true" in c.value for c in at.caption)
    reloaded = AppTest.from_file(APP, default_timeout=180)  # a new session opening the copied link
    reloaded.query_params.update(step="2", presenter="true")
    reloaded.run()
    reloaded.switch_page("views/tour.py").run()
    assert not reloaded.exception and reloaded.toggle(key="tour_presenter").value is True
    assert _charts(reloaded)[0]["layout"]["font"]["size"] == figures.PROJECTOR_FONT


def test_the_arrow_keys_move_the_tour(tour):
    at = _open(tour)
    shortcuts = {b.key: b.proto.shortcut for b in at.button if b.key in ("tour_previous", "tour_next")}
    assert shortcuts == {"tour_previous": "left", "tour_next": "right"}
