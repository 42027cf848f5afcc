"""Labels a lecture can trust: what the Zoo and Forgetting pages say matches what they plot."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.home import ASSETS_DIR
from ui import formats

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
ZOO = ASSETS_DIR / "zoo"


@pytest.fixture()
def zoo_app(data_home):
    data_home.mkdir(parents=True, exist_ok=True)
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["collection"] = str(ZOO)
    return at


def _open(at: AppTest, view: str) -> None:
    at.run()
    at.switch_page(view).run()
    assert not at.exception


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _chosen_alpha_annotation(chart: dict) -> str:
    return next(a["text"] for a in chart["layout"]["annotations"] if a["text"].startswith("chosen α"))


def test_zoo_page_curve_and_table_name_their_splits_and_the_checkpoint_table_reads_cleanly(zoo_app, data_home):
    from engine.workspace import Workspace

    _open(zoo_app, "views/zoo.py")
    first = _charts(zoo_app)[0]  # drawn from the stored report, before the workspace opens
    assert "mean accuracy on val" in first["layout"]["title"]["text"]
    assert first["layout"]["yaxis"]["title"]["text"] == "mean accuracy (val)"
    caption = next(c.value for c in zoo_app.caption if c.value.startswith("The curve:"))
    assert "The curve: mean accuracy on val" in caption and "The table: mean accuracy on test" in caption

    table = next(d.value for d in zoo_app.dataframe if "checkpoint" in d.value.columns)
    assert "kind" not in table.columns and len(set(table.columns)) == len(table.columns)
    cells = table.astype(str).to_numpy().ravel().tolist()
    assert not any(c in ("None", "nan", "<NA>") for c in cells)
    ws = Workspace.open(ZOO, cache_dir=data_home / "cache")
    finetuned = ws.finetuned("interactive")
    used = table[table["in use"] & (table["checkpoint"] != "pretrained")]
    assert used["fine-tuned"].tolist() == [formats.percent(finetuned[t]) for t in used["task"]]
    unused = table[~table["in use"]]
    assert len(unused) > 0 and (unused["fine-tuned"] == "—").all()
    assert all(c.endswith("%") or c.endswith("% (mean)") for c in table["zero-shot"])


def test_forgetting_page_opens_at_the_chosen_alpha_and_shows_one_chosen_alpha(zoo_app):
    stored = json.loads((ZOO / "forgetting.json").read_text())["targets"]["digits"]
    zoo_app.session_state["forget_target"] = "digits"
    _open(zoo_app, "views/forgetting.py")
    chosen = stored["task_arithmetic"]["outcome"]["alpha"]
    assert zoo_app.slider(key="forget_alpha").value == pytest.approx(chosen)
    chart = _charts(zoo_app)[0]
    assert _chosen_alpha_annotation(chart) == f"chosen α = {formats.fixed(chosen)}"
    table = zoo_app.dataframe[0].value
    assert table["chosen α"].iloc[0] == formats.fixed(chosen)

    zoo_app.selectbox(key="forget_method").set_value("sta").run()  # a new method opens at its own chosen α
    assert not zoo_app.exception
    sta = stored["sta"]["outcome"]["alpha"]
    assert sta != chosen
    assert zoo_app.slider(key="forget_alpha").value == pytest.approx(sta)
    assert _chosen_alpha_annotation(_charts(zoo_app)[0]) == f"chosen α = {formats.fixed(sta)}"
    assert zoo_app.dataframe[0].value["chosen α"].iloc[1] == formats.fixed(sta)

    zoo_app.slider(key="forget_alpha").set_value(0.5).run()  # the user's α stays while only α moves
    assert zoo_app.slider(key="forget_alpha").value == pytest.approx(0.5)
    delta = next(m for m in zoo_app.metric if m.label.startswith("target: digits")).proto.delta
    assert not delta.startswith(("-0.0%", "+0.0%"))


def test_interference_scatter_says_which_drops_it_plots(tiny_collection_dir, data_home):
    """First-order drops by default (λ reads stored products), the network's own behind 'Exact drops'."""
    from engine.workspace import Workspace

    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tiny_collection_dir)]}))
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["collection"] = str(tiny_collection_dir)
    _open(at, "views/interference.py")
    if any("not cached yet" in i.value for i in at.info):  # the workspace is process-wide: maybe computed already
        at.button(key="taujp_now").click().run()
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")

    def scatter() -> dict:
        return next(c for c in _charts(at) if c["layout"]["title"]["text"].startswith("Interference"))

    assert "first order, interactive split" in scatter()["layout"]["title"]["text"]
    assert sorted(scatter()["data"][0]["y"]) == pytest.approx(sorted(ws.taujp.tangent_pair_drops(0.3).values()))
    at.toggle(key="interference_exact").set_value(True).run()
    assert not at.exception
    assert "network, val split" in scatter()["layout"]["title"]["text"]
    assert sorted(scatter()["data"][0]["y"]) == pytest.approx(sorted(ws.taujp.pair_drops(0.3).values()))
    assert any("the network's own, on val" in c.value for c in at.caption)


def test_a_count_slider_shows_whole_numbers_and_a_coefficient_keeps_its_decimals():
    def page():
        from engine.merge import get_method
        from ui import widgets

        widgets.method_params(get_method("wudi"), ["digits", "faces"], per_task=False)

    at = AppTest.from_function(page).run()
    assert not at.exception
    formats_shown = {s.key: s.proto.format for s in at.slider}
    assert formats_shown == {"wudi.steps": "%d", "wudi.alpha": "%0.2f"}  # "300", not "300.00"
    assert at.slider(key="wudi.steps").value == 300
