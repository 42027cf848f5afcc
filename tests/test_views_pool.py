"""The dashboard opens pools of every format by path and serves the merge page on them; a manifest that
points outside the allowed roots is refused on the page, and the app stays up."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from engine.pool.collection import load_collection
from engine.workspace import Workspace
from tests import test_io_formats
from tests.foreign import FORMATS
from tests.test_io_formats import _write, _write_data
from tests.test_views import APP, _metric, _open

source = test_io_formats.source  # the tiny model fixture, shared


@pytest.fixture()
def pools(data_home, source):
    """One tiny pool per format under the data home (an allowed root)."""
    roots = {}
    for fmt in FORMATS:
        root = _write(data_home / "pools" / fmt, fmt, source)
        _write_data(root)
        roots[fmt] = root
    return roots


@pytest.mark.parametrize("fmt", FORMATS)
def test_merge_page_serves_a_pool_of_every_format(pools, data_home, fmt):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["collection"] = str(pools[fmt])
    if fmt == "tangent":  # its fine-tunes are linearized checkpoints, named so in the sidebar
        at.session_state["ckpt.colour"] = at.session_state["ckpt.shape"] = "linearized"
    _open(at, "views/merge.py")
    assert not at.exception and not at.error, [e.value for e in at.error]
    ws = Workspace.from_collection(
        load_collection(pools[fmt]),
        cache_dir=data_home / "cache",
        variant="linearized" if fmt == "tangent" else "standard",
    )
    assert ws.linearized == (fmt == "tangent")
    lam = at.slider(key="task_arithmetic.lam").value
    expected = ws.compare(ws.task_names, "task_arithmetic", {"lam": lam})
    assert _metric(at, "mean accuracy (merged)") == f"{expected.mean_merged:.1%}"


def test_a_manifest_reaching_outside_the_allowed_roots_is_refused(pools, data_home, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "zeroshot.pt").write_bytes((pools["task_vectors"] / "zeroshot.pt").read_bytes())
    manifest = data_home / "pools" / "sneaky.yaml"
    manifest.write_text(
        json.dumps(
            {
                "pretrained": "../../outside/zeroshot.pt",
                "tasks": {
                    "colour": {"checkpoint": "task_vectors/colour/finetuned.pt", "data": "task_vectors/data/colour"}
                },
            }
        )
    )
    assert (manifest.parent / "../../outside/zeroshot.pt").resolve() == (outside / "zeroshot.pt").resolve()
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["collection"] = str(manifest)
    _open(at, "views/merge.py")
    assert not at.exception
    assert any("outside the allowed roots" in e.value for e in at.error)
    at.session_state["collection"] = str(pools["open_clip"])  # the app stays usable
    at.run()
    assert not at.exception and not at.error


@pytest.mark.parametrize(
    "view",
    [
        "views/home.py",
        "views/zoo.py",
        "views/forgetting.py",
        "views/sta.py",
        "views/interference.py",
        "views/subspaces.py",
        "views/compare.py",
        "views/finetune.py",
        "views/learned.py",
        "views/jobs.py",
    ],
)
@pytest.mark.parametrize("fmt", ["task_vectors", "hf"])
def test_every_view_renders_on_a_pool(pools, fmt, view):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["collection"] = str(pools[fmt])
    _open(at, view)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_the_zoo_page_shows_formats_and_converts_a_pool(pools, data_home):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["collection"] = str(pools["task_vectors"])
    _open(at, "views/zoo.py")
    table = at.dataframe[0].value
    assert set(table["format"]) == {"task_vectors"} and table["task"][0] == "(pretrained, image tower)"
    summary = "Suite: none of TA8, TALL14, TALL20. Checkpoints: task_vectors / TALL masks."
    assert summary in [c.value for c in at.caption]
    target = data_home / "collections" / "converted"
    at.text_input(key="convert_to").set_value(str(target)).run()
    at.button(key="convert").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(str(target) in s.value for s in at.success)
    at.session_state["collection"] = str(target)
    at.run()
    assert set(at.dataframe[0].value["format"]) == {"mergelab"}
    assert not any(e.label == "Convert this pool to safetensors" for e in at.expander)
