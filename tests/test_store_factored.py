"""The factored backing of the task store (issue 36): a pool of LoRA adapters kept as their factors. Its reads equal
the pool read in memory; iterating the registry, every method merges it to the bits of the same merge of its rows
made whole, the streaming ones without ever making them whole; `merge --store factored` merges as in memory; the
plan keeps a pool of adapters factored when it does not fit in memory, and a Workspace kept factored answers the
pages as one in memory does."""

from __future__ import annotations

import json

import pytest
import torch

from engine.errors import ParameterError
from engine.merge.declaration import rows_as_read
from engine.merge.registry import METHODS, apply
from engine.pool.collection import lazy_task_store, load_collection, task_matrix
from engine.store import column_blocks
from engine.store.factored import LowRankRow
from engine.store.plan import MemoryFacts
from engine.store.reader import StoredRows
from tests.builders import TINY_ARCH
from tests.foreign import tiny_source, write_image_folders, write_pool
from tests.test_merge_hashes import FAST

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

TASKS = {"colour": ("red", "green"), "shape": ("round", "square"), "size": ("big", "small"), "full": ("a", "b")}
ADAPTERS = {  # task → PEFT LoraConfig: ranks, rsLoRA, MLP targets, a rank pattern
    "colour": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "out_proj"]},
    "shape": {"r": 2, "lora_alpha": 2, "use_rslora": True, "target_modules": ["v_proj", "fc1", "fc2"]},
    "size": {"r": 3, "lora_alpha": 6, "target_modules": ["q_proj", "out_proj"], "rank_pattern": {"out_proj": 1}},
}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A discovered pool of three PEFT adapters (made by PEFT on the transformers export of the tower) and one
    full fine-tune."""
    from engine.io.checkpoints import save_checkpoint
    from engine.io.formats.hf_export import export_hf_folder

    tmp = tmp_path_factory.mktemp("factored")
    source = tiny_source(TINY_ARCH, TASKS, seed=5)
    root = write_pool(
        tmp / "pool", "open_clip", architecture=TINY_ARCH, pretrained=source["pretrained"],
        finetuned={"full": source["finetuned"]["full"]}, heads=source["heads"],
    )  # fmt: skip
    write_image_folders(root, TASKS)
    tower = save_checkpoint(tmp / "t.safetensors", source["visual"], architecture=TINY_ARCH, variant="pretrained")
    hf = export_hf_folder(tower, tmp / "hf")
    for seed, (task, config) in enumerate(ADAPTERS.items()):
        torch.manual_seed(seed)
        model = transformers.CLIPVisionModel.from_pretrained(hf)
        peft.get_peft_model(model, peft.LoraConfig(init_lora_weights=False, **config)).save_pretrained(
            root / "finetuned" / task
        )
    return root


@pytest.fixture(scope="module")
def opened(pool):
    collection = load_collection(pool)
    return collection, task_matrix(collection), lazy_task_store(collection, factored=True)


def test_the_factored_rows_read_the_pool_as_in_memory(opened):
    _, matrix, store = opened
    kinds = {name: type(row).__name__ for name, row in zip(store.task_names, store.rows)}
    assert kinds == {"colour": "LowRankRow", "shape": "LowRankRow", "size": "LowRankRow", "full": "CheckpointRow"}
    factors = sum(row.nbytes for row in store.rows if isinstance(row, LowRankRow))
    assert factors < 0.2 * 3 * 4 * matrix.spec.numel  # the tiny tower's adapters: a few of its rows' bytes
    assert store.task_names == matrix.task_names
    rows = tuple(store.task_names.index(t) for t in ("full", "colour", "size", "shape"))
    walked = torch.cat([store.block(rows, cols) for cols in column_blocks(matrix.spec.numel, 777)], dim=1)
    assert torch.allclose(walked, matrix.T[list(rows)], atol=1e-6)  # (θ₀ + sBA) − θ₀ against sBA itself
    assert torch.equal(walked[0], matrix.T[rows[0]])  # the full fine-tune, read from its file
    for name in matrix.spec.matrices():
        assert torch.allclose(store.layer((1, 2), name), matrix.spec.matrix_view(matrix.T, name)[[1, 2]], atol=1e-6)


def test_every_method_merges_the_factored_rows_as_those_rows_made_whole(opened, monkeypatch):
    """Iterates the registry. Streaming methods (`streams`) read the factors a block or a layer at a time (making
    the rows whole is refused here); the others get them whole for the call."""
    _, matrix, store = opened
    rows = StoredRows(store)
    whole = rows.dense()  # [K, P]
    importance = torch.randint(0, 256, tuple(whole.shape), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    streamed = []
    for name, method in sorted(METHODS.items()):
        params, codes = FAST.get(name, {}), importance if method.importance else None
        expected = apply(name, matrix.theta0, whole, params, importance=codes, spec=matrix.spec)
        with monkeypatch.context() as patch:
            if method.streams:
                patch.setattr(StoredRows, "dense", _never)
                streamed.append(name)
            got = apply(name, matrix.theta0, rows, params, importance=codes, spec=matrix.spec)
        assert torch.equal(got, expected), name
    assert {"task_arithmetic", "ties", "knots_ties", "knots_ta", "tsv_m", "iso_c"} <= set(streamed) < set(METHODS)


def _never(self):
    raise AssertionError("a streaming method made the rows whole")


def test_a_subset_of_factored_rows_and_a_method_that_would_not_fit(opened):
    _, matrix, store = opened
    from engine.params import TaskMatrix

    factored = TaskMatrix(store.theta0, StoredRows(store), store.spec, store.task_names)
    part = factored.rows(["size", "colour"])
    picked = [store.task_names.index(t) for t in ("size", "colour")]
    assert isinstance(part, StoredRows) and torch.equal(part.dense(), StoredRows(store).dense()[picked])
    small = MemoryFacts(mem_available=part.numel() * 4)  # less than its rows made whole need beside the rest
    assert rows_as_read(METHODS["ties"], part, facts=small) is part
    with pytest.raises(ParameterError, match=r"method wudi.*task store \(e\.g\. LoRA factors\).*GiB"):
        rows_as_read(METHODS["wudi"], part, facts=small)


def test_merge_with_store_factored_merges_as_in_memory(pool, data_home, capsys):
    from engine.cli import main
    from engine.io.checkpoints import load_checkpoint

    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(pool)]}))
    merged = {}
    for store in ("memory", "factored"):
        args = ["merge", "--collection", str(pool), "--method", "ties", "--param", "lam=0.7", "--store", store]
        assert main([*args, "--out", store]) == 0
        if store == "factored":
            assert "keeping LoRA adapters as their factors (as asked)" in capsys.readouterr().err
        merged[store] = load_checkpoint(data_home / "exports" / f"{store}.safetensors").state
    assert all(torch.allclose(merged["memory"][k], merged["factored"][k], atol=1e-6) for k in merged["memory"])
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(pool)], "store": "factored"}))
    assert main(["merge", "--collection", str(pool), "--method", "ties", "--param", "lam=0.7", "--out", "x"]) == 0
    assert "keeping LoRA adapters as their factors (as asked)" in capsys.readouterr().err
    (data_home / "config.json").write_text(json.dumps({"store": "lora"}))
    assert main(["merge", "--collection", str(pool), "--param", "lam=0.3", "--out", "y"]) != 0
    assert "config.json: store is 'lora'" in capsys.readouterr().err


def test_the_plan_keeps_a_pool_of_adapters_factored_when_it_does_not_fit_in_memory(pool, tmp_path, monkeypatch):
    """Facts of a machine with 1 KiB free: the three adapters stay factored (nothing built); with the full
    fine-tune among them the pool goes to a built store; with room, in memory."""
    import engine.pool.backing as backing

    collection = load_collection(pool)
    adapters, every = ("colour", "shape", "size"), collection.task_names
    assert backing.plan_for(collection, tasks=adapters, folder=tmp_path).backing == "memory"
    monkeypatch.setattr(backing.MemoryFacts, "read", classmethod(lambda cls: MemoryFacts(1024)))
    plan = backing.plan_for(collection, tasks=adapters, folder=tmp_path, cache_budget=0)
    assert (plan.backing, plan.asked) == ("factored", False)
    assert plan.summary().endswith("KiB as float32; keeping LoRA adapters as their factors (1 KiB free)")
    assert backing.plan_for(collection, tasks=every, folder=tmp_path, cache_budget=0).backing == "built"


def test_a_workspace_kept_factored_answers_what_the_pages_ask_as_in_memory(pool, tmp_path):
    """What the pages read besides a merge: each task's own accuracy, a row's importance, a forgetting vector,
    τJp's pair drops, a calibrated merge (SVC reads the tasks' layers), a task-specific method (TALL masks, EMR)
    and the keep panel's sparsity report."""
    from engine.merge.forgetting import forgetting_vector
    from engine.workspace import Workspace

    collection = load_collection(pool)
    memory, factored = (
        Workspace.from_collection(collection, cache_dir=tmp_path / s, store=s) for s in ("memory", "factored")
    )
    assert isinstance(factored.matrix.T, StoredRows) and factored.store_plan.backing == "factored"
    tasks = memory.task_names
    assert factored.finetuned("val") == memory.finetuned("val")
    codes = [ws.importance.task("shape", "tau").int() for ws in (memory, factored)]  # uint8 [P]: θ₀ + τ rounds apart
    assert (codes[0] - codes[1]).abs().max() <= 1 and (codes[0] != codes[1]).float().mean() < 0.01
    assert torch.allclose(forgetting_vector(factored, "size"), forgetting_vector(memory, "size"), atol=1e-6)
    drops = [ws.taujp.pair_drops(0.5) for ws in (memory, factored)]
    assert drops[0].keys() == drops[1].keys() and all(abs(drops[0][k] - drops[1][k]) < 1e-3 for k in drops[0])
    for method, calibrate in (("task_arithmetic", ("svc",)), ("tall_masks", ()), ("emr", ())):
        merged = [ws.compare(tasks, method, {}, calibrate=calibrate).merged.accuracy for ws in (memory, factored)]
        assert merged[0] == pytest.approx(merged[1], abs=1e-9), method
    reports = [ws.merges.sparsity(tasks, "ties", {}) for ws in (memory, factored)]
    assert reports[0].kept_fraction == reports[1].kept_fraction
    assert reports[0].sign_conflict == pytest.approx(reports[1].sign_conflict)
