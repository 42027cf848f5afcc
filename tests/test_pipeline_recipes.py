"""The merge pipeline carried by recipes and the CLI: `--calibrate svc --param svc.alpha=V` exports the session's
calibrated merge and records the pipeline in the recipe; a transform or a calibrator's parameter that the merge
does not run is refused by name."""

import json

import pytest
import torch

from engine.cache.memory import ComputeCache
from engine.cli import main
from engine.errors import UnknownMethodError
from engine.io.checkpoints import load_checkpoint
from engine.params import flatten
from engine.pool.collection import load_collection
from engine.runs.export import recipe_path
from engine.runs.recipes import parse_recipe
from engine.workspace import Workspace


@pytest.fixture(autouse=True)
def allow_collection(tiny_collection_dir, data_home):
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tiny_collection_dir)]}))


def test_cli_merge_with_a_calibrator_exports_the_calibrated_merge(tiny_collection_dir, data_home, tmp_path, capsys):
    args = ["merge", "--collection", str(tiny_collection_dir), "--method", "tsv_m", "--param", "alpha=0.7"]
    args += ["--calibrate", "svc", "--param", "svc.alpha=0.8", "--out", "calibrated", "--device", "cpu"]
    assert main(args) == 0, capsys.readouterr().err
    out = data_home / "exports" / "calibrated.safetensors"
    ws = Workspace.from_collection(load_collection(tiny_collection_dir), cache_dir=tmp_path, cache=ComputeCache())
    params = {"alpha": 0.7, "svc.alpha": 0.8}
    expected = ws.merge(ws.task_names, "tsv_m", params, calibrate=("svc",))
    torch.testing.assert_close(flatten(load_checkpoint(out).state, ws.matrix.spec), expected)
    assert not torch.allclose(expected, ws.merge(ws.task_names, "tsv_m", {"alpha": 0.7}))  # SVC changed it
    recipe = json.loads(recipe_path(out).read_text())
    assert recipe["calibrate"] == ["svc"] and recipe["params"] == params


def test_cli_refuses_a_transform_by_name(tiny_collection_dir, capsys):
    args = ["merge", "--collection", str(tiny_collection_dir), "--transform", "larv", "--out", "x"]
    assert main(args) == 2
    assert "larv" in capsys.readouterr().err


def test_a_recipe_names_its_calibrators_and_their_parameters(tiny_collection_dir):
    recipe = parse_recipe("collection: c\nmethod: ties\ncalibrate: [lines, svc]\nparams: {lines.beta: 0.5, lam: 1}")
    assert recipe.calibrate == ("lines", "svc")
    with pytest.raises(UnknownMethodError, match="svc.alpha"):
        parse_recipe("collection: c\nmethod: ties\nparams: {svc.alpha: 0.5}")
    with pytest.raises(Exception, match="lines.gamma"):
        parse_recipe("collection: c\nmethod: ties\ncalibrate: [lines]\nparams: {lines.gamma: 0.5}")
    with pytest.raises(Exception, match="is not a calibrator"):
        parse_recipe("collection: c\nmethod: ties\ncalibrate: [nope]")


def test_a_pipeline_name_carries_its_calibrators_through_compare_sweeps_and_grids(tiny_collection_dir, tmp_path):
    from engine.errors import ParameterError
    from engine.eval.evaluate import evaluate
    from engine.jobs.compare import DEFAULT_GRIDS, method_grid
    from engine.search.grid import checked_axes

    ws = Workspace.from_collection(load_collection(tiny_collection_dir), cache_dir=tmp_path, cache=ComputeCache())
    tasks, params = ws.task_names, {"alpha": 1.0, "svc.alpha": 0.5}
    by_flag = ws.compare(tasks, "tsv_m", params, split="val", calibrate=("svc",))
    merged = ws.merge(tasks, "tsv_m", params, calibrate=("svc",))  # the calibrated merge is what is evaluated
    assert by_flag.merged.accuracy == evaluate(merged, ws.suite, "val", tasks=tasks).accuracy
    assert ws.compare(tasks, "tsv_m+svc", params, split="val").merged.accuracy == by_flag.merged.accuracy
    sweep = ws.sweep(tasks, "tsv_m+svc", params, param="svc.alpha", values=[0.5, 2.0], split="val")
    assert sweep.mean_accuracy[0] == pytest.approx(by_flag.merged.mean_accuracy)
    grid = method_grid("tsv_m+svc", DEFAULT_GRIDS)  # the base's grid, then the calibrator's declared axis
    assert grid["alpha"] == DEFAULT_GRIDS["tsv_m"]["alpha"] and grid["svc.alpha"] == (0.5, 1.0, 2.0)
    with pytest.raises(ParameterError, match="svc.alpha"):
        checked_axes("tsv_m+svc", {"svc.alpha": [9.0]}, {}, len(tasks))
    with pytest.raises(UnknownMethodError, match="is not a calibrator"):
        ws.compare(tasks, "tsv_m+nope", {}, split="val")


def test_compare_reports_a_pipeline_as_its_own_row_searched_over_its_calibrators_axis(tiny_collection_dir, tmp_path):
    import threading

    from engine.jobs.compare import compare_job
    from engine.jobs.runner import JobContext

    ws = Workspace.from_collection(load_collection(tiny_collection_dir), cache_dir=tmp_path, cache=ComputeCache())
    grids = {"task_arithmetic": {"lam": [0.3]}, "task_arithmetic+lines": {"lam": [0.3], "lines.beta": [0.0, 1.0]}}
    ctx = JobContext(lambda **_: None, threading.Event())
    base, lines = compare_job(ctx, workspace=ws, methods=list(grids), grids=grids).results
    assert lines.method == "task_arithmetic+lines" and lines.trials == 2 and set(lines.params) == {"lam", "lines.beta"}
    assert lines.val_mean_normalized >= base.val_mean_normalized  # β = 0 is the base itself: val never picks worse
    test = ws.compare(ws.task_names, "task_arithmetic", {"lam": 0.3, **lines.params}, split="test", calibrate=["lines"])
    assert lines.test_mean_normalized == pytest.approx(test.mean_normalized)
