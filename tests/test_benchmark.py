"""The benchmark (engine/jobs/benchmark.py, engine/eval/benchmark.py): Compare's choice on val and test through
the one trial engine, a stratified seeded subsample, partial results kept and resumed, the published column
for a tiny pool named like TA8 with FusionBench's checkpoint family, and the command."""

import json
import threading

import pytest
import torch

from engine.cli import main
from engine.data.splits import stratified_subset
from engine.errors import ParameterError, SchemaError
from engine.eval.benchmark import Benchmark, markdown, stored_benchmark
from engine.eval.published import published_rows
from engine.home import ASSETS_DIR
from engine.jobs.benchmark import DEFAULT_METHODS, benchmark_job
from engine.jobs.compare import compare_job
from engine.jobs.runner import Cancelled, JobContext
from engine.search import trials as trial_module
from engine.workspace import Workspace
from engine.zoo.benchmark import ZOO_NAME, zoo_benchmark
from tests.builders import TINY_ARCH
from tests.foreign import tiny_source
from tests.hf_fixtures import write_fusion_bench_cache

GRIDS = {"task_arithmetic": {"lam": [0.3, 0.6, 0.9]}, "ties": {"density": [0.5], "lam": [0.5, 1.0]}}
TA8 = {
    "sun397": "tanganke/sun397",
    "stanford-cars": "tanganke/stanford_cars",
    "resisc45": "tanganke/resisc45",
    "eurosat": "tanganke/eurosat",
    "svhn": "ufldl-stanford/svhn",
    "gtsrb": "tanganke/gtsrb",
    "mnist": "ylecun/mnist",
    "dtd": "tanganke/dtd",
}


@pytest.fixture(scope="module")
def ws(tiny_collection_dir, tmp_path_factory):
    return Workspace.open(tiny_collection_dir, cache_dir=tmp_path_factory.mktemp("cache"))


def _ctx(*, cancel_at: int | None = None) -> JobContext:
    event = threading.Event()

    def update(step=0, **_):
        if cancel_at is not None and step >= cancel_at:
            event.set()

    return JobContext(update, event)


def test_a_stratified_subset_keeps_each_class_share_and_its_seed():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    picked = stratified_subset(labels, 20, seed=1)
    assert torch.bincount(labels[picked]).tolist() == [12, 6, 2] and picked.tolist() == sorted(picked.tolist())
    assert torch.equal(picked, stratified_subset(labels, 20, seed=1))
    assert not torch.equal(picked, stratified_subset(labels, 20, seed=2))
    even = torch.tensor([0] * 5 + [1] * 5 + [2] * 5)  # 7 of 15: 2⅓ each, the one left over to the lowest class
    assert torch.bincount(even[stratified_subset(even, 7, seed=0)]).tolist() == [3, 2, 2]
    assert torch.equal(stratified_subset(labels, 500, seed=0), torch.arange(100))
    with pytest.raises(ParameterError, match="limit per task"):
        stratified_subset(labels, 0, seed=0)


def test_the_benchmark_chooses_as_compare_does_and_writes_its_table(ws, tmp_path):
    out = tmp_path / "bench.json"
    table = benchmark_job(_ctx(), workspace=ws, methods=list(GRIDS), grids=GRIDS, out=out)
    comparison = compare_job(_ctx(), workspace=ws, methods=list(GRIDS), grids=GRIDS)
    assert table.complete and [r.method for r in table.rows] == ["zero_shot", "finetuned", *GRIDS]
    for result in comparison.results:
        row = table.row(result.method)
        assert row.params == result.params and row.accuracy == result.test_accuracy
        assert row.mean_normalized == pytest.approx(result.test_mean_normalized)
    finetuned = ws.finetuned("test")
    assert table.row("finetuned").accuracy == {t: finetuned[t] for t in ws.task_names}
    stored = json.loads(out.read_text())
    assert Benchmark.from_json(stored) == table and stored["pending"] == {} and stored["complete"]
    text = out.with_suffix(".md").read_text()
    assert text == markdown(table) and "| Task arithmetic |" in text and "family unknown: not comparable" in text
    assert stored["images"]["colour"] == {"val": 140, "test": 40}  # no limit: every image


def test_an_interrupted_benchmark_keeps_its_trials_and_resumes_from_them(ws, tmp_path, monkeypatch):
    out = tmp_path / "bench.json"
    with pytest.raises(Cancelled):
        benchmark_job(_ctx(cancel_at=2), workspace=ws, methods=list(GRIDS), grids=GRIDS, out=out, limit_per_task=20)
    partial = json.loads(out.read_text())
    assert not partial["complete"] and [t["index"] for t in partial["pending"]["task_arithmetic"]] == [0, 1]
    assert "Partial: task_arithmetic, ties not finished yet" in out.with_suffix(".md").read_text()
    seen, original = [], trial_module.evaluate_trial
    monkeypatch.setattr(trial_module, "evaluate_trial", lambda w, r, **k: seen.append(r) or original(w, r, **k))
    resumed = benchmark_job(_ctx(), workspace=ws, methods=list(GRIDS), grids=GRIDS, out=out, limit_per_task=20)
    assert [(r.method, r.index, r.split) for r in seen][:2] == [
        ("task_arithmetic", 2, "val"),
        ("task_arithmetic", 3, "test"),
    ]
    fresh = benchmark_job(_ctx(), workspace=ws, methods=list(GRIDS), grids=GRIDS, limit_per_task=20)
    assert resumed.rows == fresh.rows and resumed.complete


def test_a_benchmark_file_of_other_settings_is_refused_and_kept(ws, tmp_path):
    out = tmp_path / "bench.json"
    grids = {"task_arithmetic": {"lam": [0.5]}}
    table = benchmark_job(_ctx(), workspace=ws, methods=["task_arithmetic"], grids=grids, out=out, limit_per_task=10)
    assert table.settings["limit_per_task"] == 10 and table.images["colour"] == {"val": 10, "test": 10}
    before = out.read_text()
    with pytest.raises(SchemaError, match=r"other settings \(limit_per_task\)"):
        benchmark_job(_ctx(), workspace=ws, methods=["task_arithmetic"], grids=grids, out=out, limit_per_task=12)
    assert out.read_text() == before


def test_a_val_profile_redraws_val_and_ray_refuses_what_its_workers_would_not_see(ws):
    grids = {"task_arithmetic": {"lam": [0.5]}}
    table = benchmark_job(_ctx(), workspace=ws, methods=["task_arithmetic"], grids=grids, val_profile="task_vectors")
    assert table.images["colour"] == {"val": 2, "test": 40} and table.settings["val_profile"] == "task_vectors"
    assert ws.suite.tasks["colour"].split("val").labels.shape[0] == 140  # the open workspace is left as it was
    with pytest.raises(ParameterError, match="benchmark on Ray"):
        benchmark_job(_ctx(), workspace=ws, methods=["task_arithmetic"], grids=grids, limit_per_task=5, ray="local")
    with pytest.raises(ParameterError, match="declare no grid"):
        benchmark_job(_ctx(), workspace=ws, methods=["emr_unknown"])


@pytest.fixture(scope="module")
def ta8_pool(tmp_path_factory):
    """A tiny random pool named like TA8 in a hub cache, of FusionBench's checkpoint family (its repositories)."""
    here = tmp_path_factory.mktemp("ta8")
    source = tiny_source(TINY_ARCH, {"any": ("a", "b")}, seed=2)
    write_fusion_bench_cache(
        here / "hub",
        here / "scratch",
        base="clip-vit-tiny",
        architecture=TINY_ARCH,
        pretrained=source["pretrained"],
        finetuned={task: source["finetuned"]["any"] for task in TA8},
        datasets_of={task: (i, {"train": [0, 1] * 10, "test": [1, 0] * 3}) for task, i in TA8.items()},
    )
    return Workspace.open(here / "hub", cache_dir=here / "cache")


def test_a_ta8_pool_of_a_known_family_gets_the_published_numbers_and_our_difference(ta8_pool):
    grids = {"task_arithmetic": {"lam": [0.3]}}
    table = benchmark_job(
        _ctx(),
        workspace=ta8_pool,
        suite="TA8",
        methods=["task_arithmetic"],
        grids=grids,
        published_architecture="ViT-B-32",
    )
    assert table.tasks[:2] == ("sun397", "stanford-cars") and table.published.family == "FusionBench"
    theirs = next(
        r
        for r in published_rows()
        if (r.suite, r.architecture, r.checkpoints, r.method) == ("TA8", "ViT-B-32", "FusionBench", "task_arithmetic")
    )
    (difference,) = [d for d in table.to_json()["differences"] if d["method"] == "task_arithmetic"]
    assert difference["accuracy"] == round(100 * table.row("task_arithmetic").mean_accuracy - theirs.accuracy, 2)
    line = next(x for x in markdown(table).splitlines() if x.startswith("| Task arithmetic |"))
    assert f"{theirs.accuracy:.1f} (FusionBench)" in line and f"{difference['accuracy']:+.1f}" in line
    assert table.settings["architecture"] == "ViT-B-32" and table.settings["pool_architecture"] == TINY_ARCH
    own = benchmark_job(_ctx(), workspace=ta8_pool, suite="TA8", methods=["task_arithmetic"], grids=grids)
    assert not own.published.comparable
    assert own.published.reason == f"no published numbers for TA8 on {TINY_ARCH} with FusionBench checkpoints"


def test_the_command_prints_the_table_and_writes_both_files(tiny_collection_dir, tmp_path, data_home, capsys):
    out = tmp_path / "b.json"
    args = ["benchmark", "--collection", str(tiny_collection_dir), "--methods", "task_arithmetic"]
    assert main([*args, "--limit-per-task", "8", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| Method | colour | brightness | texture |") and f"JSON: {out}" in printed
    stored = json.loads(out.read_text())
    assert stored["settings"]["limit_per_task"] == 8 and stored["rows"][2]["trials"] == 21  # TA's declared grid
    assert main([*args, "--suite", "TA8", "--out", str(out)]) != 0
    assert "lacks 8 of TA8's 8 tasks" in capsys.readouterr().err


@pytest.mark.slow
def test_the_zoo_s_stored_table_recomputes_its_task_arithmetic_row():
    """The whole row: TA's declared grid on val, the choice, its test accuracy (4 minutes under load)."""
    stored = stored_benchmark(ASSETS_DIR / "zoo")
    assert stored.complete and stored.settings["collection"] == ZOO_NAME and stored.settings["limit_per_task"] is None
    assert [r.method for r in stored.rows] == ["zero_shot", "finetuned", *DEFAULT_METHODS]
    grids = {"task_arithmetic": stored.settings["grids"]["task_arithmetic"]}
    again = zoo_benchmark(ASSETS_DIR / "zoo", methods=["task_arithmetic"], grids=grids)
    assert again.row("task_arithmetic") == stored.row("task_arithmetic")
    assert again.row("finetuned") == stored.row("finetuned") and again.row("zero_shot") == stored.row("zero_shot")
