"""Small Hugging Face datasets in the layouts researchers hold, written by `datasets` and pyarrow themselves:
parquet shards in a hub cache (snapshot symlinks into blobs/), the `datasets` processed cache and a
save_to_disk folder. Row i of a split is a 6×5 PNG whose first pixel is (i, 10·label, split code)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path

import datasets
import torch
from PIL import Image

from engine.data.suites import suite_task
from tests.foreign import _write_hf, write_hf_vision

SPLIT_CODE = {"train": 1, "validation": 2, "test": 3}
REVISION = "0123456789abcdef0123456789abcdef01234567"


def png(red: int, green: int, blue: int, *, size: tuple[int, int] = (6, 5)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (red, green, blue)).save(buffer, format="PNG")
    return buffer.getvalue()


def dataset_dict(class_names: tuple[str, ...], labels: dict[str, list[int]]) -> datasets.DatasetDict:
    """One split per key of `labels` (train, validation, test), images tracing their row, label and split."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(class_names))})
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {
                    "image": [{"bytes": png(i, 10 * y, SPLIT_CODE[split]), "path": None} for i, y in enumerate(rows)],
                    "label": rows,
                },
                features=features,
            )
            for split, rows in labels.items()
        }
    )


def write_hub_cache(hub: Path, dataset_id: str, data: datasets.DatasetDict) -> Path:
    """`hub/datasets--<owner>--<name>/`: one parquet shard per split as the hub serves them
    (`data/<split>-00000-of-00001.parquet`), in the cache layout. Returns the snapshot folder."""
    staging = hub / ".staging" / dataset_id
    for split, part in data.items():
        (staging / "data").mkdir(parents=True, exist_ok=True)
        part.to_parquet(str(staging / "data" / f"{split}-00000-of-00001.parquet"))
    snapshot = cache_repo(hub, "dataset", dataset_id, staging)
    shutil.rmtree(hub / ".staging")
    return snapshot


def cache_repo(hub: Path, kind: str, repo_id: str, source: Path) -> Path:
    """Move the files of `source` into `hub/<kind>s--<owner>--<name>/` as the hub client lays them out: blobs
    named by sha256, snapshot symlinks, refs/main. Returns the snapshot folder."""
    repo = hub / f"{kind}s--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    (repo / "blobs").mkdir()
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(file), blob)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return snapshot


def write_processed_cache(cache: Path, dataset_id: str, data: datasets.DatasetDict, scratch: Path) -> Path:
    """`cache/<owner>___<name>/default/0.0.0/<hash>/`: what `datasets.load_dataset` prepares (here from parquet
    files, so offline), moved to where a hub dataset's preparation puts it. Returns that folder."""
    source = scratch / "parquet-source"
    for split, part in data.items():
        (source / "data").mkdir(parents=True, exist_ok=True)
        part.to_parquet(str(source / "data" / f"{split}-00000-of-00001.parquet"))
    datasets.load_dataset("parquet", data_dir=str(source), cache_dir=str(scratch / "prepared"))
    prepared = next((scratch / "prepared").glob("parquet/*/*/*/dataset_info.json")).parent
    target = cache / dataset_id.replace("/", "___") / "default" / "0.0.0" / prepared.name
    target.parent.mkdir(parents=True)
    shutil.move(str(prepared), target)
    return target


def write_fusion_bench_cache(
    hub: Path,
    scratch: Path,
    *,
    base: str,
    architecture: str,
    pretrained: dict[str, torch.Tensor],
    finetuned: dict[str, dict[str, torch.Tensor]],
    datasets_of: dict[str, tuple[str, dict[str, list[int]]]],
) -> None:
    """FusionBench's pool in a hub cache: `models--openai--<base>` (a CLIPModel), `models--tanganke--<base>_<task>`
    (CLIPVisionModel fine-tunes, image-tower state dicts in `finetuned`) and per task the dataset
    `datasets_of[task] = (dataset id, {split: labels})`, with the suite task's class names as its ClassLabel."""
    _write_hf(scratch / "base", pretrained, architecture, quick_gelu=True)
    cache_repo(hub, "model", f"openai/{base}", scratch / "base")
    for task, visual in finetuned.items():
        write_hf_vision(scratch / task, visual, architecture, projection=False)
        cache_repo(hub, "model", f"tanganke/{base}_{task}", scratch / task)
    for task, (dataset_id, labels) in datasets_of.items():
        write_hub_cache(hub, dataset_id, dataset_dict(suite_task(task).class_names, labels))
