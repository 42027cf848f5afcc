"""Hugging Face datasets as researchers hold them, read with pyarrow one record batch at a time.

Three layouts (FusionBench loads every TALL20 dataset from the hub; its users have them on disk in these):
- parquet files, as the hub serves them: a snapshot folder of the hub cache
  (`<HF_HOME>/hub/datasets--<owner>--<name>/snapshots/<rev>/data/train-00000-of-00002.parquet`, symlinks into
  the repository's `blobs/`), or any folder or single file of parquet shards;
- the `datasets` processed cache (`<HF_HOME>/datasets/<owner>___<name>/<config>/<version>/<hash>/`:
  `<builder>-<split>[-00000-of-00004].arrow`, Arrow IPC streams, with `dataset_info.json`);
- `save_to_disk` folders (`dataset_dict.json`, `<split>/data-00000-of-00001.arrow`, `state.json`).
The split comes from the file name (`train-…`, `…-validation-…`) or its folder: train, validation (mergelab's
val) and test are read; other splits (corruptions, "unsupervised") are left out. The image column is the one
the `huggingface` schema metadata types `Image` (else `image`, `img`, `jpg`, `png`), each cell encoded bytes
or a path relative to the shard; the label column the `ClassLabel` one (else `label`, `labels`, `fine_label`,
`cls`). Class names come from that ClassLabel, found in the schema metadata, else in `dataset_info.json`,
else in the dataset card (README.md); a task named like a suite task (engine/data/suites.py) takes the suite's
class names, which the published heads were built from, and its ClassLabel must count as many classes.
`hf:<owner>/<name>` names a dataset in the hub cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
~/.cache/huggingface/hub), else in the processed cache (`HF_DATASETS_CACHE`, else `HF_HOME/datasets`).
Inside the hub cache a shard's symlink must stay inside its repository folder: anything else is refused.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from engine.data.image_sets import ImageFile, decode_image
from engine.data.suites import check_class_count, suite_task
from engine.data.tasks import DEFAULT_TEMPLATES, LabelledImages, TaskData
from engine.errors import DatasetError
from engine.home import PathPolicy

HF_PREFIX = "hf:"
SPLIT_NAMES = MappingProxyType({"train": "train", "validation": "val", "valid": "val", "val": "val", "test": "test"})
IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp")
LABEL_COLUMNS = ("label", "labels", "fine_label", "cls")
# rows converted to Python at once; pyarrow still reads a parquet row group whole (`datasets` writes them up to
# 100 MB), an Arrow stream is memory-mapped: memory is the decoded tensor plus one row group, never a whole shard
ROWS_PER_SLICE = 64
_SHARD_SPLIT = re.compile(r"(?:^|-)(train|validation|valid|val|test)(?:-\d+-of-\d+)?(?:-|\.|$)")
ARROW_ERRORS = (pa.ArrowException, OSError, ValueError)


@dataclass(frozen=True)
class Shard:
    file: Path
    split: str  # train, val or test
    kind: str  # "parquet" or "arrow" (an Arrow IPC stream)


@dataclass(frozen=True)
class HFDataset:
    """A Hugging Face dataset on disk before decoding: its shards, columns and class names."""

    name: str
    root: Path
    shards: tuple[Shard, ...]
    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    image_column: str
    label_column: str
    expected_rows: Mapping[str, int]  # split → rows dataset_info.json promises (when it says)

    @property
    def files(self) -> tuple[ImageFile, ...]:
        """The shards as the task cache keys files (engine/data/task_cache.py); a shard holds many images."""
        return tuple(ImageFile(s.file, f"{s.split}/{s.file.name}", s.split, -1) for s in self.shards)


def is_hf_reference(raw: str | Path) -> bool:
    return str(raw).startswith(HF_PREFIX)


def is_hf_dataset(path: Path) -> bool:
    """A parquet or arrow file, or a folder laid out as one of the three layouts."""
    path = Path(path)
    if path.is_file():
        return path.suffix in (".parquet", ".arrow")
    if not path.is_dir():
        return False
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return True
    if (path / "dataset_info.json").is_file() and any(path.glob("*.arrow")):
        return True
    return any(path.glob("*.parquet")) or any(path.glob("*/*.parquet")) or any(path.glob("*/*/*.parquet"))


def hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return _hf_home() / "hub"


def datasets_cache() -> Path:
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    return _hf_home() / "datasets"


def _hf_home() -> Path:
    return Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser()


def resolve_hf(reference: str) -> Path:
    """`hf:<owner>/<name>` → its newest snapshot in the hub cache, else its newest processed-cache folder."""
    dataset_id = reference.removeprefix(HF_PREFIX).strip("/")
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", dataset_id):
        raise DatasetError(reference, "is not a dataset id", fix="write hf:<owner>/<name>, e.g. hf:tanganke/sun397")
    repo = hub_cache() / f"datasets--{dataset_id.replace('/', '--')}"
    snapshot = cache_snapshot(repo)
    if snapshot is not None:
        return snapshot
    processed = datasets_cache() / dataset_id.replace("/", "___")
    infos = (
        sorted(processed.glob("*/*/*/dataset_info.json"), key=lambda p: p.stat().st_mtime) if processed.is_dir() else []
    )
    if infos:
        return infos[-1].parent
    raise DatasetError(
        reference,
        f"is in neither the hub cache ({repo}) nor the datasets cache ({processed})",
        fix=f"download it there (huggingface-cli download --repo-type dataset {dataset_id}), set HF_HOME to the "
        "cache that holds it, or give the dataset's folder as a path",
    )


def cache_snapshot(repo: Path) -> Path | None:
    """A hub cache repository's (`datasets--…` or `models--…`) refs/main snapshot, else its newest one."""
    if not (repo / "snapshots").is_dir():
        return None
    main = repo / "refs" / "main"
    if main.is_file() and (repo / "snapshots" / main.read_text(encoding="utf-8").strip()).is_dir():
        return repo / "snapshots" / main.read_text(encoding="utf-8").strip()
    snapshots = sorted((p for p in (repo / "snapshots").iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else None


def scan_hf_dataset(path: Path, *, name: str | None = None, policy: PathPolicy | None = None) -> HFDataset:
    """List a dataset's shards and read its schema and class names (no image decoded)."""
    path, policy = Path(path), policy or PathPolicy.trust_all()
    root = path if path.is_dir() else path.parent
    shards = _shards(path)
    if not shards:
        raise DatasetError(
            path,
            "holds no train, validation or test shard (.parquet or .arrow)",
            fix="point at the dataset's snapshot, processed-cache or save_to_disk folder",
        )
    for shard in shards:
        _check_link(shard.file, policy)
    features = _features(shards[0], root)
    image_column, label_column = _columns(shards[0], features)
    task_name = name or _dataset_name(root)
    class_names = _class_names(shards[0], features.get(label_column, {}), task_name)
    suite = suite_task(task_name)
    templates = suite.templates if suite else DEFAULT_TEMPLATES
    expected = _expected_rows(root)
    return HFDataset(task_name, root, tuple(shards), class_names, templates, image_column, label_column, expected)


def _shards(path: Path) -> list[Shard]:
    if path.is_file():
        return [Shard(path, _split_of(path) or "test", "parquet" if path.suffix == ".parquet" else "arrow")]
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        return [s for split in splits if split in SPLIT_NAMES for s in _saved_split(path / split, SPLIT_NAMES[split])]
    if (path / "state.json").is_file():
        return _saved_split(path, SPLIT_NAMES.get(path.name, "test"))
    files = sorted(path.glob("*.arrow")) or sorted(path.rglob("*.parquet"))
    shards = []
    for file in files:
        split = _split_of(file)
        if split is not None:
            shards.append(Shard(file, split, "parquet" if file.suffix == ".parquet" else "arrow"))
    return shards


def _saved_split(folder: Path, split: str) -> list[Shard]:
    """A save_to_disk split: state.json lists its arrow files in order."""
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    return [Shard(folder / entry["filename"], split, "arrow") for entry in state.get("_data_files", [])]


def _split_of(file: Path) -> str | None:
    """train / val / test from `train-00000-of-00002.parquet`, `sun397-validation.arrow`, or `…/test/0000.parquet`."""
    found = _SHARD_SPLIT.search(file.name.lower())
    if found is None and file.parent.name.lower() in SPLIT_NAMES:
        return SPLIT_NAMES[file.parent.name.lower()]
    return None if found is None else SPLIT_NAMES[found.group(1)]


def _check_link(file: Path, policy: PathPolicy) -> None:
    """Inside a hub cache repository (`datasets--<owner>--<name>/`) a shard's link must resolve inside it."""
    repo = next((p for p in file.parents if p.name.startswith("datasets--") and (p / "snapshots").is_dir()), None)
    if repo is not None and not file.resolve().is_relative_to(repo.resolve()):
        raise DatasetError(
            file,
            f"links to {file.resolve()}, outside its cache repository {repo}",
            fix="re-download the dataset so its snapshot links into its own blobs/ folder",
        )
    policy.check(file)
    if not file.is_file():
        raise DatasetError(file, "is missing (a broken link or an interrupted download)", fix="download it again")


def _schema(shard: Shard) -> pa.Schema:
    try:
        if shard.kind == "parquet":
            return pq.read_schema(shard.file)
        with pa.memory_map(str(shard.file)) as source:
            return pa.ipc.open_stream(source).schema
    except ARROW_ERRORS as exc:
        raise _unreadable(shard, exc) from exc


def _unreadable(shard: Shard, exc: Exception) -> DatasetError:
    return DatasetError(
        shard.file,
        f"cannot be read as {'a parquet file' if shard.kind == 'parquet' else 'an Arrow stream'} ({exc}): a truncated "
        "or damaged shard",
        fix="download the dataset again (delete this file first), or remove the shard",
    )


def _features(shard: Shard, root: Path) -> dict:
    """The `features` of the schema's `huggingface` metadata, else of dataset_info.json, else {}."""
    metadata = _schema(shard).metadata or {}
    if b"huggingface" in metadata:
        return json.loads(metadata[b"huggingface"]).get("info", {}).get("features", {})
    for info in (shard.file.parent / "dataset_info.json", root / "dataset_info.json"):
        if info.is_file():
            return json.loads(info.read_text(encoding="utf-8")).get("features", {})
    return {}


def _columns(shard: Shard, features: dict) -> tuple[str, str]:
    names = _schema(shard).names
    typed = {column: spec.get("_type") for column, spec in features.items() if isinstance(spec, dict)}
    image = next((c for c in names if typed.get(c) == "Image"), None) or next(
        (c for c in IMAGE_COLUMNS if c in names), None
    )
    label = next((c for c in names if typed.get(c) == "ClassLabel"), None) or next(
        (c for c in LABEL_COLUMNS if c in names), None
    )
    if image is None:
        raise DatasetError(
            shard.file, f"has no image column (columns {names})", fix=f"name it one of {', '.join(IMAGE_COLUMNS)}"
        )
    if label is None:
        raise DatasetError(
            shard.file,
            f"has no label column (columns {names}): mergelab evaluates classification tasks",
            fix=f"use a labelled dataset: a ClassLabel column or one named {', '.join(LABEL_COLUMNS)}",
        )
    return image, label


def _class_names(shard: Shard, label_spec: dict, task_name: str) -> tuple[str, ...]:
    """The suite's names for a suite task (its ClassLabel, when known, counting as many), else the ClassLabel's,
    else the dataset card's."""
    names = tuple(label_spec.get("names") or ()) or _card_names(shard.file)
    suite = suite_task(task_name)
    if suite is not None:
        if names:
            check_class_count(shard.file, suite, len(names))
        return suite.class_names
    if not names:
        raise DatasetError(
            shard.file,
            "names no classes (no ClassLabel in its metadata, dataset_info.json or dataset card)",
            fix="name the task after its suite task (e.g. SUN397), or use a dataset with a ClassLabel column",
        )
    return names


def _card_names(file: Path) -> tuple[str, ...]:
    """ClassLabel names from the dataset card (README.md YAML `dataset_info.features[].dtype.class_label`)."""
    card = next((p / "README.md" for p in file.parents if (p / "README.md").is_file()), None)
    if card is None:
        return ()
    match = re.match(r"---\n(.*?)\n---", card.read_text(encoding="utf-8", errors="replace"), re.S)
    try:
        header = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError:
        return ()
    infos = (header or {}).get("dataset_info", [])
    for info in infos if isinstance(infos, list) else [infos]:
        for feature in info.get("features", []) if isinstance(info, dict) else []:
            names = (
                (feature.get("dtype") or {}).get("class_label", {}).get("names") if isinstance(feature, dict) else None
            )
            if isinstance(names, dict):
                return tuple(str(names[k]) for k in sorted(names, key=lambda k: int(k)))
    return ()


def _dataset_name(root: Path) -> str:
    """`datasets--tanganke--sun397/snapshots/<rev>` or `tanganke___sun397/default/0.0.0/<hash>` → `sun397`."""
    for part in reversed(root.parts):
        if part.startswith("datasets--"):
            return part.split("--")[-1]
        if "___" in part:
            return part.split("___")[-1]
    return root.name


def _expected_rows(root: Path) -> dict[str, int]:
    info = root / "dataset_info.json"
    if not info.is_file():
        return {}
    splits = json.loads(info.read_text(encoding="utf-8")).get("splits") or {}
    return {
        SPLIT_NAMES[s]: int(v["num_examples"]) for s, v in splits.items() if s in SPLIT_NAMES and "num_examples" in v
    }


def decode_hf_dataset(dataset: HFDataset, *, image_size: int | None, policy: PathPolicy | None = None) -> TaskData:
    """Decode every split present, one record batch (and a slice of it) at a time."""
    policy = policy or PathPolicy.trust_all()
    splits = {}
    for split in ("train", "val", "test"):
        shards = [s for s in dataset.shards if s.split == split]
        if shards:
            splits[split] = _decode_split(dataset, shards, image_size=image_size, policy=policy)
    return TaskData(dataset.name, dataset.class_names, dataset.templates, splits)


def _batches(shard: Shard, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches of a shard: parquet read `ROWS_PER_SLICE` rows (and only `columns`) at a time, an Arrow
    stream memory-mapped batch by batch."""
    try:
        if shard.kind == "parquet":
            yield from pq.ParquetFile(shard.file).iter_batches(batch_size=ROWS_PER_SLICE, columns=columns)
            return
        with pa.memory_map(str(shard.file)) as source:
            yield from pa.ipc.open_stream(source)
    except ARROW_ERRORS as exc:
        raise _unreadable(shard, exc) from exc


def _row_count(shard: Shard) -> int:
    if shard.kind == "parquet":
        try:
            return pq.ParquetFile(shard.file).metadata.num_rows
        except ARROW_ERRORS as exc:
            raise _unreadable(shard, exc) from exc
    return sum(batch.num_rows for batch in _batches(shard))  # memory-mapped: no copy


def _decode_split(
    dataset: HFDataset, shards: list[Shard], *, image_size: int | None, policy: PathPolicy
) -> LabelledImages:
    split = shards[0].split
    count = sum(_row_count(s) for s in shards)
    if count == 0:
        raise DatasetError(shards[0].file, f"the {split} shards hold no rows", fix="remove them, or download again")
    expected = dataset.expected_rows.get(split)
    if expected is not None and expected != count:
        raise DatasetError(
            shards[-1].file,
            f"the {split} shards hold {count} rows, dataset_info.json says {expected}: a truncated or missing shard",
            fix="download or prepare the dataset again",
        )
    images: torch.Tensor | None = None  # [count, 3, H, W] uint8, allocated from the first image
    labels = torch.empty(count, dtype=torch.int64)  # [count]
    row = 0
    for shard in shards:
        for batch in _batches(shard, [dataset.image_column, dataset.label_column]):
            for start in range(0, batch.num_rows, ROWS_PER_SLICE):
                part = batch.slice(start, ROWS_PER_SLICE)
                cells = part.column(dataset.image_column).to_pylist()
                values = part.column(dataset.label_column).to_pylist()
                for cell, value in zip(cells, values):
                    where = f"{shard.file}, row {row}"
                    image = _image(cell, shard, where=where, image_size=image_size, policy=policy)  # [3, H, W]
                    if images is None:
                        images = torch.empty((count, *image.shape), dtype=torch.uint8)
                    elif image.shape != images.shape[1:]:
                        raise DatasetError(
                            where,
                            f"is {image.shape[2]}×{image.shape[1]} while the first {split} image is "
                            f"{images.shape[3]}×{images.shape[2]}",
                            fix="load with image_size=<model input size> so they are resized",
                        )
                    if value is None:
                        raise DatasetError(where, "has no label", fix="label every row, or remove the row")
                    images[row], labels[row] = image, int(value)
                    row += 1
    return LabelledImages(images, labels)


def _image(cell, shard: Shard, *, where: str, image_size: int | None, policy: PathPolicy) -> torch.Tensor:
    """An image cell: {"bytes": ..., "path": ...} (the Image feature), or raw bytes."""
    data, relative = (cell.get("bytes"), cell.get("path")) if isinstance(cell, dict) else (cell, None)
    if data is not None:
        return decode_image(io.BytesIO(data), where=where, image_size=image_size)
    if not relative:
        raise DatasetError(where, "has neither image bytes nor an image path", fix="remove the row")
    file = Path(relative) if Path(relative).is_absolute() else shard.file.parent / relative
    policy.check(file, shown=where)
    if not file.is_file():
        raise DatasetError(where, f"names the image {file}, which does not exist", fix="restore it, or remove the row")
    with policy.open_file(file, shown=where) as handle:
        return decode_image(handle, where=file, image_size=image_size)
