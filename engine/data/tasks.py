"""Task datasets: labelled images held as uint8 [N, 3, H, W] tensors, normalised in batch.

On-disk formats, all read by `load_task` (engine/data/loading.py):
- packed: `<task>.safetensors` with `{split}.images` (uint8 [N, 3, H, W]) and `{split}.labels`
  (int64 [N]) for split in train/val/test, plus `<task>.json` (name, class_names, templates);
- image files, listed by class folders `<root>/<split>/<class>/*.png|jpg|...` (torchvision's
  ImageFolder layout) or by CSV files (engine/data/image_sets.py), optionally cached as packed files
  keyed by their content (engine/data/task_cache.py).
The "interactive" split is a fixed subset of val (a seeded choice of `INTERACTIVE_SIZE` images):
the dashboard tunes on it, reports use test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.data.suites import suite_task
from engine.errors import DatasetError
from engine.home import read_document
from engine.io.atomic import all_or_nothing
from engine.models import Preprocess

SPLITS = ("train", "val", "test")
INTERACTIVE_SIZE = 128
DEFAULT_TEMPLATES = ("a photo of a {}.",)


class TaskInfo(BaseModel):
    """The JSON beside a packed task file (or `task.json` beside image files)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: int = 1
    name: str = ""
    class_names: tuple[str, ...] = ()
    templates: tuple[str, ...] = DEFAULT_TEMPLATES


@dataclass(frozen=True)
class LabelledImages:
    images: torch.Tensor  # [N, 3, H, W] uint8
    labels: torch.Tensor  # [N] int64

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str) -> LabelledImages:
        return LabelledImages(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class TaskData:
    name: str
    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    splits: Mapping[str, LabelledImages]

    def split(self, name: str) -> LabelledImages:
        """train / val / test, or "interactive" (a fixed subset of val)."""
        if name == "interactive":
            val = self.split("val")
            idx = interactive_indices(len(val)).to(val.labels.device)
            return LabelledImages(val.images[idx], val.labels[idx])
        if name not in self.splits:
            raise DatasetError(
                self.name,
                f"has no split {name!r} (has {sorted(self.splits)})",
                fix="choose train, val, test or interactive",
            )
        return self.splits[name]

    def to(self, device: torch.device | str) -> TaskData:
        return replace(self, splits={k: v.to(device) for k, v in self.splits.items()})


def interactive_indices(num_val: int, *, size: int = INTERACTIVE_SIZE, seed: int = 0) -> torch.Tensor:
    """A fixed, sorted choice of min(size, num_val) val indices (same on every machine)."""
    perm = torch.randperm(num_val, generator=torch.Generator().manual_seed(seed))
    return perm[:size].sort().values  # [min(size, num_val)]


def normalize_batch(images: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 [B, 3, H, W] → float [B, 3, S, S] normalised as the architecture expects."""
    x = images.float().div_(255.0)  # [B, 3, H, W]
    if x.shape[-1] != pre.image_size or x.shape[-2] != pre.image_size:
        x = F.interpolate(
            x, size=(pre.image_size, pre.image_size), mode="bicubic", antialias=True, align_corners=False
        ).clamp_(0.0, 1.0)
    mean = torch.tensor(pre.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std  # [B, 3, S, S]


def save_task(task: TaskData, path: Path) -> None:
    """Write a packed task file and its JSON, together or not at all."""
    path = Path(path)
    tensors = {}
    for split, data in task.splits.items():
        tensors[f"{split}.images"] = data.images.contiguous().cpu()
        tensors[f"{split}.labels"] = data.labels.to(torch.int64).contiguous().cpu()
    info = TaskInfo(name=task.name, class_names=task.class_names, templates=task.templates)
    with all_or_nothing([path, path.with_suffix(".json")]) as (tmp_tensors, tmp_info):
        save_file(tensors, str(tmp_tensors))
        tmp_info.write_text(info.model_dump_json(indent=2), encoding="utf-8")


def load_packed_task(path: Path, *, name: str | None = None) -> TaskData:
    """A packed task file (`<task>.safetensors` + `<task>.json`), checked against its class names."""
    path = Path(path)
    info = read_task_info(path.with_suffix(".json"))
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise DatasetError(path, f"cannot be read ({exc})", fix="rebuild or copy the task file again") from exc
    splits = {}
    for split in SPLITS:
        images, labels = f"{split}.images", f"{split}.labels"
        if (images in tensors) != (labels in tensors):
            have, lack = (images, labels) if images in tensors else (labels, images)
            raise DatasetError(path, f"has {have} but no {lack}", fix="re-pack the task with both tensors per split")
        if images in tensors:
            splits[split] = LabelledImages(tensors[images], tensors[labels])
    if not splits:
        raise DatasetError(
            path,
            f"holds no split (keys {sorted(tensors)[:4]}; expected <split>.images and <split>.labels for "
            f"split in {', '.join(SPLITS)})",
            fix="re-pack the task with save_task",
        )
    task_name = name or info.name or path.stem
    return check_task(TaskData(task_name, info.class_names, task_templates(info, task_name), splits), path)


def read_task_info(path: Path) -> TaskInfo:
    """A packed task's JSON, or the `task.json` beside image files."""
    if not path.exists():
        raise DatasetError(path, "missing task JSON", fix="write name, class_names and templates as JSON there")
    text = read_document(path, error=DatasetError, fix="write name, class_names and templates as UTF-8 JSON")
    try:
        return TaskInfo.model_validate_json(text)
    except ValidationError as exc:
        raise DatasetError(
            path,
            f"invalid task JSON ({exc.error_count()} errors: {exc.errors()[0]['msg']})",
            fix="fields are name, class_names, templates",
        ) from exc


def task_templates(info: TaskInfo, task_name: str) -> tuple[str, ...]:
    """The JSON's templates when it lists any, else the suite task's (e.g. EuroSAT's), else the default."""
    suite = suite_task(task_name)
    if "templates" in info.model_fields_set or suite is None:
        return info.templates
    return suite.templates


def check_task(task: TaskData, source: Path) -> TaskData:
    num_classes = len(task.class_names)
    if num_classes < 2:
        raise DatasetError(source, "needs at least two class names", fix="list class_names in the task JSON")
    for split, data in task.splits.items():
        if data.images.dtype != torch.uint8 or data.images.ndim != 4 or data.images.shape[1] != 3:
            raise DatasetError(
                source,
                f"{split}.images must be uint8 [N, 3, H, W], got {data.images.dtype} {tuple(data.images.shape)}",
                fix="re-pack the task",
            )
        if data.labels.dtype != torch.int64 or data.labels.ndim != 1:
            raise DatasetError(
                source,
                f"{split}.labels must be int64 [N], got {data.labels.dtype} {tuple(data.labels.shape)}",
                fix="re-pack the task with integer class indices",
            )
        if data.images.shape[0] == 0:
            raise DatasetError(
                source,
                f"the {split} split holds no images (accuracy on it would be 0 of 0)",
                fix=f"add images to {split}, or leave the split out",
            )
        if len(data) != data.images.shape[0] or not 0 <= int(data.labels.min()) <= int(data.labels.max()) < num_classes:
            raise DatasetError(
                source,
                f"{split} labels do not fit {num_classes} classes or the image count",
                fix="check labels against class_names",
            )
    return task


def example_images(task: TaskData, *, split: str = "val", count: int = 8) -> tuple[list, list[str]]:
    """One image per class in turn (first of each class, then the second ...), up to `count`.

    Returns uint8 [H, W, 3] numpy arrays and their class names, ready for display.
    """
    data = task.split(split)
    labels = data.labels.cpu()  # [N]
    rank = torch.zeros_like(labels)  # [N] position of each image within its class
    for c in labels.unique():
        members = (labels == c).nonzero().squeeze(1)
        rank[members] = torch.arange(len(members))
    order = torch.argsort(rank * len(task.class_names) + labels, stable=True)[:count]  # [count]
    images = data.images.cpu()[order].permute(0, 2, 3, 1).numpy()  # [count, H, W, 3]
    return list(images), [task.class_names[int(i)] for i in labels[order]]
