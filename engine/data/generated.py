"""Zoo tasks regenerated from their seeds instead of shipped: a collection entry names the generator,
task and seed, and the real images come from the small npz in assets/. The first load writes the
task to the data home's cache (keyed by generator version, task, seed and the npz's sha256), so
later starts read it back in milliseconds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from engine.data.splits import subsampled
from engine.data.tasks import LabelledImages, TaskData, load_packed_task, save_task
from engine.errors import DatasetError


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def generated_task(
    task: str, *, seed: int, real_images: Path, cache_dir: Path | None, images_per_split: int | None = None
) -> TaskData:
    """Build (or read from the cache) zoo task `task` with `seed`; with `images_per_split`, its val and test
    cut to that many images each, every class in proportion (a smoke-sized zoo: the cache holds the whole task)."""
    data = _whole_generated_task(task, seed=seed, real_images=real_images, cache_dir=cache_dir)
    return data if images_per_split is None else subsampled(data, images_per_split, seed=0)


def _whole_generated_task(task: str, *, seed: int, real_images: Path, cache_dir: Path | None) -> TaskData:
    from engine.data.generators import GENERATOR_VERSION, build_task
    from engine.data.real_images import load_real_images

    key = json.dumps({"v": GENERATOR_VERSION, "task": task, "seed": seed, "real": file_sha256(real_images)})
    file = None
    if cache_dir is not None:
        file = Path(cache_dir) / "tasks" / f"{task}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
        if file.is_file():
            return load_packed_task(file)
    try:
        real = load_real_images(real_images)
    except (FileNotFoundError, ValueError) as exc:
        raise DatasetError(
            real_images,
            str(exc).removeprefix(f"{real_images}: "),
            fix="run `python -m engine zoo extract-real` (needs scikit-learn and scikit-image)",
        ) from exc
    arrays = build_task(task, real=real, seed=seed)
    data = TaskData(
        name=arrays.name,
        class_names=tuple(arrays.class_names),
        templates=tuple(arrays.templates),
        splits={s: LabelledImages(arrays.images[s], arrays.labels[s]) for s in arrays.images},
    )
    if file is not None:
        save_task(data, file)
    return data
