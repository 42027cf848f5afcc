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

    (run,) = RunLog(data_home / "runs" / "runs.sqlite3").runs(kind="recipe")  # the same path as `engine run`
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
    assert main(["merge", "--collection", str(tiny_collection_dir), "--eval", "tset", "--out", "y"]) == 2
    assert "evaluate" in capsys.readouterr().err and not list((data_home / "exports").glob("y*"))
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


def test_cli_merges_a_fine_tune_that_a_job_wrote_into_the_data_home(tiny_collection_dir, data_home, capsys):
    """The CLI opens collections the way the dashboard does (open_for_user): the user's fine-tunes join."""
    from engine.home import DataHome
    from engine.jobs.finetune import finetune_job
    from engine.jobs.runner import JobState, LocalRunner
    from engine.pool.access import open_for_user
    from engine.train.finetune import FinetuneConfig
    from engine.workspace import Workspace

    home = DataHome.from_env().ensure()
    ws = Workspace.open(tiny_collection_dir, cache_dir=home.cache)
    runner = LocalRunner()
    config = FinetuneConfig(mode="standard", steps=3, batch_size=16, lr=3e-3, warmup_steps=1, eval_every=3)
    job = runner.submit("ft", finetune_job, workspace=ws, task="texture", out_root=home.finetunes, config=config)
    status = runner.wait(job, timeout=120)
    assert status.state is JobState.DONE, status.error
    name = status.result.checkpoint
    args = ["merge", "--collection", str(tiny_collection_dir), "--tasks", "texture", "--variant", name]
    assert main([*args, "--param", "lam=0.5", "--out", "mine"]) == 0, capsys.readouterr().err
    written = load_checkpoint(data_home / "exports" / "mine.safetensors")
    collection = open_for_user(tiny_collection_dir, home=home, policy=home.shell_policy())
    tm = task_matrix(collection, tasks=["texture"], variants={"texture": name})
    assert torch.equal(flatten(written.state, tm.spec), tm.theta0 + 0.5 * tm.T[0])
    assert not torch.equal(tm.T[0], task_matrix(load_collection(tiny_collection_dir), tasks=["texture"]).T[0])
    assert json.loads(recipe_path(data_home / "exports" / "mine.safetensors").read_text())["variant"] == name


def test_cli_paths_are_the_shell_users_own(tiny_collection_dir, data_home, tmp_path, monkeypatch, capsys):
    """Relative paths resolve against the current directory, and none is confined to the dashboard's allowed
    roots (no config.json lists tmp_path): the shell user may read and write their own files."""
    (data_home / "config.json").unlink()
    monkeypatch.chdir(tiny_collection_dir.parent)
    (tmp_path / "out").mkdir()
    assert main(["merge", "--collection", tiny_collection_dir.name, "--out", str(tmp_path / "out" / "m")]) == 0
    assert (tmp_path / "out" / "m.safetensors").is_file()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"collection: {tiny_collection_dir}\nmethod: ties\noutput: r\n")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "r.yaml"]) == 0, capsys.readouterr().err
    assert (data_home / "exports" / "r.safetensors").is_file()


def test_cli_eval_of_a_collection_without_tasks_names_the_manifest(tiny_collection_dir, tmp_path, capsys):
    """`tasks: {}` used to reach torch.cat inside the evaluation; now the manifest is refused, exit status 2."""
    empty = tmp_path / "empty"
    empty.mkdir()
    manifest = json.loads((tiny_collection_dir / "collection.json").read_text())
    manifest["pretrained"] = str(tiny_collection_dir / manifest["pretrained"])
    (empty / "collection.json").write_text(json.dumps({**manifest, "tasks": {}}))
    assert main(["eval", "--collection", str(empty), "--split", "interactive"]) == 2
    err = capsys.readouterr().err
    assert f"{empty / 'collection.json'}: invalid manifest" in err and "names no task" in err
    assert "Traceback" not in err


def _recipe(path, collection, method="ties", params=None):
    import json as _json

    path.write_text(_json.dumps({"collection": str(collection), "method": method, "params": params or {}}))
    return path


def test_cli_sweep_runs_the_grid_and_logs_one_sweep_row(tiny_collection_dir, data_home, tmp_path, capsys):
    from engine.runs.log import RunLog

    recipe = _recipe(tmp_path / "ties.json", tiny_collection_dir)
    assert main(["sweep", str(recipe), "--grid", "lam=0.5:1.5:3", "density=0.2,0.6"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "done" and (printed["trials"], printed["planned"]) == (6, 6)
    log = RunLog(data_home / "runs" / "runs.sqlite3")
    (sweep,) = log.runs(top_level=True)
    assert sweep.id == printed["run"] and sweep.kind == "grid_sweep" and sweep.inputs["backend"] == "local"
    assert sweep.inputs["grid"] == {"lam": [0.5, 1.0, 1.5], "density": [0.2, 0.6]}
    assert len(log.runs(parent_id=sweep.id)) == 6 and printed["best_params"] == sweep.outputs["best_params"]
    assert log.job(sweep.job_id).owner == "cli"


def test_cli_search_reports_the_best_on_val_and_test(tiny_collection_dir, data_home, tmp_path, capsys):
    recipe = _recipe(tmp_path / "ta.json", tiny_collection_dir, method="task_arithmetic", params={"lam": 0.3})
    argv = ["search", str(recipe), "--trials", "6", "--batch", "3", "--strategy", "cma", "--seed", "2"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["trials"], first["planned"]) == (6, 6) and len(first["best_params"]["lam"]) == 3
    assert 0 < first["val_mean_normalized"] and 0 < first["test_mean_normalized"]
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["best_params"] == first["best_params"] and again["run"] != first["run"]


def test_cli_sweep_refuses_a_grid_of_an_undeclared_parameter(tiny_collection_dir, tmp_path, capsys):
    recipe = _recipe(tmp_path / "ties.json", tiny_collection_dir)
    assert main(["sweep", str(recipe), "--grid", "rank=1,2"]) == 2
    assert "ties.rank" in capsys.readouterr().err
    assert main(["search", str(recipe), "--trials", "4"]) == 2  # TIES has no per-task λ
    assert "per-task" in capsys.readouterr().err
