"""A Hugging Face hub cache holding FusionBench's per-task fine-tunes (`models--tanganke--<base>_<task>`), their
base model (`models--openai--<base>`) and the tasks' datasets opens as a pool without a manifest, and
`pool show` names the suite and the checkpoint family."""

import json

import pytest

from engine.cli import main
from engine.data.suites import suite_task
from engine.errors import SchemaError
from engine.pool.collection import load_collection
from tests.builders import TINY_ARCH
from tests.foreign import _write_hf, tiny_source, write_hf_vision
from tests.hf_fixtures import cache_repo, write_fusion_bench_cache

BASE = "clip-vit-tiny"
TASKS = {"eurosat": suite_task("EuroSAT").class_names, "mnist": suite_task("MNIST").class_names}


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
        datasets_of={"eurosat": ("tanganke/eurosat", [3, 9]), "mnist": ("ylecun/mnist", [7])},
    )


def test_a_fusion_bench_hub_cache_is_a_pool(tmp_path, source, data_home, capsys):
    hub = tmp_path / "hub"
    _hub_cache(hub, tmp_path / "scratch", source)
    collection = load_collection(hub)
    assert collection.manifest.name == BASE and collection.task_names == ("eurosat", "mnist")
    eurosat = collection.task_data("eurosat")
    assert [eurosat.class_names[i] for i in eurosat.split("test").labels] == ["highway or road", "lake or sea"]
    assert collection.task_data("mnist").split("test").labels.tolist() == [7]
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tmp_path)]}))
    assert main(["pool", "show", str(hub)]) == 0
    shown = capsys.readouterr().out
    assert (
        "suite: 2 of TA8's 8 tasks (missing SUN397, Cars, RESISC45, SVHN, GTSRB, DTD); checkpoints: FusionBench"
        in shown
    )
    assert any(line.split()[:2] == ["eurosat/standard", "hf_clip"] for line in shown.splitlines())

    write_hf_vision(tmp_path / "other", source["finetuned"]["mnist"], TINY_ARCH, projection=False)
    _write_hf(tmp_path / "other-base", source["pretrained"], TINY_ARCH, quick_gelu=True)
    cache_repo(hub, "model", "openai/clip-vit-small", tmp_path / "other-base")
    cache_repo(hub, "model", "tanganke/clip-vit-small_mnist", tmp_path / "other")
    with pytest.raises(SchemaError, match=r"holds fine-tunes of 2 base models in its hub cache \(clip-vit-small"):
        load_collection(hub)


def test_a_manifest_names_its_data_by_hub_id(tmp_path, source, monkeypatch):
    """`data: hf:<owner>/<name>` in pool.yaml is looked up in the Hugging Face cache (HF_HUB_CACHE here)."""
    hub = tmp_path / "hub"
    _hub_cache(hub, tmp_path / "scratch", source)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    snapshots = {p.parent.parent.name: p for p in hub.glob("models--*/snapshots/*")}
    manifest = {
        "pretrained": str(snapshots[f"models--openai--{BASE}"]),
        "tasks": {
            "EuroSAT": {
                "checkpoint": str(snapshots[f"models--tanganke--{BASE}_eurosat"]),
                "data": "hf:tanganke/eurosat",
            }
        },
    }
    (tmp_path / "pool.json").write_text(json.dumps(manifest))
    collection = load_collection(tmp_path / "pool.json")
    task = collection.task_data("EuroSAT")
    assert task.name == "EuroSAT" and task.class_names == suite_task("EuroSAT").class_names
    assert task.split("test").labels.tolist() == [3, 9]
