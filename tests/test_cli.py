import json

import pytest
import torch

from engine.cli import main
from engine.io.checkpoints import load_checkpoint
from engine.merge import apply
from engine.params import flatten
from engine.pool.collection import load_collection, task_matrix
from engine.runs.export import recipe_path


@pytest.fixture(autouse=True)
def allow_collection(tiny_collection_dir, data_home):
    """The CLI only reads paths under allowed roots: list the test collection's folder."""
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tiny_collection_dir)]}))


def test_cli_merge_reloads_to_the_api_result(tiny_collection_dir, data_home, capsys):
    code = main(
        [
            "merge",
            "--collection",
            str(tiny_collection_dir),
            "--param",
            "lam=0.2,0.5,-0.1",
            "--out",
            "three",
            "--device",
            "cpu",
        ]
    )
    assert code == 0, capsys.readouterr().err
    out = data_home / "exports" / "three.safetensors"
    written = load_checkpoint(out)
    tm = task_matrix(load_collection(tiny_collection_dir))
    expected = apply("task_arithmetic", tm.theta0, tm.T, {"lam": [0.2, 0.5, -0.1]})
    assert torch.equal(flatten(written.state, tm.spec), expected)
    recipe = json.loads(recipe_path(out).read_text())
    assert recipe["method"] == "task_arithmetic" and recipe["params"] == {"lam": [0.2, 0.5, -0.1]}
    assert written.meta.variant == "merged" and written.meta.parent_sha256 == recipe["pretrained_sha256"]
    from engine.runs.log import RunLog

    (run,) = RunLog(data_home / "runs" / "runs.sqlite3").runs(kind="export")
    assert run.outputs["sha256"] == written.sha256 and run.inputs["recipe"]["params"] == {"lam": [0.2, 0.5, -0.1]}


def test_cli_eval_prints_accuracies(tiny_collection_dir, capsys):
    assert main(["eval", "--collection", str(tiny_collection_dir), "--split", "interactive", "--normalized"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["tasks"]) == {"colour", "brightness", "texture"}
    assert report["tasks"]["colour"]["total"] == 128 and report["mean_normalized"] is not None


def test_cli_errors_name_the_problem_and_write_nothing(tiny_collection_dir, data_home, capsys):
    assert main(["merge", "--collection", str(tiny_collection_dir), "--param", "lam=7", "--out", "x"]) == 2
    assert "task_arithmetic.lam: value 7.0 outside" in capsys.readouterr().err
    assert not list((data_home / "exports").glob("x*"))
    assert main(["merge", "--collection", str(tiny_collection_dir), "--out", "/etc/mergelab.safetensors"]) == 2
    assert "outside the allowed roots" in capsys.readouterr().err
    assert main(["eval", "--collection", str(tiny_collection_dir / "missing")]) == 2
    assert "no collection manifest" in capsys.readouterr().err


def test_an_export_loads_into_plain_open_clip(tiny_collection_dir, data_home):
    import open_clip
    from safetensors.torch import load_file

    from engine.eval.evaluate import encode_images
    from engine.pool.collection import open_suite
    from engine.runs.export import open_clip_config_path

    assert main(["merge", "--collection", str(tiny_collection_dir), "--param", "lam=0.5", "--out", "oc"]) == 0
    out = data_home / "exports" / "oc.safetensors"
    config = json.loads(open_clip_config_path(out).read_text())
    model = open_clip.create_model("ViT-B-32", pretrained=None, **config).eval()
    model.visual.load_state_dict(load_file(str(out)))  # strict: every key and shape matches
    suite = open_suite(load_collection(tiny_collection_dir), cache_dir=data_home / "cache")
    images = suite.tasks["colour"].split("test").images
    ours = encode_images(flatten(load_checkpoint(out).state, suite.spec), suite, images)
    from engine.data.tasks import normalize_batch

    with torch.no_grad():
        theirs = torch.nn.functional.normalize(model.visual(normalize_batch(images, suite.preprocess)), dim=-1)
    torch.testing.assert_close(theirs, ours)


def test_cli_sta_merge_uses_the_workspace_importance(tiny_collection_dir, data_home, capsys):
    from engine.workspace import Workspace

    code = main(
        [
            "merge",
            "--collection",
            str(tiny_collection_dir),
            "--method",
            "sta",
            "--param",
            "threshold=0.1",
            "--param",
            "lam=0.5",
            "--out",
            "sta",
            "--device",
            "cpu",
        ]
    )
    assert code == 0, capsys.readouterr().err
    written = load_checkpoint(data_home / "exports" / "sta.safetensors")
    ws = Workspace.open(tiny_collection_dir, cache_dir=data_home / "cache")  # reads the maps the CLI cached
    expected = ws.merge(ws.task_names, "sta", {"threshold": 0.1, "lam": 0.5})
    assert torch.equal(flatten(written.state, ws.matrix.spec), expected)
    assert not torch.equal(expected, apply("task_arithmetic", ws.matrix.theta0, ws.matrix.T, {"lam": 0.5}))
    assert len(list((data_home / "cache" / "importance").glob("*.safetensors"))) == len(ws.task_names)
