"""A Hugging Face hub cache holding FusionBench's per-task fine-tunes (`models--tanganke--<base>_<task>`), their
base model (`models--openai--<base>`) and the tasks' datasets opens as a pool without a manifest, and
`pool show` names the suite and the checkpoint family."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.data import random_split

from engine.cli import main
from engine.data.suites import suite_task
from engine.errors import DatasetError, SchemaError
from engine.pool.collection import load_collection, task_matrix
from engine.pool.convert import convert_pool
from engine.pool.info import checkpoint_family, pool_checkpoints
from tests.builders import TINY_ARCH
from tests.foreign import _write_hf, tiny_source, write_hf_vision
from tests.hf_fixtures import REVISION, cache_repo, dataset_dict, write_fusion_bench_cache, write_processed_cache

BASE = "clip-vit-tiny"
TASKS = {"eurosat": suite_task("EuroSAT").class_names, "kmnist": suite_task("KMNIST").class_names}


@pytest.fixture(scope="module")
def source():
    return tiny_source(TINY_ARCH, TASKS, seed=5)


def _hub_cache(hub, scratch, source) -> None:
    write_fusion_bench_cache(
        hub,
        scratch,
        base=BASE,
        architecture=TINY_ARCH,
        pretrained=source["pretrained"],
        finetuned=source["finetuned"],
        datasets_of={
            "eurosat": ("tanganke/eurosat", {"train": list(range(10)) * 2, "test": [3, 9]}),
            "kmnist": ("tanganke/kmnist", {"train": list(range(10)) * 2, "test": [7]}),
        },
    )


def test_a_fusion_bench_hub_cache_is_a_pool(tmp_path, source, data_home, capsys):
    hub = tmp_path / "hub"
    _hub_cache(hub, tmp_path / "scratch", source)
    collection = load_collection(hub)
    assert collection.manifest.name == BASE and collection.task_names == ("eurosat", "kmnist")
    eurosat = collection.task_data("eurosat")
    assert [eurosat.class_names[i] for i in eurosat.split("test").labels] == ["highway or road", "lake or sea"]
    # val drawn from train as FusionBench's val configuration for EuroSAT draws it (KMNIST has none: task_vectors')
    kept, val = random_split(range(20), [18, 2], generator=torch.Generator().manual_seed(0))
    assert eurosat.split("val").labels.tolist() == [i % 10 for i in val]
    assert eurosat.split("train").labels.tolist() == [i % 10 for i in kept]
    kmnist = collection.task_data("kmnist")
    assert kmnist.split("test").labels.tolist() == [7] and len(kmnist.split("val")) == 2
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tmp_path)]}))
    assert main(["pool", "show", str(hub)]) == 0
    shown = capsys.readouterr().out
    assert "suite: 2 of TALL20's 20 tasks (missing SUN397, Cars, RESISC45, SVHN, GTSRB, MNIST" in shown
    assert "; checkpoints: FusionBench" in shown
    assert any(line.split()[:2] == ["eurosat/standard", "hf_clip"] for line in shown.splitlines())

    converted = load_collection(convert_pool(collection, tmp_path / "converted"))  # the profile travels along
    assert converted.manifest.tasks["eurosat"].validation == "fusion_bench"
    assert converted.task_data("eurosat").split("val").labels.tolist() == [i % 10 for i in val]

    write_hf_vision(tmp_path / "other", source["finetuned"]["kmnist"], TINY_ARCH, projection=False)
    _write_hf(tmp_path / "other-base", source["pretrained"], TINY_ARCH, quick_gelu=True)
    cache_repo(hub, "model", "openai/clip-vit-small", tmp_path / "other-base")
    cache_repo(hub, "model", "tanganke/clip-vit-small_mnist", tmp_path / "other")
    with pytest.raises(SchemaError, match=r"holds fine-tunes of 2 base models in its hub cache \(clip-vit-small"):
        load_collection(hub)


def test_a_manifest_names_its_data_by_hub_id_and_its_validation_profile(tmp_path, source, monkeypatch):
    """`data: hf:<owner>/<name>` in a pool manifest is looked up in the Hugging Face cache (HF_HUB_CACHE here);
    `validation` draws val as the named profile does, its indices file relative to the manifest."""
    hub = tmp_path / "hub"
    _hub_cache(hub, tmp_path / "scratch", source)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    snapshots = {p.parent.parent.name: p for p in hub.glob("models--*/snapshots/*")}
    eurosat = {
        "checkpoint": str(snapshots[f"models--tanganke--{BASE}_eurosat"]),
        "data": "hf:tanganke/eurosat",
        "validation": "task_vectors",
    }
    manifest = {"pretrained": str(snapshots[f"models--openai--{BASE}"]), "tasks": {"EuroSAT": eurosat}}
    (tmp_path / "pool.json").write_text(json.dumps(manifest))
    task = load_collection(tmp_path / "pool.json").task_data("EuroSAT")
    assert task.name == "EuroSAT" and task.class_names == suite_task("EuroSAT").class_names
    assert task.split("test").labels.tolist() == [3, 9]
    assert len(task.split("val")) == 2 and len(task.split("train")) == 18  # min(int(0.1 · 20), 5000) = 2
    eurosat.update({"data": "hf:tanganke/kmnist", "validation": "knots", "validation_indices": "kmnist_idxs.npy"})
    np.save(tmp_path / "kmnist_idxs.npy", np.arange(1))
    (tmp_path / "pool.json").write_text(json.dumps(manifest).replace('"EuroSAT"', '"KMNIST"'))
    with pytest.raises(DatasetError, match="KMNIST: has no knots validation split"):
        load_collection(tmp_path / "pool.json").task_data("KMNIST")


def test_a_hub_cache_pool_finds_a_dataset_in_the_processed_cache_beside_it(tmp_path, source):
    """HF_HOME/hub holds the models, HF_HOME/datasets what `datasets.load_dataset` prepared."""
    hub = tmp_path / "hf-home" / "hub"
    _hub_cache(hub, tmp_path / "scratch", source)
    for repo in hub.glob("datasets--tanganke--kmnist"):
        shutil.rmtree(repo)
    labels = {"train": list(range(10)) * 2, "test": [4, 2]}
    write_processed_cache(
        tmp_path / "hf-home" / "datasets", "tanganke/kmnist", dataset_dict(TASKS["kmnist"], labels), tmp_path / "p"
    )
    kmnist = load_collection(hub).task_data("kmnist")
    assert kmnist.split("test").labels.tolist() == [4, 2] and len(kmnist.split("val")) == 2


def test_knots_lora_adapters_in_a_hub_cache_are_a_pool_of_their_base(tmp_path, source):
    """KnOTS' released adapters (`hoffman-lab/KnOTS-ViT-B-32_lora_R16_<task>`: PEFT folders saved from the bare
    CLIPVisionTransformer, as KnOTS' prepare_hf_clip loads them) pair with `openai/clip-vit-base-patch32` by the
    architecture in their repository name; each task vector is the adapter's s·B·A, as PEFT merges it."""
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    hub, scratch, base = tmp_path / "hub", tmp_path / "scratch", "clip-vit-base-patch32"  # a tiny tower named so
    labels = {"eurosat": ("tanganke/eurosat", {"train": list(range(10)), "test": [3]})}
    write_fusion_bench_cache(
        hub,
        scratch,
        base=base,
        architecture=TINY_ARCH,
        pretrained=source["pretrained"],
        finetuned={},
        datasets_of=labels,
    )
    torch.manual_seed(4)
    tower = transformers.CLIPModel.from_pretrained(
        hub / f"models--openai--{base}" / "snapshots" / REVISION
    ).vision_model
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
    adapted = peft.get_peft_model(tower, replace(config, init_lora_weights=False))
    adapted.save_pretrained(scratch / "knots")
    merged = {k: v.detach().clone() for k, v in adapted.merge_and_unload().state_dict().items()}
    cache_repo(hub, "model", "hoffman-lab/KnOTS-ViT-B-32_lora_R4_eurosat", scratch / "knots")
    collection = load_collection(hub)
    assert collection.task_names == ("eurosat",) and collection.manifest.description.startswith("KnOTS")
    assert checkpoint_family(pool_checkpoints(collection)) == "KnOTS"  # what `pool show` says
    matrix = task_matrix(collection)
    q, out = "transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.attn.out_proj.weight"
    width = matrix.spec.shapes[matrix.spec.names.index(out)][0]
    theta = matrix.theta0 + matrix.T[0]
    assert torch.allclose(
        matrix.spec.matrix_view(theta, out), merged["encoder.layers.0.self_attn.out_proj.weight"], atol=1e-6
    )
    got_q = matrix.spec.matrix_view(theta, q)[:width]
    assert torch.allclose(got_q, merged["encoder.layers.0.self_attn.q_proj.weight"], atol=1e-6)
