"""Any task on disk, by its layout: a packed file, an image folder, a CSV file, a folder of split CSVs, or a
Hugging Face dataset (parquet, arrow or save_to_disk; engine/data/hf_datasets.py), also named `hf:<owner>/<name>`.

The packed format and the task types live in engine/data/tasks.py; image files are listed and decoded
by engine/data/image_sets.py and kept decoded by engine/data/task_cache.py. This module only dispatches,
so those three build on the types without importing each other in a circle.
"""

from __future__ import annotations

from pathlib import Path

from engine.data.hf_datasets import decode_hf_dataset, is_hf_dataset, is_hf_reference, resolve_hf, scan_hf_dataset
from engine.data.image_sets import ImageSet, decode_image_set, scan_image_set
from engine.data.native_arrays import array_layout, load_array_task
from engine.data.native_folders import folder_layout, scan_release
from engine.data.task_cache import load_cached
from engine.data.tasks import TaskData, check_task, load_packed_task
from engine.errors import DatasetError
from engine.home import PathPolicy, refuse_special


def load_task(
    path: Path | str,
    *,
    image_size: int | None = None,
    cache_dir: Path | None = None,
    name: str | None = None,
    policy: PathPolicy | None = None,
) -> TaskData:
    """Load a packed task file, an image folder, a CSV file, a folder of split CSVs or a Hugging Face dataset
    (its folder or file, or `hf:<owner>/<name>` looked up in the Hugging Face caches).

    `image_size` resizes and centre-crops image files (packed tasks are returned as stored).
    `cache_dir` keeps decoded image files as a packed task under `cache_dir/tasks/`, so the next
    load only hashes the files. `name` (the task's name in a pool, e.g. "EuroSAT") names the task
    and picks a suite task's templates and class names when the data's JSON gives none. `policy`
    checks every file read (the dashboard's confines them to the allowed roots; default: trusted).
    """
    path, policy = resolve_hf(str(path)) if is_hf_reference(path) else Path(path), policy or PathPolicy.trust_all()
    policy.check(path)
    if not path.exists():
        raise DatasetError(
            path,
            "no such task file or folder",
            fix="check the path; a task is <task>.safetensors + .json, a folder <split>/<class>/, "
            "or CSV files path,label[,split]",
        )
    refuse_special(path, fix="point at the task's file or folder itself")
    if is_hf_dataset(path):
        return _load_hf(path, image_size=image_size, cache_dir=cache_dir, name=name, policy=policy)
    task_name = name or path.name
    if (layout := array_layout(path, task_name)) is not None:
        return check_task(load_array_task(path, layout, name=task_name), path)
    if (layout := folder_layout(path, task_name)) is not None:
        image_set = scan_release(path, layout, name=task_name, policy=policy)
        return _load_image_set(image_set, path, image_size=image_size, cache_dir=cache_dir, policy=policy)
    if path.is_dir() or path.suffix.lower() == ".csv":
        return _load_image_files(path, image_size=image_size, cache_dir=cache_dir, name=name, policy=policy)
    policy.check(path.with_suffix(".json"))
    return load_packed_task(path, name=name)


def _load_image_files(
    path: Path, *, image_size: int | None, cache_dir: Path | None, name: str | None, policy: PathPolicy
) -> TaskData:
    image_set = scan_image_set(path, name=name, policy=policy)
    return _load_image_set(image_set, path, image_size=image_size, cache_dir=cache_dir, policy=policy)


def _load_image_set(
    image_set: ImageSet, path: Path, *, image_size: int | None, cache_dir: Path | None, policy: PathPolicy
) -> TaskData:
    def decode() -> TaskData:
        return check_task(decode_image_set(image_set, image_size=image_size, policy=policy), path)

    if cache_dir is None:
        return decode()
    return load_cached(image_set, image_size=image_size, cache_dir=Path(cache_dir), origin=path, decode=decode)


def _load_hf(
    path: Path, *, image_size: int | None, cache_dir: Path | None, name: str | None, policy: PathPolicy
) -> TaskData:
    dataset = scan_hf_dataset(path, name=name, policy=policy)

    def decode() -> TaskData:
        return check_task(decode_hf_dataset(dataset, image_size=image_size, policy=policy), path)

    if cache_dir is None:
        return decode()
    return load_cached(dataset, image_size=image_size, cache_dir=Path(cache_dir), origin=path, decode=decode)
