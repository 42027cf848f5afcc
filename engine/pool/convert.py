"""One-time conversion of a pool to the native format, so every later load is weights-only.

Foreign checkpoints (task_vectors pickles, tangent dicts, Hugging Face folders ...) are re-read, unpickled
by the restricted reader and re-detected on every open, and their caches are keyed by a file fingerprint.
`convert_pool` writes each one once as fp32 safetensors with a sidecar (content hash, architecture,
QuickGELU, task, variant, where it came from), so the converted collection opens from headers and sidecars:

    out/collection.json                         data paths point at the original datasets
    out/pretrained.safetensors (+ .json)        both towers when the source has the text tower
    out/finetuned/<task>.<name>.safetensors     every checkpoint name of every task (image tower)
    out/heads/<task>.safetensors                {"head": [C, E]}, for tasks with a head file

The folder is built as a hidden temporary sibling and renamed into place at the end: `out` appears
complete or not at all, and an existing `out` is never touched. What a native source derived from its
checkpoints (STA importance maps, τJp matrices, forgetting reports) is not carried over: it belongs to the
source files' hashes, and the data home recomputes it for the converted ones.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from engine.data.hf_datasets import is_hf_reference
from engine.data.tasks import read_task_info
from engine.errors import CheckpointError, DatasetError, OutputExistsError, SchemaError
from engine.eval.heads import load_head_file
from engine.io.atomic import atomic_path
from engine.io.checkpoints import Checkpoint, LazyCheckpoint, save_checkpoint
from engine.pool.collection import MANIFEST, CheckpointProgress, Collection, GeneratedData, visual_state

PRETRAINED_FILE = "pretrained.safetensors"


def convert_pool(collection: Collection, out: Path, *, on_checkpoint: CheckpointProgress | None = None) -> Path:
    """Write `collection` as a native collection folder at `out` (which must not exist); returns `out`.

    `on_checkpoint(done, total, label)` follows the checkpoints written ("pretrained", "<task>/<name>").
    """
    out = Path(out).expanduser().resolve()
    _refuse_existing(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        os.chmod(work, 0o755)  # mkdtemp makes the folder private; a collection is meant to be shared
        _write_collection(collection, work, out=out, on_checkpoint=on_checkpoint)
        _refuse_existing(out)  # created meanwhile by someone else: keep theirs
        os.rename(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def _refuse_existing(out: Path) -> None:
    if out.exists() or out.is_symlink():
        raise OutputExistsError(
            out,
            "already exists; a pool is converted into a new folder",
            fix="choose another output folder, or remove this one first",
        )


def _write_collection(
    collection: Collection, work: Path, *, out: Path, on_checkpoint: CheckpointProgress | None
) -> None:
    """Every file of the converted collection under `work`, paths in the manifest written as seen from `out`."""
    total = 1 + sum(len(collection.variants(t)) for t in collection.task_names)
    lender = collection.pretrained_lazy()
    pretrained = _write_pretrained(lender, work / PRETRAINED_FILE)
    if on_checkpoint is not None:
        on_checkpoint(1, total, "pretrained")
    done, tasks = 1, {}
    for task in collection.task_names:
        entry = collection.manifest.tasks[task]
        class_names = _class_names(collection, task)
        checkpoints = {}
        for name in collection.variants(task):
            relative = f"finetuned/{_file_stem(task, name)}.safetensors"
            checkpoint = collection.finetuned_lazy(task, name, pretrained=lender)
            _write_finetuned(checkpoint, work / relative, pretrained=pretrained, task=task, class_names=class_names)
            checkpoints[name] = relative
            done += 1
            if on_checkpoint is not None:
                on_checkpoint(done, total, f"{task}/{name}")
        head = None
        if entry.head is not None:
            head = f"heads/{_file_stem(task)}.safetensors"
            _write_head(collection.path(entry.head), work / head, num_classes=len(class_names) or None)
        indices = entry.validation_indices  # KnOTS' stored val indices, kept where they are
        indices = None if indices is None else _pointer(collection.path(indices), out=out)
        tasks[task] = {
            "data": _data_entry(collection, entry.data, out=out),
            "checkpoints": checkpoints,
            "head": head,
            "templates": list(entry.templates),
            "validation": entry.validation,
            "validation_indices": indices,
        }
    manifest = {
        "schema_version": 1,
        "name": collection.manifest.name,
        "description": f"converted from {collection.root}",
        "pretrained": PRETRAINED_FILE,
        "tasks": tasks,
    }
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _write_pretrained(lender: LazyCheckpoint, path: Path) -> Checkpoint:
    """Both towers when the source has the text tower (heads are built from it), else the image tower."""
    source = lender.load()
    meta = source.meta
    return save_checkpoint(
        path,
        source.state,
        dtype=torch.float32,
        architecture=meta.architecture,
        quick_gelu=meta.quick_gelu,
        tower=meta.tower,
        variant="pretrained",
        training=dict(meta.training),
        source=_source(lender),
    )


def _write_finetuned(
    lazy: LazyCheckpoint, path: Path, *, pretrained: Checkpoint, task: str, class_names: tuple[str, ...]
) -> None:
    """The image tower in fp32; a linearized checkpoint keeps its variant, so it is still evaluated as one."""
    if path.exists():
        raise SchemaError(
            path.name,
            "two checkpoints of the pool map to this file name",
            fix="rename one of the tasks or checkpoint names in the pool manifest",
        )
    meta = lazy.meta
    if meta.architecture != pretrained.meta.architecture:
        raise CheckpointError(
            lazy.path,
            f"is {meta.architecture}, the pool's pretrained model is {pretrained.meta.architecture}",
            fix="list only fine-tunes of the pool's model",
        )
    checkpoint = lazy.load()
    _check_linearized_at(lazy, visual_state(pretrained))
    save_checkpoint(
        path,
        visual_state(checkpoint),
        dtype=torch.float32,
        architecture=meta.architecture,
        quick_gelu=meta.quick_gelu,
        tower="visual",
        task=task,
        variant=meta.variant,
        class_names=meta.class_names or class_names,
        training=dict(meta.training),
        source=_source(lazy),
        parent_sha256=pretrained.sha256,
    )


def _check_linearized_at(lazy: LazyCheckpoint, theta0: dict[str, torch.Tensor]) -> None:
    """The converted file drops tangent's stored θ₀, so it must be the pool's θ₀ (checked whole, once)."""
    for name, stored in (lazy.linearized_at or {}).items():
        if name in theta0 and not torch.equal(stored.read(dtype=torch.float32), theta0[name].float()):
            raise CheckpointError(
                lazy.path,
                f"was linearized around another pretrained model ({name} differs)",
                fix="use the pool's pretrained model (its linear_zeroshot.pt / zeroshot.pt)",
            )


def _write_head(source: Path, path: Path, *, num_classes: int | None) -> None:
    head = load_head_file(source, num_classes=num_classes)  # [C, E]
    with atomic_path(path) as tmp:  # which also leaves it readable by others (0644), as the checkpoints
        save_file({"head": head.float().contiguous()}, str(tmp))


def _class_names(collection: Collection, task: str) -> tuple[str, ...]:
    """The task's class names when they cost no image decoding (task JSON, class folders, CSV labels), else ()."""
    from engine.data.image_sets import scan_image_set

    data = collection.manifest.tasks[task].data
    if isinstance(data, GeneratedData):
        return ()
    path = collection.path(data)
    try:
        if path.is_dir() or path.suffix.lower() == ".csv":
            return scan_image_set(path, name=task).class_names
        return read_task_info(path.with_suffix(".json")).class_names
    except DatasetError:
        return ()


def _data_entry(collection: Collection, data: str | GeneratedData, *, out: Path) -> str | dict:
    if isinstance(data, GeneratedData):
        return data.model_copy(
            update={"real_images": _pointer(collection.path(data.real_images), out=out)}
        ).model_dump()
    if is_hf_reference(data):  # hf:<owner>/<name>: looked up in the Hugging Face caches wherever the pool is
        return data
    return _pointer(collection.path(data), out=out)


def _pointer(target: Path, *, out: Path) -> str:
    """`target` relative to `out` when both lie in `out`'s parent folder (moving that folder keeps the link),
    else absolute (moving `out` alone keeps the link)."""
    if target.is_relative_to(out.parent):
        return os.path.relpath(target, out)
    return str(target)


def _source(checkpoint: LazyCheckpoint) -> str:
    return f"{checkpoint.format}: {checkpoint.path}"


def _file_stem(*parts: str) -> str:
    """`<task>[.<name>]`: names become file names, so they may not hold path separators."""
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\\" in part:
            raise SchemaError(
                part or "''",
                "cannot be part of a file name",
                fix="rename the task or checkpoint in the pool manifest (no '/' or '\\')",
            )
    return ".".join(parts)
