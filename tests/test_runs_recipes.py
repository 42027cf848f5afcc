import json

import pytest
import torch

from engine.cli import main
from engine.errors import CheckpointError, ParameterError, SchemaError
from engine.home import DataHome
from engine.io.checkpoints import load_checkpoint
from engine.merge import apply
from engine.params import flatten
from engine.pool.collection import load_collection, task_matrix
from engine.runs.log import RunLog
from engine.runs.recipe_runner import run_recipe
from engine.runs.recipes import load_recipe


@pytest.fixture(autouse=True)
def allow_collection(tiny_collection_dir, data_home):
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tiny_collection_dir)]}))


def _write(path, text):
    path.write_text(text)
    return path


def test_cli_recipe_equals_the_api_merge_bit_for_bit(tiny_collection_dir, data_home, capsys):
    recipe = _write(
        data_home / "r.yaml",
        f"collection: {tiny_collection_dir}\ntasks: [colour, texture]\n"
        "params: {lam: [0.25, 0.6]}\nevaluate: test\noutput: two\n",
    )
    assert main(["run", str(recipe)]) == 0, capsys.readouterr().err
    written = load_checkpoint(data_home / "exports" / "two.safetensors")
    tm = task_matrix(load_collection(tiny_collection_dir), tasks=["colour", "texture"])
    expected = apply("task_arithmetic", tm.theta0, tm.T, {"lam": [0.25, 0.6]})
    assert torch.equal(flatten(written.state, tm.spec), expected)
    run = RunLog(data_home / "runs" / "runs.sqlite3").runs(kind="recipe")[0]
    assert run.tasks == ("colour", "texture") and run.outputs["sha256"] == written.sha256
    assert set(run.outputs["accuracy"]) == {"colour", "texture"}
    assert run.inputs["recipe"]["pretrained_sha256"] == load_collection(tiny_collection_dir).pretrained().sha256


def test_a_logged_recipe_reproduces_its_merge(tiny_collection_dir, data_home):
    home = DataHome.from_env().ensure()
    first = run_recipe(
        load_recipe(
            _write(
                data_home / "a.json",
                json.dumps({"collection": str(tiny_collection_dir), "params": {"lam": 0.4}, "output": "a"}),
            )
        ),
        home=home,
    )
    logged = RunLog(home.runs / "runs.sqlite3").get(first.run_id).inputs["recipe"]
    again = run_recipe(load_recipe(_write(data_home / "b.json", json.dumps({**logged, "output": "b"}))), home=home)
    assert torch.equal(first.merged, again.merged)


def test_a_recipe_run_on_an_open_workspace_equals_a_fresh_run(tiny_collection_dir, data_home):
    """The dashboard exports through its open workspace (no second copy of the pool in memory)."""
    from engine.workspace import Workspace

    home = DataHome.from_env().ensure()
    body = {
        "collection": str(tiny_collection_dir),
        "tasks": ["texture", "colour"],
        "params": {"lam": [0.5, 0.2]},
        "evaluate": "test",
    }
    fresh = run_recipe(load_recipe(_write(data_home / "f.json", json.dumps({**body, "output": "f"}))), home=home)
    ws = Workspace.open(tiny_collection_dir, cache_dir=home.cache)  # every task, as the merge page opens it
    reused = run_recipe(
        load_recipe(_write(data_home / "w.json", json.dumps({**body, "output": "w"}))), home=home, workspace=ws
    )
    assert torch.equal(fresh.merged, reused.merged) and reused.recipe.tasks == ("texture", "colour")
    assert reused.result.accuracy == fresh.result.accuracy and set(reused.result.accuracy) == {"texture", "colour"}
    assert reused.checkpoint.meta.parent_sha256 == fresh.checkpoint.meta.parent_sha256 == ws.pretrained.tensors_sha256
    other = load_recipe(_write(data_home / "o.json", json.dumps({**body, "variants": {"colour": "linearized"}})))
    with pytest.raises(ParameterError, match="'colour'.*not open with the checkpoint the recipe names"):
        run_recipe(other, home=home, workspace=ws)


@pytest.mark.parametrize(
    "body, error, message",
    [
        ("method: ties_magic\n", SchemaError, r"method: Value error, ties_magic: is not a registered merge method"),
        ("params: {lam: 3.0}\n", ParameterError, r"task_arithmetic.lam: value 3.0 outside \[-1.5, 1.5\]"),
        ("params: {lam: high}\n", SchemaError, r"params.lam.*got 'high'"),
        ("tasks: colour\n", SchemaError, r"tasks: Input should be a valid tuple"),
        ("evaluate: dev\n", SchemaError, r"evaluate: Input should be 'train', 'val', 'test' or 'interactive'"),
        ("lam: 0.3\n", SchemaError, r"lam: Extra inputs are not permitted"),
    ],
)
def test_bad_recipes_give_one_clear_message(tiny_collection_dir, data_home, body, error, message):
    path = _write(data_home / "bad.yaml", f"collection: {tiny_collection_dir}\n{body}")
    with pytest.raises(error, match=message):
        run_recipe(load_recipe(path), home=DataHome.from_env().ensure())
    assert not list((data_home / "exports").glob("*")) if (data_home / "exports").exists() else True


def test_a_recipe_naming_a_missing_checkpoint(tiny_collection_dir, data_home, tmp_path):
    path = _write(data_home / "v.yaml", f"collection: {tiny_collection_dir}\nvariant: linearized\n")
    with pytest.raises(CheckpointError, match="colour/linearized: no such fine-tuned checkpoint"):
        run_recipe(load_recipe(path), home=DataHome.from_env().ensure())
    with pytest.raises(SchemaError, match="nope.yaml: no such recipe file"):
        load_recipe(data_home / "nope.yaml")
    with pytest.raises(SchemaError, match="not valid"):
        load_recipe(_write(data_home / "broken.yaml", "collection: [unclosed\n"))
