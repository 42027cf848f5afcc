"""The demo zoo's LoRA variant (engine/zoo/lora.py): one PEFT adapter per task and its table, lora.json.

Tests named `test_stored_*` (marker `stored_data`) only read what the zoo build stored; the others recompute a
subset of the table from the shipped adapters (one method's row, one task's adapter alone and zero-shot).
"""

import json
import threading

import pytest

from engine.eval.evaluate import evaluate
from engine.home import ASSETS_DIR
from engine.jobs.compare import MethodsComparison, compare_job
from engine.jobs.runner import JobContext
from engine.pool.collection import load_collection
from engine.workspace import Workspace
from engine.zoo.lora import LORA, LORA_METHODS, VARIANT

ZOO = ASSETS_DIR / "zoo"


@pytest.fixture(scope="module")
def table() -> dict:
    return load_collection(ZOO).variant_table(VARIANT)


@pytest.fixture(scope="module")
def lora_workspace(tmp_path_factory) -> Workspace:
    return Workspace.open(ZOO, cache_dir=tmp_path_factory.mktemp("zoo-cache"), variant=VARIANT)


@pytest.mark.stored_data
def test_stored_lora_table_lists_the_lora_papers_methods_between_zero_shot_and_the_adapters(table):
    collection = load_collection(ZOO)
    assert collection.manifest.variant_tables == {VARIANT: "lora.json"}
    assert [r["method"] for r in table["methods"]["results"]] == list(LORA_METHODS)
    means = table["averages"]
    assert means["zero_shot_test"] < min(means[m] for m in LORA_METHODS)
    assert max(means[m] for m in LORA_METHODS) < means["adapters_test"]
    assert table["training"]["lora_rank"] == LORA.lora_rank and table["training"]["lr"] == LORA.lr
    assert set(table["adapter_bytes"]) == {f"{t}.lora" for t in collection.task_names}
    assert max(table["adapter_bytes"].values()) < 100_000


@pytest.mark.stored_data
def test_stored_lora_checkpoints_are_peft_adapters_with_their_recipe():
    collection = load_collection(ZOO)
    for task in collection.task_names:
        folder = collection.path(collection.manifest.tasks[task].checkpoints[VARIANT])
        files = {"adapter_config.json", "adapter_model.safetensors", "mergelab.json"}
        assert {p.name for p in folder.iterdir()} == files
        config = json.loads((folder / "adapter_config.json").read_text())
        assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 8, 8)
        meta = collection.checkpoint_meta(task, VARIANT)
        assert meta.training["mode"] == "lora" and meta.task == task


def test_one_row_of_the_lora_table_recomputes(lora_workspace, table):
    """Task arithmetic's row, its λ chosen on val over its grid and its test numbers, from the shipped adapters (the
    cheapest row: KnOTS and Core Space are checked against their papers' code in test_merge_knots / _core_space)."""
    stored = next(r for r in MethodsComparison.from_json(table["methods"]).results if r.method == "task_arithmetic")
    ctx = JobContext(lambda **_: None, threading.Event())
    (fresh,) = compare_job(ctx, workspace=lora_workspace, methods=["task_arithmetic"]).results
    assert fresh.params == stored.params and fresh.trials == stored.trials
    assert fresh.test_accuracy == pytest.approx(stored.test_accuracy, abs=1e-6)


def test_one_adapter_alone_and_zero_shot_recompute(lora_workspace, table):
    ws, task = lora_workspace, "faces"
    k = ws.task_names.index(task)
    alone = evaluate(ws.matrix.theta0 + ws.matrix.T[k], ws.suite, "test", tasks=[task]).accuracy[task]
    assert alone == pytest.approx(table["adapters"]["test"][task], abs=1e-9)
    zero_shot = evaluate(ws.matrix.theta0, ws.suite, "test", tasks=[task]).accuracy[task]
    assert zero_shot == pytest.approx(table["zero_shot"]["test"][task], abs=1e-9)
