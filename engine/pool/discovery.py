"""Model pools: the folders and manifests researchers bring, opened as collections.

A pool is one pretrained encoder and N fine-tuned ones (any format of engine/io/formats), each task with a
dataset and, when the pretrained file has no text tower, a head file. `load_collection` accepts:
- a folder with collection.json (the native format, files with sidecars);
- a pool manifest, YAML or JSON (a file, or pool.yaml / pool.yml / pool.json in a folder):

      name: my-pool                  # optional (default: the folder's name)
      architecture: ViT-B-32         # optional: detected from the tensors' shapes
      quick_gelu: true               # optional: from the files (HF config, task_vectors classes), else false
      data_root: /data               # optional: a task's data defaults to <data_root>/<task>
      pretrained: zeroshot.pt
      tasks:
        EuroSAT:
          checkpoint: EuroSAT/finetuned.pt          # or checkpoints: {standard: ..., linearized: ...}
          data: data/EuroSAT                        # image folder, CSV, or packed task file
          head: head_EuroSAT.pt                     # optional when the pretrained has a text tower
          templates: ["a centered satellite photo of {}."]   # optional
          validation: task_vectors                  # optional: draw val as task_vectors / fusion_bench / knots do

- a folder without a manifest, discovered by layout (`discover_pool`): the task_vectors / tangent /
  TALL-masks release (`zeroshot.pt`, `<Task>[Val]/{finetuned,linear_finetuned,nonlinear_finetuned}.pt`,
  `head_<Task>[Val].pt`), or a flat pool (`pretrained.*` plus `finetuned/<task>.*` or Hugging Face model
  folders), with datasets under `data/<task>` or `datasets/<task>`;
- a Hugging Face hub cache holding FusionBench's fine-tunes (`models--tanganke--clip-vit-base-patch32_<task>`)
  and their base (`models--openai--clip-vit-base-patch32`): each task's data is its dataset in the same cache
  (`datasets--tanganke--<task>`, by the suite task's dataset ids, engine/data/suites.py) or in the processed
  cache beside it (`../datasets/tanganke___<task>/`), else `data/<task>`,
  its val split drawn from train as FusionBench's val configurations draw it (task_vectors' way where it has none).
A task's fine-tune may be a PEFT LoRA adapter folder (`<Task>/` or `finetuned/<task>/` with
adapter_config.json) of the pretrained model.
Relative paths resolve against the manifest's folder.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from engine.data.hf_datasets import cache_snapshot
from engine.data.splits import PROFILES
from engine.data.suites import suite_task
from engine.errors import SchemaError
from engine.home import nesting, read_document, special_kind
from engine.io.formats import HF_WEIGHTS, is_model_folder
from engine.io.formats.peft_adapter import is_peft_adapter

POOL_MANIFESTS = ("pool.yaml", "pool.yml", "pool.json")
PRETRAINED_NAMES = ("zeroshot", "linear_zeroshot", "nonlinear_zeroshot", "pretrained", "base")
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
FINETUNED_FILES = {
    "finetuned": "standard",
    "nonlinear_finetuned": "standard",
    "linear_finetuned": "linearized",
    "model": "standard",
}
DATA_FOLDERS = ("data", "datasets")
NO_TASKS = "names no task (tasks: {}); give at least one task with its data and fine-tuned checkpoints"
NOT_TASKS = {*DATA_FOLDERS, "heads", "finetuned", *PRETRAINED_NAMES}


class PoolTask(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    checkpoint: str | None = None
    checkpoints: dict[str, str] = {}
    data: str | None = None
    head: str | None = None
    templates: tuple[str, ...] = ()
    validation: str | None = None  # a validation split profile (engine/data/splits.py)
    validation_indices: str | None = None  # its stored indices file (knots)

    @model_validator(mode="after")
    def _one_checkpoint_at_least(self) -> PoolTask:
        if self.checkpoint is None and not self.checkpoints:
            raise ValueError("give `checkpoint: <file>` or `checkpoints: {name: <file>}`")
        return self


class PoolManifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = ""
    description: str = ""
    architecture: str | None = None
    quick_gelu: bool | None = None
    data_root: str | None = None
    pretrained: str
    tasks: dict[str, PoolTask]

    @field_validator("tasks")
    @classmethod
    def _some_task(cls, tasks: dict[str, PoolTask]) -> dict[str, PoolTask]:
        """A pool without tasks has nothing to merge or evaluate (see CollectionManifest)."""
        if not tasks:
            raise ValueError(NO_TASKS)
        return tasks

    def collection_manifest(self, *, default_name: str) -> dict[str, Any]:
        """The equivalent collection.json document (engine/pool/collection.py's schema)."""
        tasks = {}
        for name, task in self.tasks.items():
            data = task.data or (f"{self.data_root.rstrip('/')}/{name}" if self.data_root else None)
            if data is None:
                raise SchemaError(name, "has no dataset", fix=f"give tasks.{name}.data, or data_root for all tasks")
            checkpoints = dict(task.checkpoints) or {"standard": task.checkpoint}
            tasks[name] = {
                "data": data,
                "checkpoints": checkpoints,
                "head": task.head,
                "templates": task.templates,
                "validation": task.validation,
                "validation_indices": task.validation_indices,
            }
        return {
            "schema_version": 1,
            "name": self.name or default_name,
            "description": self.description,
            "pretrained": self.pretrained,
            "tasks": tasks,
            "architecture": self.architecture,
            "quick_gelu": self.quick_gelu,
        }


def read_pool_manifest(file: Path) -> dict[str, Any]:
    """A pool manifest (YAML or JSON) as a collection.json document; errors name the file and the field."""
    text = read_document(file, fix="write it as UTF-8 YAML or JSON (README, 'Opening your own models')")
    try:
        raw = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, RecursionError, yaml.YAMLError) as exc:  # RecursionError: nested thousands deep
        raise SchemaError(file, f"cannot be parsed ({nesting(exc)})", fix="write valid YAML or JSON") from exc
    try:
        manifest = PoolManifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "document"
        raise SchemaError(
            file,
            f"invalid pool manifest: {where}: {first['msg']}",
            fix="see the pool manifest format in README ('Opening your own models')",
        ) from exc
    return manifest.collection_manifest(default_name=file.parent.name)


@dataclass(frozen=True)
class Skipped:
    """One entry discovery left out of a pool: a folder or file that looks like a task's fine-tune but yields no
    readable checkpoint. Left unsaid it would just be one task fewer; `open_for_user` refuses the pool naming
    it unless the user explicitly goes on without it (`--skip-unreadable`, the dashboard's confirmation)."""

    task: str  # the task (or task variant) it would have given
    entry: str  # the folder ("<name>/") or file, relative to the pool
    reason: str
    fix: str

    def __str__(self) -> str:
        return f"{self.entry}: {self.reason} (skipped). Fix: {self.fix}"


@dataclass(frozen=True)
class DiscoveredPool:
    """A collection.json document for a pool folder, and what discovery left out of it, with why."""

    document: dict[str, Any]
    skipped: tuple[Skipped, ...] = ()


def discover_pool(folder: Path) -> DiscoveredPool:
    """The pool in a folder laid out like the task_vectors release or a flat pool (or described by its
    pool.yaml / pool.yml / pool.json)."""
    folder = Path(folder)
    manifest = next((folder / n for n in POOL_MANIFESTS if (folder / n).exists()), None)
    if manifest is not None:
        return DiscoveredPool(read_pool_manifest(manifest))
    if any(folder.glob("models--*--*")):
        return _hub_cache_pool(folder)
    checkpoints, skipped = _task_checkpoints(folder)
    pretrained = _pretrained(folder, checkpoints)
    if pretrained is None or not checkpoints:
        raise SchemaError(
            folder,
            "is not a pool: found "
            + (f"{len(checkpoints)} fine-tuned checkpoints and " + ("a" if pretrained else "no") + " pretrained model")
            + "".join(f"; {s.entry}: {s.reason}" for s in skipped[:3]),
            fix="lay it out as <root>/zeroshot.pt + <root>/<Task>/finetuned.pt (task_vectors), or "
            "write pool.yaml (README, 'Opening your own models')",
        )
    tasks = {}
    for task, found in checkpoints.items():
        data = _data_path(folder, task)
        if data is None:
            raise SchemaError(
                folder,
                f"has no dataset for task {task!r}",
                fix=f"put its images under {folder / 'data' / task}/<split>/<class>/, or write "
                "pool.yaml with tasks.<task>.data",
            )
        head = _head_path(folder, task) or _adapter_head(folder, found.get("standard"))
        tasks[task] = {"data": data, "checkpoints": found, "head": head}
    document = {
        "schema_version": 1,
        "name": folder.name,
        "pretrained": pretrained,
        "tasks": tasks,
        "description": "discovered by layout",
    }
    return DiscoveredPool(document, tuple(skipped))


def _task_checkpoints(folder: Path) -> tuple[dict[str, dict[str, str]], list[Skipped]]:
    """Task → {checkpoint name: relative path} from <Task>[Val]/ subfolders and finetuned/<task>.* files, and
    the folders and files that look like fine-tunes but were left out (see `Skipped`)."""
    found: dict[str, dict[str, str]] = {}
    skipped: list[Skipped] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.lower() not in NOT_TASKS):
        if sub.name.startswith((".", "__")):
            continue
        task = _task_name(sub.name)
        if ((sub / "config.json").is_file() and is_model_folder(sub)) or is_peft_adapter(sub):
            found.setdefault(task, {})["standard"] = sub.name  # a Hugging Face model folder or a PEFT LoRA adapter
            continue
        for stem, name in FINETUNED_FILES.items():
            file = _checkpoint_file(sub, stem)
            unreadable = None if file is None else _unreadable_file(file, task, f"{sub.name}/{file.name}")
            if unreadable is not None:
                skipped.append(unreadable)
            elif file is not None:
                found.setdefault(task, {}).setdefault(name, f"{sub.name}/{file.name}")
        if task not in found and not any(s.entry.startswith(f"{sub.name}/") for s in skipped):
            reason = _why_no_checkpoint(sub, folder)
            if reason is not None:
                skipped.append(Skipped(task, f"{sub.name}/", reason, _FIX_FOLDER))
    flat, flat_skipped = _flat_checkpoints(folder)
    for task, relative in flat.items():
        found.setdefault(task, {})["standard"] = relative
    return found, skipped + flat_skipped


def _flat_checkpoints(folder: Path) -> tuple[dict[str, str], list[Skipped]]:
    """Task → relative path of finetuned/<task>.* files and Hugging Face folders, and the entries left out."""
    flat = folder / "finetuned"
    found: dict[str, str] = {}
    skipped: list[Skipped] = []
    for file in sorted(p for p in flat.iterdir() if not p.name.startswith(".")) if flat.is_dir() else ():
        task = _task_name(file.name if file.is_dir() else file.stem)
        unreadable = None if file.is_dir() else _unreadable_file(file, task, f"finetuned/{file.name}")
        if unreadable is not None:
            skipped.append(unreadable)
        elif file.suffix in CHECKPOINT_SUFFIXES or is_model_folder(file) or is_peft_adapter(file):
            found[task] = f"finetuned/{file.name}"
        elif file.is_dir():
            reason = _why_no_checkpoint(file, folder) or f"holds none of {', '.join(HF_WEIGHTS)}"
            skipped.append(Skipped(task, f"finetuned/{file.name}/", reason, _FIX_FOLDER))
    return found, skipped


_EMPTY = "is an empty file (an interrupted copy or download?)"
_FIX_FOLDER = (
    "put the fine-tune there as finetuned.pt (or a Hugging Face folder with its weights), or name it in pool.yaml"
)


def _why_no_checkpoint(sub: Path, root: Path) -> str | None:
    """Why a folder that looks like a task's fine-tune holds none that discovery reads; None when it does not
    look like one (a folder of notes or logs beside the pool)."""
    entries = [p for p in sub.iterdir() if not p.name.startswith(".")]
    shards = sorted(p.name for p in entries if p.name.endswith(".index.json"))
    if shards:
        return f"holds sharded weights ({shards[0]}); mergelab reads one model.safetensors or pytorch_model.bin"
    if (sub / "config.json").is_file():
        return f"has config.json but none of {', '.join(HF_WEIGHTS)}"
    others = sorted(p.name for p in entries if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    if others:
        expected = ", ".join(f"{stem}.pt" for stem in FINETUNED_FILES)
        return f"holds {', '.join(others[:3])} but none of {expected} (the name says which file is the fine-tune)"
    if not entries:
        return "is empty"
    if _data_path(root, _task_name(sub.name)) is not None:
        return "has a dataset but no fine-tuned checkpoint"
    return None


def _unreadable_file(file: Path, task: str, entry: str) -> Skipped | None:
    """Why a file where a fine-tune belongs cannot be one, without opening it: a named pipe, socket or device
    (reading a pipe would block), or an empty checkpoint file; None when it may be read."""
    kind = special_kind(file)
    if kind is not None:
        return Skipped(task, entry, f"is {kind}, not a checkpoint file", "put the checkpoint file itself there")
    if file.suffix in CHECKPOINT_SUFFIXES and file.is_file() and file.stat().st_size == 0:
        return Skipped(task, entry, _EMPTY, "copy or download it again")
    return None


def _pretrained(folder: Path, checkpoints: dict[str, dict[str, str]]) -> str | None:
    for stem in PRETRAINED_NAMES:
        file = _checkpoint_file(folder, stem)
        if file is not None:
            return file.name
        if is_model_folder(folder / stem):
            return stem
    for task_folder in sorted(folder.iterdir()):  # tangent keeps zeroshot.pt in every <Task>Val/ folder
        if task_folder.is_dir() and _task_name(task_folder.name) in checkpoints:
            for stem in PRETRAINED_NAMES[:3]:
                file = _checkpoint_file(task_folder, stem)
                if file is not None:
                    return f"{task_folder.name}/{file.name}"
    return None


def _checkpoint_file(folder: Path, stem: str) -> Path | None:
    """The first <stem>.<suffix> there that is not a folder (a pipe or device too: refused by name, not passed over)."""
    return next((folder / f"{stem}{s}" for s in CHECKPOINT_SUFFIXES if _not_a_folder(folder / f"{stem}{s}")), None)


def _not_a_folder(path: Path) -> bool:
    return path.exists() and not path.is_dir()


def _data_path(folder: Path, task: str) -> str | None:
    for data in DATA_FOLDERS:
        for name in (task, task.lower(), f"{task}Val", f"{task}.csv", f"{task.lower()}.csv"):
            if (folder / data / name).exists():
                return f"{data}/{name}"
    return None


def _head_path(folder: Path, task: str) -> str | None:
    for name in (f"head_{task}.pt", f"head_{task}Val.pt", f"heads/{task}.safetensors", f"heads/{task}.pt"):
        if _not_a_folder(folder / name):  # a pipe there is refused by name when the head is read
            return name
    return None


def _adapter_head(folder: Path, relative: str | None) -> str | None:
    """A LoRA adapter's `modules_to_save` head is its task's head (engine/eval/heads.py reads it from the folder)."""
    from engine.io.formats.peft_adapter import read_adapter

    adapter = None if relative is None or not is_peft_adapter(folder / relative) else folder / relative
    return relative if adapter is not None and read_adapter(adapter).head else None


def _task_name(name: str) -> str:
    """task_vectors' training folders carry a "Val" suffix (EuroSATVal): the task is EuroSAT."""
    return name[:-3] if name.endswith("Val") and len(name) > 3 else name


def _hub_snapshots(folder: Path, kind: str) -> dict[tuple[str, str], Path]:
    """(owner, name) → snapshot folder of each `<kind>--<owner>--<name>` repository holding one."""
    found = {}
    for repo in sorted(folder.glob(f"{kind}--*--*")):
        _, owner, name = repo.name.split("--", 2)
        snapshot = cache_snapshot(repo)
        if snapshot is not None:
            found[(owner, name)] = snapshot
    return found


KNOTS_REPO = re.compile(r"^KnOTS-(?P<arch>ViT-[BL]-\d+)_lora_R\d+_(?P<task>.+)$")  # hoffman-lab's adapters
KNOTS_BASES = {
    "ViT-B-32": "clip-vit-base-patch32",
    "ViT-B-16": "clip-vit-base-patch16",
    "ViT-L-14": "clip-vit-large-patch14",
}


def _hub_cache_pool(folder: Path) -> DiscoveredPool:
    """A hub cache of one base model `<base>` and its fine-tunes: FusionBench's `<base>_<task>` model folders, or
    KnOTS' LoRA adapters (`hoffman-lab/KnOTS-ViT-B-32_lora_R16_<task>`, PEFT folders on the base's image tower)."""
    snapshots = _hub_snapshots(folder, "models")
    models = {key: snap for key, snap in snapshots.items() if is_model_folder(snap)}
    bases = {name: snap for (_, name), snap in models.items() if "_" not in name}
    tuned: dict[str, dict[str, Path]] = {}
    for (_, name), snapshot in models.items():
        base, _, task = name.partition("_")
        if task and base in bases:
            tuned.setdefault(base, {})[task] = snapshot
    for (_, name), snapshot in snapshots.items():
        knots = KNOTS_REPO.match(name)
        if knots and is_peft_adapter(snapshot) and KNOTS_BASES.get(knots["arch"]) in bases:
            tuned.setdefault(KNOTS_BASES[knots["arch"]], {})[knots["task"]] = snapshot
    if len(tuned) != 1:
        raise SchemaError(
            folder,
            f"holds fine-tunes of {len(tuned)} base models in its hub cache ({', '.join(sorted(tuned)) or 'none'})",
            fix="keep one base model's family there (models--<owner>--<base> and models--<owner>--<base>_<task>), "
            "or write pool.yaml naming the checkpoints",
        )
    ((base, tasks),) = tuned.items()
    datasets = {f"{o}/{n}".lower(): snap for (o, n), snap in _hub_snapshots(folder, "datasets").items()}
    entries = {}
    for task, snapshot in tasks.items():
        data = _hub_dataset(folder, task, datasets) or _data_path(folder, task)
        if data is None:
            raise SchemaError(
                folder,
                f"has no dataset for task {task!r}",
                fix=f"put it in the same hub cache (e.g. huggingface-cli download --repo-type dataset "
                f"tanganke/{task}) or under {folder / 'data' / task}",
            )
        entries[task] = {
            "data": data,
            "checkpoints": {"standard": str(snapshot.relative_to(folder))},
            "head": None,
            "validation": _fusion_bench_validation(task),
        }
    document = {
        "schema_version": 1,
        "name": base,
        "pretrained": str(bases[base].relative_to(folder)),
        "tasks": entries,
        "description": f"{_hub_family(tasks.values())} in a Hugging Face hub cache",
    }
    return DiscoveredPool(document)


def _hub_family(snapshots) -> str:
    """Whose fine-tunes a hub cache pool holds, by their repositories' owners."""
    owners = {snapshot.parent.parent.name.split("--")[1] for snapshot in snapshots}
    return "KnOTS' LoRA adapters" if owners == {"hoffman-lab"} else "FusionBench checkpoints"


def _fusion_bench_validation(task: str) -> str:
    """FusionBench draws val from train for the tasks of its val configurations; mergelab draws the others'
    as task_vectors does (FusionBench defines none), so every task has the val split the dashboard tunes on."""
    known = suite_task(task)
    return "fusion_bench" if known is not None and known.name in PROFILES["fusion_bench"].tasks else "task_vectors"


def _hub_dataset(folder: Path, task: str, datasets: dict[str, Path]) -> str | None:
    """The task's dataset (by its suite task's dataset ids) in the hub cache, else in the `datasets` processed
    cache beside it (`HF_HOME/hub` and `HF_HOME/datasets`), as a path relative to the hub cache."""
    known = suite_task(task)
    for dataset_id in known.hub_ids if known else ():
        if dataset_id.lower() in datasets:
            return str(datasets[dataset_id.lower()].relative_to(folder))
        prepared = folder.parent / "datasets" / dataset_id.replace("/", "___")
        infos = sorted(prepared.glob("*/*/*/dataset_info.json"), key=lambda p: p.stat().st_mtime)
        if infos:
            return os.path.relpath(infos[-1].parent, folder)
    return None
