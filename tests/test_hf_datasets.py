"""Hugging Face datasets as researchers hold them: parquet in a hub cache (`hf:<owner>/<name>`), the
`datasets` processed cache and save_to_disk folders, each giving the right image, label and class name for a
known row; and bad input (no labels, a ClassLabel the suite disagrees with, a truncated shard, a blob link
leaving the cache) refused with the file and the fix."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from engine.data import load_task
from engine.data.suites import suite_task
from engine.errors import DatasetError
from tests.hf_fixtures import dataset_dict, png, write_hub_cache, write_processed_cache

NAMES = ("cat", "dog", "bird")
LABELS = {"train": [0, 1, 2, 1], "validation": [2, 0], "test": [1, 2, 0]}


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    return home


def _pixel(task, split: str, row: int) -> list[int]:
    return task.split(split).images[row, :, 0, 0].tolist()


def _check_known_rows(task) -> None:
    assert {s: len(task.split(s)) for s in ("train", "val", "test")} == {"train": 4, "val": 2, "test": 3}
    assert task.split("train").labels.tolist() == LABELS["train"]
    assert _pixel(task, "train", 2) == [2, 20, 1]  # row 2 of train, label 2, split code 1
    assert _pixel(task, "val", 1) == [1, 0, 2] and task.class_names[int(task.split("val").labels[1])] == "cat"
    assert task.split("test").images.shape == (3, 3, 5, 6)


def test_parquet_in_the_hub_cache_by_id_and_by_path(hf_home, tmp_path):
    snapshot = write_hub_cache(hf_home / "hub", "someone/pets", dataset_dict(NAMES, LABELS))
    task = load_task("hf:someone/pets")
    assert task.name == "pets" and task.class_names == NAMES and task.templates == ("a photo of a {}.",)
    _check_known_rows(task)
    by_path = load_task(snapshot, name="Pets")
    assert by_path.name == "Pets" and torch.equal(by_path.split("test").images, task.split("test").images)
    cached = load_task("hf:someone/pets", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "tasks").glob("*.safetensors"))) == 1
    again = load_task("hf:someone/pets", cache_dir=tmp_path / "cache")
    assert torch.equal(again.split("train").images, cached.split("train").images)
    with pytest.raises(DatasetError, match=r"hf:someone/absent: is in neither the hub cache .* Fix: download it"):
        load_task("hf:someone/absent")


def test_processed_cache_and_save_to_disk(hf_home, tmp_path):
    data = dataset_dict(NAMES, LABELS)
    folder = write_processed_cache(hf_home / "datasets", "someone/pets", data, tmp_path / "scratch")
    assert sorted(p.name for p in folder.glob("*.arrow")) == [
        "parquet-test.arrow",
        "parquet-train.arrow",
        "parquet-validation.arrow",
    ]
    _check_known_rows(load_task("hf:someone/pets"))  # no hub snapshot: the processed cache
    data.save_to_disk(str(tmp_path / "saved"))
    saved = load_task(tmp_path / "saved")
    _check_known_rows(saved)
    assert saved.name == "saved" and saved.class_names == NAMES


def test_a_suite_task_takes_the_suite_names_and_its_class_count(hf_home):
    eurosat = suite_task("EuroSAT")
    folders = (
        "AnnualCrop",
        "Forest",
        "HerbaceousVegetation",
        "Highway",
        "Industrial",
        "Pasture",
        "PermanentCrop",
        "Residential",
        "River",
        "SeaLake",
    )
    write_hub_cache(hf_home / "hub", "tanganke/eurosat", dataset_dict(folders, {"test": [3, 9]}))
    task = load_task("hf:tanganke/eurosat")
    assert task.name == "eurosat" and task.class_names == eurosat.class_names and task.templates == eurosat.templates
    assert [task.class_names[i] for i in task.split("test").labels] == ["highway or road", "lake or sea"]
    snapshot = write_hub_cache(hf_home / "hub", "someone/gtsrb-subset", dataset_dict(NAMES, {"test": [0]}))
    with pytest.raises(DatasetError, match=r"test-00000-of-00001\.parquet: has 3 classes, but GTSRB has 43"):
        load_task(snapshot, name="GTSRB")


def test_images_as_paths_and_class_names_from_the_card(tmp_path):
    """A parquet file written by pyarrow alone: image paths relative to it, labels as plain integers, the
    class names in the dataset card."""
    (tmp_path / "ds" / "images").mkdir(parents=True)
    for i in range(2):
        (tmp_path / "ds" / "images" / f"{i}.png").write_bytes(png(i, 7, 7))
    table = pa.table({"image": [{"bytes": None, "path": f"../images/{i}.png"} for i in range(2)], "label": [1, 0]})
    (tmp_path / "ds" / "data").mkdir()
    pq.write_table(table, tmp_path / "ds" / "data" / "test-00000-of-00001.parquet")
    card = "---\ndataset_info:\n  features:\n  - name: label\n    dtype:\n      class_label:\n        names:\n"
    (tmp_path / "ds" / "README.md").write_text(card + "          '0': left\n          '1': right\n---\n# toy\n")
    task = load_task(tmp_path / "ds")
    assert task.class_names == ("left", "right") and task.split("test").labels.tolist() == [1, 0]
    assert _pixel(task, "test", 1) == [1, 7, 7]


def test_bad_input_names_the_file_and_the_fix(hf_home, tmp_path):
    unlabelled = tmp_path / "unlabelled" / "train-00000-of-00001.parquet"
    unlabelled.parent.mkdir()
    pq.write_table(pa.table({"image": [{"bytes": png(1, 1, 1), "path": None}]}), unlabelled)
    with pytest.raises(DatasetError, match=r"train-00000-of-00001\.parquet: has no label column \(columns \['image'\]"):
        load_task(unlabelled.parent)

    snapshot = write_hub_cache(hf_home / "hub", "someone/pets", dataset_dict(NAMES, LABELS))
    shard = snapshot / "data" / "train-00000-of-00001.parquet"
    blob = shard.resolve()
    blob.write_bytes(blob.read_bytes()[:-100])  # an interrupted download
    with pytest.raises(
        DatasetError, match=r"train-00000-of-00001\.parquet: cannot be read as a parquet file .*truncated"
    ):
        load_task("hf:someone/pets")

    outside = tmp_path / "elsewhere.parquet"
    outside.write_bytes(b"PAR1")
    shard.unlink()
    os.symlink(outside, shard)
    with pytest.raises(DatasetError, match=r"links to .*elsewhere\.parquet, outside its cache repository"):
        load_task("hf:someone/pets")

    saved = tmp_path / "saved"
    dataset_dict(NAMES, LABELS).save_to_disk(str(saved))
    stream = saved / "test" / "data-00000-of-00001.arrow"
    stream.write_bytes(stream.read_bytes()[:-40])
    with pytest.raises(
        DatasetError, match=r"data-00000-of-00001\.arrow: cannot be read as an Arrow stream .*Fix: download"
    ):
        load_task(saved)


def test_a_short_split_against_dataset_info(hf_home, tmp_path):
    folder = write_processed_cache(hf_home / "datasets", "someone/pets", dataset_dict(NAMES, LABELS), tmp_path / "s")
    info = json.loads((folder / "dataset_info.json").read_text())
    info["splits"]["train"]["num_examples"] = 5
    (folder / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"the train shards hold 4 rows, dataset_info\.json says 5"):
        load_task(folder)
