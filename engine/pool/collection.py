"""A collection: one pretrained CLIP, task datasets, and fine-tuned image towers per task and variant.

It is the model pool and the task pool in one manifest, `collection.json`:
    {"schema_version": 1, "name": "...", "pretrained": "pretrained.safetensors",
     "tasks": {"digits": {"data": "tasks/digits.safetensors",
                          "checkpoints": {"standard": "finetuned/digits.standard.safetensors"}}}}
Paths are relative to the manifest's folder; instead of a path, "data" may be a generator entry
{"task": "size", "seed": 1003, "real_images": "real_images.npz"} (the demo zoo regenerates its tasks),
and "importance" may name shipped STA importance maps per kind ({"tau": "importance/digits.tau.safetensors"}).
Variants (standard, linearized, tau_jp, ...) are keys, so a later build adds one without touching what exists.
The shipped demo zoo is one collection.
Checkpoints a user fine-tunes are written to the data home, never into a collection: `with_finetunes`
adds those of the same pretrained model (`finetune_folder`) as further names of each task, so every
page lists them beside the shipped ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from engine.data.hf_datasets import is_hf_reference
from engine.data.loading import load_task
from engine.data.splits import with_validation
from engine.data.tasks import TaskData
from engine.errors import CheckpointError, DatasetError, SchemaError
from engine.eval.heads import cached_head, load_head_file
from engine.eval.suite import EvalSuite
from engine.home import PathPolicy, nesting, read_document
from engine.io.checkpoints import (
    Checkpoint,
    CheckpointMeta,
    LazyCheckpoint,
    open_checkpoint,
    read_sidecar,
    sidecar_path,
)
from engine.io.formats.peft_adapter import CONFIG as ADAPTER_CONFIG
from engine.io.verified import VerifiedFiles, file_stamp
from engine.models import create_visual, expected_visual_shapes, preprocess_of
from engine.params import ParamSpec, TaskMatrix, flatten
from engine.pool.discovery import NO_TASKS, Skipped
from engine.store.built import BuiltStore, open_built_store, store_header
from engine.store.factored import LowRankRow
from engine.store.lazy import CheckpointRow
from engine.store.rows import RowStore, TaskRow

MANIFEST = "collection.json"
CheckpointProgress = Callable[[int, int, str], None]  # (checkpoints read, of total, task)
ROW_READERS = 2  # checkpoints read at once: parsing one overlaps copying another (file reads release the GIL)


class GeneratedData(BaseModel):
    """A task regenerated from its seed (the demo zoo's), instead of a file."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    generator: Literal["mergelab-zoo"] = "mergelab-zoo"
    task: str
    seed: int
    real_images: str  # npz with the real source images, relative to the manifest
    images_per_split: int | None = None  # val and test cut to this many images each (a smoke-sized zoo)


class TaskEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    data: str | GeneratedData  # a task file/folder/CSV path, or a generator entry
    checkpoints: dict[str, str] = {}  # name → checkpoint file (any format of engine/io/formats) or HF folder
    importance: dict[str, str] = {}  # STA importance kind ("tau", "theta") → map of the standard checkpoint
    head: str | None = None  # zero-shot head file (task_vectors head_<D>.pt or [C, E] safetensors)
    templates: tuple[str, ...] = ()  # prompt templates overriding the data's own
    validation: str | None = None  # draw val as this profile does (engine/data/splits.py: task_vectors, ...)
    validation_indices: str | None = None  # the profile's stored indices file (knots)


class CollectionManifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: Literal[1] = 1
    name: str
    description: str = ""
    pretrained: str
    tasks: dict[str, TaskEntry]
    forgetting_report: str | None = None  # stored forgetting sweeps (engine/zoo/sta.py), if any
    taujp_matrix: str | None = None  # stored τJp matrix of the standard checkpoints (engine/taujp/matrix.py), if any
    taujp_variants: dict[str, str] = {}  # variant → stored τJp matrix of that variant's checkpoints
    variant_tables: dict[str, str] = {}  # variant → stored table of merges of that variant's checkpoints (lora.json)
    architecture: str | None = None  # for checkpoints without a sidecar: else detected from shapes
    quick_gelu: bool | None = None  # for checkpoints without a sidecar: else what the files say
    warm: str | None = None  # folder of first-open caches shipped with it (engine/jobs/warm.py), if any

    @field_validator("tasks")
    @classmethod
    def _some_task(cls, tasks: dict[str, TaskEntry]) -> dict[str, TaskEntry]:
        """Every page and command works on tasks (evaluation concatenates their images, merges stack their
        task vectors): a collection without one is refused here, not deep inside torch."""
        if not tasks:
            raise ValueError(NO_TASKS)
        return tasks


@dataclass(frozen=True)
class Collection:
    root: Path
    manifest: CollectionManifest
    verified: VerifiedFiles | None = None  # remembers sidecar'd checkpoints already hash-checked (with_verified)
    skipped: tuple[Skipped, ...] = ()  # what discovery left out, and why (open_for_user refuses it unless told)
    policy: PathPolicy = field(default_factory=PathPolicy.trust_all)  # checks every file read for the user

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(self.manifest.tasks)

    def with_validation(self, profile: str) -> Collection:
        """The same collection with every task's val split drawn as `profile` draws it (the benchmark's
        `--val-profile`; engine/data/splits.py), whatever its manifest says."""
        tasks = {t: e.model_copy(update={"validation": profile}) for t, e in self.manifest.tasks.items()}
        return replace(self, manifest=self.manifest.model_copy(update={"tasks": tasks}))

    def path(self, relative: str) -> Path:
        """A path the manifest names, resolved, and checked against the policy's roots (the dashboard's)."""
        return self.policy.check((self.root / relative).resolve(), shown=self.root / relative)

    def _checkpoint_files(self, path: Path) -> Path:
        """`path` (a checkpoint file or folder) with its sidecar and every file of a folder checked too: an HF
        folder's model.safetensors or a sidecar may be a symlink pointing anywhere."""
        if self.policy.confined:
            for file in [sidecar_path(path), *(path.rglob("*") if path.is_dir() else ())]:
                if file.exists():
                    self.policy.check(file)
        return path

    def _confined(self, lazy: LazyCheckpoint) -> LazyCheckpoint:
        """Under a confining policy, every tensor read opens its file through the policy (descriptor checked)."""
        return lazy.opened_by(self.policy.open_file) if self.policy.confined else lazy

    def with_policy(self, policy: PathPolicy) -> Collection:
        """This collection reading every file under `policy` (open_for_user gives the caller's)."""
        return replace(self, policy=policy)

    def variants(self, task: str) -> tuple[str, ...]:
        return tuple(self._entry(task).checkpoints)

    def pretrained(self) -> Checkpoint:
        """The pretrained model, read whole (its text tower, when it has one, builds zero-shot heads)."""
        return self.pretrained_lazy().load()

    def pretrained_lazy(self) -> LazyCheckpoint:
        return self._confined(
            open_checkpoint(
                self._checkpoint_files(self.path(self.manifest.pretrained)),
                variant="pretrained",
                verified=self.verified,
                **self._overrides(),
            )
        )

    def finetuned(self, task: str, variant: str = "standard") -> Checkpoint:
        return self.finetuned_lazy(task, variant).load()

    def finetuned_lazy(
        self, task: str, variant: str = "standard", *, pretrained: LazyCheckpoint | None = None
    ) -> LazyCheckpoint:
        """One fine-tuned checkpoint, located but not read (a foreign HF fine-tune borrows the pretrained `proj`)."""
        return self._confined(
            open_checkpoint(
                self._checkpoint_files(self._checkpoint_path(task, variant)),
                task=task,
                fill_from=(lambda: pretrained) if pretrained else self.pretrained_lazy,
                verified=self.verified,
                **self._overrides(),
            )
        )

    def _overrides(self) -> dict:
        return {"architecture": self.manifest.architecture, "quick_gelu": self.manifest.quick_gelu}

    def finetuned_sha256(self, task: str, variant: str = "standard") -> str:
        """The checkpoint's tensors_sha256 from its sidecar (verified when the checkpoint is loaded)."""
        return self.checkpoint_meta(task, variant).tensors_sha256

    def importance_path(self, task: str, kind: str) -> Path | None:
        """The shipped STA importance map of `task`'s standard checkpoint, if the collection has one."""
        relative = self._entry(task).importance.get(kind)
        return None if relative is None else self.path(relative)

    def task_data(self, task: str, *, image_size: int | None = None, cache_dir: Path | None = None) -> TaskData:
        """The task's images: read from its file or folder, or regenerated (and cached) from its seed."""
        data = self._entry(task).data
        if isinstance(data, GeneratedData):
            from engine.data.generated import generated_task

            return generated_task(
                data.task,
                seed=data.seed,
                real_images=self.path(data.real_images),
                cache_dir=cache_dir,
                images_per_split=data.images_per_split,
            )
        source = data if is_hf_reference(data) else self.path(data)  # hf:<owner>/<name>: the HF caches
        task_data = load_task(source, image_size=image_size, cache_dir=cache_dir, name=task, policy=self.policy)
        entry = self._entry(task)
        if entry.validation is not None:
            indices = None if entry.validation_indices is None else self.path(entry.validation_indices)
            task_data = with_validation(task_data, entry.validation, indices_file=indices)
        return replace(task_data, templates=entry.templates) if entry.templates else task_data

    def head(self, task: str, pretrained: Checkpoint, data: TaskData, *, cache_dir: Path) -> torch.Tensor:
        """The task's zero-shot head [C, E]: its head file when the manifest names one, else built from the
        pretrained model's text tower (cached)."""
        relative = self._entry(task).head
        if relative is not None:
            proj = expected_visual_shapes(pretrained.meta.architecture).get("proj")  # [width, E]
            return load_head_file(
                self.path(relative), num_classes=len(data.class_names), embed_dim=proj[1] if proj else None
            )
        if pretrained.meta.tower != "clip":
            raise CheckpointError(
                pretrained.path,
                f"has no text tower to build the head of task {task!r}",
                fix=f"name a head file for {task!r} in the pool (head: head_{task}.pt), or use a "
                "pretrained checkpoint with both towers",
            )
        return cached_head(pretrained, data.class_names, data.templates, cache_dir=cache_dir)

    def forgetting_report(self) -> dict | None:
        """The stored forgetting sweeps (engine/zoo/sta.py), or None when the collection has none."""
        if self.manifest.forgetting_report is None:
            return None
        path = self.path(self.manifest.forgetting_report)
        fix = "rebuild it with `python -m engine zoo add-sta`, or drop it from the manifest"
        try:
            report = json.loads(read_document(path, fix=fix))
        except (ValueError, RecursionError) as exc:
            raise SchemaError(
                path,
                f"unreadable forgetting report ({nesting(exc)})",
                fix="rebuild it with `python -m engine zoo add-sta`, or drop it from the manifest",
            ) from exc
        if not isinstance(report, dict) or report.get("schema_version") != 1 or "targets" not in report:
            raise SchemaError(
                path,
                "not a forgetting report (schema_version 1 with 'targets')",
                fix="rebuild it with `python -m engine zoo add-sta`",
            )
        return report

    def warm_dir(self, cache: str) -> Path | None:
        """The shipped first-open caches of one kind ("jvp", "merge_parts"), read after the data home's, if any."""
        return None if self.manifest.warm is None else self.path(self.manifest.warm) / cache

    def build_report(self) -> dict | None:
        """The collection's report.json (the demo zoo's build report), or None when it has none."""
        path = self.root / "report.json"
        return _stored_document(path, "build report") if path.is_file() else None

    def variant_table(self, variant: str) -> dict | None:
        """The stored table of merges of one variant's checkpoints (the zoo's lora.json: zero-shot, each adapter
        alone, every method chosen on val), or None when the collection ships none for `variant`."""
        relative = self.manifest.variant_tables.get(variant)
        if relative is None:
            return None
        path = self.path(relative)
        table = _stored_document(path, f"table of {variant} merges")
        if not isinstance(table, dict) or not isinstance(table.get("methods"), dict):
            raise SchemaError(path, "has no 'methods' table", fix="rebuild it: python -m engine zoo add-lora")
        return table

    def taujp_path(self, variant: str = "standard") -> Path | None:
        """The stored τJp matrix of one variant's checkpoints (all tasks), if the collection ships one."""
        relative = self.manifest.taujp_matrix if variant == "standard" else self.manifest.taujp_variants.get(variant)
        return None if relative is None else self.path(relative)

    def with_finetunes(self, root: Path) -> Collection:
        """This collection plus the fine-tunes of its pretrained model found under `root` (named by file stem; a LoRA
        fine-tune is a PEFT adapter folder).
        An empty `root` (a new data home) adds nothing, so the pretrained model's header is not even opened:
        that would build its architecture (the first open_clip import) before the first page can draw."""
        if not any(Path(root).glob("*/*/*.safetensors")) and not any(Path(root).glob(f"*/*/*/{ADAPTER_CONFIG}")):
            return self
        sha = self.pretrained_lazy().meta.tensors_sha256
        tasks = {}
        for name, entry in self.manifest.tasks.items():
            folder = finetune_folder(root, sha, name)
            files = [*folder.glob("*.safetensors"), *(p.parent for p in folder.glob(f"*/{ADAPTER_CONFIG}"))]
            found = {p.stem: str(p.resolve()) for p in sorted(files) if p.stem not in entry.checkpoints}
            tasks[name] = entry.model_copy(update={"checkpoints": {**entry.checkpoints, **found}})
        return replace(self, manifest=self.manifest.model_copy(update={"tasks": tasks}))

    def with_verified(self, root: Path) -> Collection:
        """This collection, remembering under `root` which checkpoints passed their hash check, so unchanged
        files are not hashed again on the next open (engine/io/verified.py; the dashboard uses its cache)."""
        return replace(self, verified=VerifiedFiles(Path(root)))

    def checkpoint_meta(self, task: str, variant: str = "standard") -> CheckpointMeta:
        """One fine-tuned checkpoint's metadata: its sidecar, or what its content says (tensors not read)."""
        path = self._checkpoint_files(self._checkpoint_path(task, variant))
        return read_sidecar(path) if sidecar_path(path).exists() else self.finetuned_lazy(task, variant).meta

    def suite_identity(self, tasks: Sequence[str]) -> str:
        """sha256 of what decides the evaluation of `tasks`: each one's manifest entry but its checkpoints (the
        data's path or generator entry, head, templates, validation profile) and, for files the entry names, their
        size and mtime, not where the collection lies: a generated task (the demo zoo's) is its seeded entry alone,
        so numbers stored with a collection are found wherever it is unpacked. A folder's stamp is the folder's own,
        so an image replaced inside it goes unnoticed (stored numbers: `engine warm` again)."""
        facts = []
        for task in tasks:
            entry = self._entry(task)
            files = [entry.data if isinstance(entry.data, str) else None, entry.head, entry.validation_indices]
            stamps = [_size_and_mtime(self.path(f)) for f in files if f and not is_hf_reference(f)]
            facts.append((task, entry.model_dump(exclude={"checkpoints", "importance"}), stamps))
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()

    def referenced_paths(self) -> tuple[Path, ...]:
        """Every file or folder the manifest points at (resolved), for the dashboard's allowed-roots check."""
        paths = [self.manifest.pretrained]
        for entry in self.manifest.tasks.values():
            paths += list(entry.checkpoints.values()) + list(entry.importance.values())
            data = entry.data if isinstance(entry.data, str) and not is_hf_reference(entry.data) else None
            paths += [
                p for p in (entry.head, data, entry.validation_indices) if p
            ]  # an hf: dataset is checked where it resolves
        return tuple(self.path(p) for p in paths)

    def _checkpoint_path(self, task: str, variant: str) -> Path:
        entry = self._entry(task)
        if variant not in entry.checkpoints:
            raise CheckpointError(
                f"{task}/{variant}",
                "no such fine-tuned checkpoint in the collection",
                fix=f"choose one of {sorted(entry.checkpoints)}",
            )
        return self.path(entry.checkpoints[variant])

    def _entry(self, task: str) -> TaskEntry:
        if task not in self.manifest.tasks:
            raise DatasetError(
                task,
                f"is not a task of collection {self.manifest.name!r}{self.why_left_out(task)}",
                fix=f"choose one of {list(self.manifest.tasks)}",
            )
        return self.manifest.tasks[task]

    def why_left_out(self, task: str) -> str:
        """ ", left out: <entry> <reason>" when discovery skipped `task` (opened with skip_unreadable), else ""."""
        return "".join(f", left out: {s.entry} {s.reason}" for s in self.skipped if s.task == task)


def _stored_document(path: Path, what: str):
    """A JSON document the build stored beside the collection, or SchemaError naming it."""
    fix = "rebuild the zoo, or remove the file"
    try:
        return json.loads(read_document(path, fix=fix))
    except (ValueError, RecursionError) as exc:
        raise SchemaError(path, f"unreadable {what} ({nesting(exc)})", fix=fix) from exc


def finetune_folder(root: Path, pretrained_sha256: str, task: str) -> Path:
    """Where fine-tunes of `task` from one pretrained model live under the data home's `root`."""
    return Path(root) / pretrained_sha256[:16] / task


def load_collection(path: Path, *, policy: PathPolicy | None = None) -> Collection:
    """A collection.json (or its folder), a pool manifest (.yaml/.yml/.json), or a pool folder discovered by
    layout (engine/pool/discovery.py); under `policy` the manifest it reads must resolve inside its roots
    (a collection.json may be a symlink), and so does every file the collection reads later."""
    from engine.pool.discovery import POOL_MANIFESTS

    path, policy = Path(path), policy or PathPolicy.trust_all()
    for manifest in [path / n for n in (MANIFEST, *POOL_MANIFESTS)] if path.is_dir() else [path]:
        if manifest.exists():
            policy.check(manifest)
    return _read_collection(path).with_policy(policy)


def _read_collection(path: Path) -> Collection:
    from engine.pool.discovery import POOL_MANIFESTS, discover_pool, read_pool_manifest

    if path.is_dir() and not (path / MANIFEST).exists():
        found = discover_pool(path)
        return replace(_validated(found.document, path, root=path), skipped=found.skipped)
    file = path / MANIFEST if path.is_dir() else path
    if not file.exists():
        raise SchemaError(
            file,
            "no collection manifest or pool here",
            fix=f"point at a folder holding {MANIFEST} or {POOL_MANIFESTS[0]}, or at a pool folder",
        )
    if file.name != MANIFEST:
        return _validated(read_pool_manifest(file), file, root=file.parent)
    try:
        document = json.loads(read_document(file, fix="write it as UTF-8 JSON (schema: engine/pool/collection.py)"))
    except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
        raise SchemaError(file, f"unreadable manifest ({nesting(exc)})", fix="write valid JSON") from exc
    return _validated(document, file, root=file.parent)


def _validated(document: dict, source: Path, *, root: Path) -> Collection:
    try:
        manifest = CollectionManifest.model_validate(document)
    except ValidationError as exc:
        raise SchemaError(
            source,
            f"invalid manifest: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}",
            fix="see engine/pool/collection.py for the schema",
        ) from exc
    return Collection(root=Path(root).resolve(), manifest=manifest)


def visual_state(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """The image tower's tensors (without the 'visual.' prefix of a full CLIP state dict)."""
    if checkpoint.meta.tower == "visual":
        return dict(checkpoint.state)
    return {k.removeprefix("visual."): v for k, v in checkpoint.state.items() if k.startswith("visual.")}


def task_matrix(
    collection: Collection,
    *,
    tasks: Sequence[str] | None = None,
    variant: str = "standard",
    variants: Mapping[str, str] | None = None,
    device: torch.device | str = "cpu",
    pretrained: Checkpoint | None = None,
    on_checkpoint: CheckpointProgress | None = None,
) -> TaskMatrix:
    """θ₀ and T [K, P] for `tasks` (default all): `variants[task]` when given, else `variant`, per task.

    Each fine-tuned checkpoint is read straight into its row of T (through a CPU row when T lives on a
    GPU), `ROW_READERS` at a time, so peak memory is about T + θ₀ whatever the file format.
    `on_checkpoint(done, total, task)` reports progress after each row, in order, on the calling thread.
    """
    lender = collection.pretrained_lazy()
    spec = ParamSpec.from_shapes({k: (v.shape, v.dtype) for k, v in lender.visual.items()})
    if pretrained is None:  # only the image tower is read, not the text tower
        theta0 = torch.zeros(spec.numel, dtype=torch.float32)  # [P]
        lender.read_visual_into(spec, theta0)
        theta0 = theta0.to(device)
    else:
        theta0 = flatten(visual_state(pretrained), spec, source="pretrained", device=device)  # [P]
    names = tuple(tasks or collection.task_names)
    T = torch.zeros(len(names), spec.numel, dtype=torch.float32, device=device)  # [K, P] touched by all threads at once

    def read_row(k: int) -> None:
        on_cpu = T.device.type == "cpu"
        row = T[k] if on_cpu else torch.empty(spec.numel, dtype=torch.float32)  # [P]
        checked = _checked_finetuned(
            collection, names[k], (variants or {}).get(names[k], variant), lender, theta0, spec
        )
        checked.read_visual_into(spec, row)
        if not on_cpu:
            T[k].copy_(row)
        T[k].sub_(theta0)

    with ThreadPoolExecutor(max_workers=ROW_READERS) as readers:
        rows = [readers.submit(read_row, k) for k in range(len(names))]
        try:
            for k, row in enumerate(rows):  # in order, on the caller's thread (a page's progress bar)
                row.result()
                if on_checkpoint is not None:
                    on_checkpoint(k + 1, len(names), names[k])
        except BaseException:
            for row in rows:
                row.cancel()
            raise
    return TaskMatrix(theta0=theta0, T=T, spec=spec, task_names=names)


def _checked_finetuned(
    collection: Collection, task: str, variant: str, lender: LazyCheckpoint, theta0: torch.Tensor, spec: ParamSpec
) -> LazyCheckpoint:
    """`task`'s checkpoint, located and checked against the pool's model (architecture; a tangent one's θ₀)."""
    checkpoint = collection.finetuned_lazy(task, variant, pretrained=lender)
    if checkpoint.meta.architecture != lender.meta.architecture:
        raise CheckpointError(
            checkpoint.path,
            f"is {checkpoint.meta.architecture}, the pretrained model is {lender.meta.architecture}",
            fix="fine-tune from the collection's model",
        )
    _check_linearized_around(checkpoint, theta0, spec)
    return checkpoint


def built_task_store(
    collection: Collection,
    folder: Path,
    *,
    tasks: Sequence[str] | None = None,
    variant: str = "standard",
    variants: Mapping[str, str] | None = None,
    dtype: str = "float32",
) -> BuiltStore:
    """θ₀ and T of `tasks` as a store built once in `folder` (the data home's cache/stores), memory-mapped.

    The file is named by what it holds (the collection, its tasks and their checkpoint names, the dtype) and
    checked against the checkpoints' identities (tensors_sha256 and file stamp: nothing is hashed on open); it
    is rebuilt when one changed (engine/store/built.py)."""
    lender = collection.pretrained_lazy()
    spec = ParamSpec.from_shapes({k: (v.shape, v.dtype) for k, v in lender.visual.items()})
    names = tuple(tasks or collection.task_names)
    chosen = [(t, (variants or {}).get(t, variant)) for t in names]
    sources = {
        "pretrained": _identity(lender),
        "tasks": [[t, v, _identity(collection.finetuned_lazy(t, v, pretrained=lender))] for t, v in chosen],
    }
    slot = hashlib.sha256(json.dumps([str(collection.root), collection.manifest.pretrained, chosen]).encode())
    theta0 = torch.zeros(spec.numel, dtype=torch.float32)  # [P] read only when the store is built

    def read_theta0() -> torch.Tensor:
        lender.read_visual_into(spec, theta0)
        return theta0

    def fill_row(k: int, row: torch.Tensor) -> None:
        _checked_finetuned(collection, *chosen[k], lender, theta0, spec).read_visual_into(spec, row)
        row.sub_(theta0)

    return open_built_store(
        Path(folder) / f"{slot.hexdigest()[:24]}.{dtype}.taskstore",
        header=store_header(spec, names, sources, dtype),
        theta0=read_theta0,
        fill_row=fill_row,
    )


def lazy_task_store(
    collection: Collection,
    *,
    tasks: Sequence[str] | None = None,
    variant: str = "standard",
    variants: Mapping[str, str] | None = None,
    factored: bool = False,
) -> RowStore:
    """θ₀ in memory and each task's row read lazily from its checkpoint (engine/store/lazy.py): nothing built.
    `factored`: a LoRA adapter's row keeps its factors in memory instead (engine/store/factored.py)."""
    lender = collection.pretrained_lazy()
    spec = ParamSpec.from_shapes({k: (v.shape, v.dtype) for k, v in lender.visual.items()})
    theta0 = torch.zeros(spec.numel, dtype=torch.float32)  # [P]
    lender.read_visual_into(spec, theta0)
    names = tuple(tasks or collection.task_names)
    rows: list[TaskRow] = []
    for task in names:
        checkpoint = _checked_finetuned(collection, task, (variants or {}).get(task, variant), lender, theta0, spec)
        adapter = factored and checkpoint.format == "peft_lora"
        rows.append(
            LowRankRow.of_adapter(checkpoint, spec, theta0) if adapter else CheckpointRow.open(checkpoint, spec, theta0)
        )
    return RowStore(theta0, spec, names, tuple(rows))


def _identity(checkpoint: LazyCheckpoint) -> dict:
    """A checkpoint's identity without reading it: its tensors_sha256 (a sidecar's, or a foreign file's
    fingerprint) and, for a file, its stamp, so a file rewritten under an unchanged sidecar differs too."""
    path = Path(checkpoint.path)
    return {"tensors_sha256": checkpoint.meta.tensors_sha256, **(file_stamp(path) if path.is_file() else {})}


def _check_linearized_around(checkpoint: LazyCheckpoint, theta0: torch.Tensor, spec: ParamSpec) -> None:
    """A tangent checkpoint stores the θ₀ it was linearized around; it must be the pool's (checked on the
    embeddings and layer norms, a few kB, not the whole vector)."""
    if not checkpoint.linearized_at:
        return
    for name in ("class_embedding", "ln_pre.weight", "ln_pre.bias", "ln_post.weight"):
        lazy = checkpoint.linearized_at.get(name)
        ours = theta0[spec.slice_of(name)].cpu().view(lazy.shape) if lazy is not None else None
        if lazy is not None and not torch.equal(lazy.read(dtype=torch.float32), ours):
            raise CheckpointError(
                checkpoint.path,
                f"was linearized around another pretrained model ({name} differs)",
                fix="use the pool's pretrained model (its linear_zeroshot.pt / zeroshot.pt)",
            )


def open_suite(
    collection: Collection,
    *,
    cache_dir: Path,
    tasks: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
    pretrained: Checkpoint | None = None,
) -> EvalSuite:
    """Load the tasks' images and zero-shot heads onto `device` with an image-tower template."""
    pretrained = pretrained or collection.pretrained()
    meta = pretrained.meta
    visual = create_visual(meta.architecture, quick_gelu=meta.quick_gelu).to(device).eval()
    preprocess = preprocess_of(visual)
    names = tuple(tasks or collection.task_names)
    data = {t: collection.task_data(t, image_size=preprocess.image_size, cache_dir=cache_dir).to(device) for t in names}
    heads = {t: collection.head(t, pretrained, data[t], cache_dir=cache_dir).to(device) for t in names}
    spec = ParamSpec.from_state_dict(visual_state(pretrained))
    return EvalSuite(visual=visual, spec=spec, preprocess=preprocess, tasks=data, heads=heads)


def pretrained_vector(
    collection: Collection, spec: ParamSpec, *, device: torch.device | str = "cpu", pretrained: Checkpoint | None = None
) -> torch.Tensor:
    """θ₀ [P] alone (zero-shot evaluation without loading the fine-tuned checkpoints)."""
    pretrained = pretrained or collection.pretrained()
    return flatten(visual_state(pretrained), spec, source="pretrained", device=device)


def _size_and_mtime(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns
