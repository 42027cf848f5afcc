"""Decoded image-file tasks kept as packed task files, keyed by everything that decides them.

Decoding and resizing thousands of JPEGs takes minutes; hashing their bytes takes seconds. The key
covers the decoder, the image size, the class names, the templates and every image's path, split,
label and sha256, so a changed, added or removed file gives a new key. The entry it replaces (same
dataset path, image size, class names and templates) could never be read again, so writing the new one
removes it; entries that differ in those stay. A `<key>.origin` file beside each entry records them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from engine.data.image_sets import ImageFile
from engine.data.tasks import TaskData, load_packed_task, save_task
from engine.errors import DatasetError
from engine.io.atomic import write_text_atomic

DECODER = "pil-rgb/bicubic-shorter-side/centre-crop/v1"  # change when decoding changes, to retire old entries


class Listed(Protocol):
    """A dataset listed before decoding: an ImageSet (image files) or an HFDataset (its shards as files)."""

    name: str
    class_names: tuple[str, ...]
    templates: tuple[str, ...]

    @property
    def files(self) -> Sequence[ImageFile]: ...


def cache_key(image_set: Listed, *, image_size: int | None) -> str:
    """32 hex digits of a sha256 over the decoder, image size, names, templates and every file."""
    digest = hashlib.sha256()
    head = {
        "decoder": DECODER,
        "image_size": image_size,
        "class_names": list(image_set.class_names),
        "templates": list(image_set.templates),
    }
    digest.update(json.dumps(head).encode())
    for entry in image_set.files:
        digest.update(json.dumps([entry.source, entry.split, entry.label, file_sha256(entry.file)]).encode())
    return digest.hexdigest()[:32]


def cached_task_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "tasks" / f"{key}.safetensors"


def load_cached(
    image_set: Listed, *, image_size: int | None, cache_dir: Path, origin: Path, decode: Callable[[], TaskData]
) -> TaskData:
    """The cached task when its key matches, else `decode()`, written to the cache (atomically), retiring
    the entries it supersedes: same `origin` (the dataset's path), image size, names and templates."""
    path = cached_task_path(cache_dir, cache_key(image_set, image_size=image_size))
    if path.is_file():
        try:
            return load_packed_task(path, name=image_set.name)
        except DatasetError:
            pass  # a damaged or half-replaced entry: decode again and overwrite it
    task = decode()
    save_task(task, path)
    _retire_superseded(path, image_set, origin=origin, image_size=image_size)
    return task


def _retire_superseded(entry: Path, image_set: Listed, *, origin: Path, image_size: int | None) -> None:
    """Delete the other entries decoded from the same origin with the same settings (only their files
    differed), then record the new entry's origin."""
    stamp = json.dumps(
        {
            "origin": str(Path(origin).resolve()),
            "image_size": image_size,
            "class_names": list(image_set.class_names),
            "templates": list(image_set.templates),
        }
    )
    for other in entry.parent.glob("*.origin"):
        if other.stem != entry.stem and other.read_text(encoding="utf-8") == stamp:
            for part in (other.with_suffix(".safetensors"), other.with_suffix(".json"), other):
                part.unlink(missing_ok=True)
    write_text_atomic(entry.with_suffix(".origin"), stamp)


def file_sha256(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise DatasetError(path, f"cannot be read ({exc})", fix="check the file's permissions, or remove it") from exc
