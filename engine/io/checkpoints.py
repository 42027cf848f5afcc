"""Checkpoints on disk: a safetensors file of tensors plus a validated JSON sidecar.

`foo.safetensors` holds a state dict (the image tower's for fine-tuned and merged checkpoints, the
whole CLIP for a pretrained model whose text tower builds zero-shot heads). `foo.json` beside it
follows `CheckpointMeta` (schema version 1). `.pt`/`.pth` state dicts with a sidecar are read by the
restricted unpickler of engine/io/formats/torch_zip.py; nothing here runs a full unpickler. Files without a
sidecar are foreign checkpoints (open_clip, task_vectors, Hugging Face, tangent: engine/io/formats), their
metadata detected from content and the pool manifest.

Reading is lazy (`open_checkpoint` → `LazyCheckpoint`): tensors are located first and read one by one,
straight into a flat vector (`read_visual_into`) or into a state dict (`load`).

`tensors_sha256` hashes the tensors themselves (sorted keys, dtype, shape, raw bytes), not the file,
so it survives a change of container and keys every cache in the data home.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors.torch import save_file

from engine.errors import CheckpointError, SchemaError
from engine.home import read_document, refuse_special
from engine.io.atomic import all_or_nothing
from engine.io.formats import TORCH_SUFFIXES, model_state, read_foreign
from engine.io.formats.architecture import detect_architecture
from engine.io.formats.lazy import LazyTensor, Opener, materialize
from engine.io.formats.peft_adapter import NOTES, adapted_tower, is_peft_adapter, read_adapter
from engine.io.formats.safetensors_file import read_header
from engine.io.formats.torch_zip import TorchZip, read_torch_zip
from engine.io.verified import VerifiedFiles
from engine.models import expected_text_shapes, expected_visual_shapes

if TYPE_CHECKING:
    from engine.params import ParamSpec

SCHEMA_VERSION = 1
Variant = Literal["pretrained", "standard", "linearized", "tau_jp", "merged"]
LINEARIZED_VARIANTS = ("linearized", "tau_jp")  # evaluated as f₀ + J f(x; θ₀)·(θ − θ₀) everywhere
_TOWER_CORE = {"class_embedding", "conv1.weight", "positional_embedding"}  # an image tower, with or without proj
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class CheckpointMeta(BaseModel):
    """The sidecar schema. Unknown fields are rejected so typos surface at once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    architecture: str  # an open_clip config name, e.g. "ViT-B-32"
    quick_gelu: bool = False  # OpenAI-derived weights need QuickGELU
    tower: Literal["visual", "clip"] = "visual"
    task: str | None = None  # None for pretrained and multi-task merges
    variant: Variant
    class_names: tuple[str, ...] = ()
    training: dict[str, Any] = {}  # the recipe that produced it: steps, lr, method, λ ...
    source: str = ""  # free text: "mergelab zoo build", a paper, a URL
    parent_sha256: str | None = None  # tensors_sha256 of the checkpoint it derives from
    tensors_sha256: str

    @property
    def linearized(self) -> bool:
        """Whether θ parametrises the linearized model (engine/train/finetune.py), not the network itself."""
        return self.variant in LINEARIZED_VARIANTS


@dataclass(frozen=True)
class Checkpoint:
    """A loaded, validated checkpoint (tensors on the CPU, as stored)."""

    path: Path
    state: dict[str, torch.Tensor]
    meta: CheckpointMeta

    @property
    def sha256(self) -> str:
        return self.meta.tensors_sha256


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """Content hash of a state dict, independent of the file format."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(
    path: Path,
    state: Mapping[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    companions: Mapping[Path, str] | None = None,
    **meta: Any,
) -> Checkpoint:
    """Write `path` (.safetensors), its sidecar and any `companions` (path → text) together, or none.

    `dtype` casts floating tensors on the way (fp16 for the shipped zoo). `meta` are the
    CheckpointMeta fields except `tensors_sha256`, which is computed here.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(path, "checkpoints are written as .safetensors only", fix="use a .safetensors name")
    stored = {k: _stored_tensor(v, dtype) for k, v in state.items()}
    _check_finite(stored, path)
    try:
        info = CheckpointMeta(tensors_sha256=tensors_sha256(stored), **meta)
    except ValidationError as exc:
        raise SchemaError(sidecar_path(path), _describe(exc), fix="pass valid metadata fields") from exc
    extra = dict(companions or {})
    with all_or_nothing([path, sidecar_path(path), *extra]) as (tmp_tensors, tmp_sidecar, *tmp_extra):
        save_file(stored, str(tmp_tensors))
        tmp_sidecar.write_text(info.model_dump_json(indent=2), encoding="utf-8")
        for tmp, text in zip(tmp_extra, extra.values()):
            tmp.write_text(text, encoding="utf-8")
    return Checkpoint(path=path, state=stored, meta=info)


def load_checkpoint(path: Path, *, architecture: str | None = None, projection_optional: bool = False) -> Checkpoint:
    """Read and validate a checkpoint of any supported format; every failure names the file and the fix.

    With a sidecar: the sidecar follows the schema, the tensors hash to its sha256, every value is
    finite, and every key and shape of both towers fits its architecture and, when given, `architecture`.
    Without one, the file is read as a foreign checkpoint (engine/io/formats) with detected metadata.
    `projection_optional` accepts a foreign image tower without `proj` (see `open_checkpoint`).
    """
    return open_checkpoint(path, architecture=architecture, projection_optional=projection_optional).load()


@dataclass(frozen=True)
class LazyCheckpoint:
    """A checkpoint whose metadata is known and whose tensors are located but not read.

    `tensors` holds the names `Checkpoint.state` will have: image-tower names for tower "visual", full
    CLIP names (`visual.` prefix) for tower "clip". `verify` says whether meta.tensors_sha256 is a content
    hash still to check (a sidecar's claim, not yet checked on this unchanged file per `verified`), rather
    than one already checked or a fingerprint of a foreign file (path, size, mtime).
    `linearized_at` is θ₀ of a foreign linearized checkpoint (tangent's params0), to check against the pool's.
    `format` names the file's format: "mergelab" (with a sidecar) or engine/io/formats' name of a foreign one.
    """

    path: Path
    meta: CheckpointMeta
    tensors: dict[str, LazyTensor]
    verify: bool
    linearized_at: dict[str, LazyTensor] | None = None
    verified: VerifiedFiles | None = None  # where a successful verification is remembered
    format: str = "mergelab"

    def opened_by(self, opener: Opener) -> LazyCheckpoint:
        """This checkpoint with every tensor's file opened by `opener` when read (a path policy's open_file)."""
        linear = None if self.linearized_at is None else {k: v.opened_by(opener) for k, v in self.linearized_at.items()}
        return replace(self, tensors={k: v.opened_by(opener) for k, v in self.tensors.items()}, linearized_at=linear)

    @property
    def visual(self) -> dict[str, LazyTensor]:
        if self.meta.tower == "visual":
            return self.tensors
        return {k.removeprefix("visual."): v for k, v in self.tensors.items() if k.startswith("visual.")}

    def load(self) -> Checkpoint:
        state = materialize(self.tensors)
        if self.verify and tensors_sha256(state) != self.meta.tensors_sha256:
            raise _changed(self.path)
        _check_finite(state, self.path)
        self._remember()
        return Checkpoint(path=self.path, state=state, meta=self.meta)

    def read_visual_into(self, spec: ParamSpec, out: torch.Tensor) -> None:
        """The image tower flattened into `out` [P] (a CPU vector) in spec order, hash and finiteness checked.

        One read per tensor straight into its slice; fp16/bf16 files go through a small staging tensor.
        When the sidecar hash is still to check, every tensor is read once, in the hash's (sorted) order:
        a full CLIP's text tower into scratch tensors, the image tower into `out`.
        """
        prefix = "" if self.meta.tower == "visual" else "visual."
        spec.check_shapes({k: v.shape for k, v in self.visual.items()}, source=str(self.path))
        slices = {
            prefix + n: (start, size, shape)
            for n, start, size, shape in zip(spec.names, spec.offsets, spec.sizes, spec.shapes)
        }
        digest = hashlib.sha256() if self.verify else None
        for name in sorted(self.tensors) if digest is not None else slices:
            lazy = self.tensors[name]
            start, size, shape = slices.get(name, (0, 0, lazy.shape))
            dest = out[start : start + size].view(shape) if name in slices else None
            stored = dest if dest is not None and lazy.dtype == dest.dtype else torch.empty(shape, dtype=lazy.dtype)
            lazy.read_into(stored)
            if digest is not None:
                digest.update(f"{name}\0{stored.dtype}\0{tuple(stored.shape)}\0".encode())
                digest.update(stored.reshape(-1).view(torch.uint8).numpy().data)
            if dest is not None and stored is not dest:
                dest.copy_(stored)
        if digest is not None and digest.hexdigest() != self.meta.tensors_sha256:
            raise _changed(self.path)
        self._remember()
        if not torch.isfinite(out.sum()) and not torch.isfinite(out).all():  # one cheap pass in the common case
            raise CheckpointError(
                self.path, "contains NaN or Inf values", fix="re-export the checkpoint from a run that did not diverge"
            )

    def _remember(self) -> None:
        if self.verify and self.verified is not None:
            self.verified.add(self.path, self.meta.tensors_sha256)


def open_checkpoint(
    path: Path,
    *,
    architecture: str | None = None,
    quick_gelu: bool | None = None,
    variant: Variant | None = None,
    task: str | None = None,
    fill_from: Callable[[], LazyCheckpoint] | None = None,
    verified: VerifiedFiles | None = None,
    projection_optional: bool = False,
) -> LazyCheckpoint:
    """Locate a checkpoint's tensors and settle its metadata, without reading tensor data.

    A sidecar is authoritative (`architecture` must then agree with it). A foreign file (no sidecar) gets
    its metadata from its content and these arguments: `architecture` (else detected from the tower's
    shapes), `quick_gelu` (else what the file says, else False), `variant` (else "linearized" for tangent
    files, "standard" otherwise), `task`. `fill_from()` lends image-tower tensors a foreign file lacks (called only
    then): Hugging Face CLIPVisionModel fine-tunes have no projection, which fine-tuning leaves at the
    pretrained value (FusionBench trains the vision model only). `verified` skips hashing a sidecar'd file
    already checked and unchanged since (engine/io/verified.py), and records the files it checks.
    A foreign image tower without `proj` (none lent either) is refused, as merging, evaluating and heads all
    need it, unless `projection_optional` (exporting the tower as it is): its architecture is then the first
    whose tower matches, the embedding size being unknown.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "no such file", fix="check the path, or pick a checkpoint from the list")
    refuse_special(path, fix="point at the checkpoint file itself (.safetensors, .pt) or a Hugging Face folder")
    if sidecar_path(path).exists() and not path.is_dir():  # a sidecar that is a pipe is refused, not passed over
        return _open_native(path, architecture=architecture, verified=verified)
    return _open_foreign(
        path,
        architecture=architecture,
        quick_gelu=quick_gelu,
        variant=variant,
        task=task,
        fill_from=fill_from,
        projection_optional=projection_optional,
    )


def _open_native(path: Path, *, architecture: str | None, verified: VerifiedFiles | None) -> LazyCheckpoint:
    meta = read_sidecar(path)
    if architecture is not None and meta.architecture != architecture:
        raise CheckpointError(
            path,
            f"is a {meta.architecture} checkpoint, expected {architecture}",
            fix=f"choose a {architecture} checkpoint or switch the architecture",
        )
    if path.suffix == ".safetensors":
        tensors = dict(read_header(path).tensors)
    elif path.suffix in TORCH_SUFFIXES:
        tensors = _unwrapped_state(read_torch_zip(path), path)
    else:
        raise CheckpointError(
            path,
            f"unknown checkpoint suffix {path.suffix!r}",
            fix=f"use .safetensors or one of {', '.join(TORCH_SUFFIXES)}",
        )
    _check_towers(tensors, meta, path)
    checked = verified is not None and verified.holds(path, meta.tensors_sha256)
    return LazyCheckpoint(path=path, meta=meta, tensors=tensors, verify=not checked, verified=verified)


def _unwrapped_state(unpickled: TorchZip, path: Path) -> dict[str, LazyTensor]:
    """A plain state dict (a training checkpoint's model entry and DDP's 'module.' accepted); modules are not
    state dicts."""
    root = model_state(unpickled.root)
    if not isinstance(root, dict) or not all(isinstance(v, LazyTensor) for v in root.values()):
        raise CheckpointError(path, "is not a state dict of tensors", fix="save model.state_dict(), not the model")
    return {str(k).removeprefix("module."): v for k, v in root.items()}


def _open_foreign(
    path: Path,
    *,
    architecture: str | None,
    quick_gelu: bool | None,
    variant: Variant | None,
    task: str | None,
    fill_from: Callable[[], LazyCheckpoint] | None,
    projection_optional: bool,
) -> LazyCheckpoint:
    if is_peft_adapter(path):
        return _open_adapter(path, task=task, fill_from=fill_from)
    found = read_foreign(path)
    visual = dict(found.visual)
    if fill_from is not None and "proj" not in visual:
        lender = fill_from().visual
        if "proj" in lender:
            visual["proj"] = lender["proj"]
    projected = "proj" in visual
    if not projected and not projection_optional and _TOWER_CORE <= set(visual):
        raise _no_projection(path, lent=fill_from is not None)
    arch = (
        architecture
        or found.architecture_hint
        or detect_architecture({k: v.shape for k, v in visual.items()}, source=path, projection=projected)
    )
    quick = quick_gelu if quick_gelu is not None else bool(found.quick_gelu)
    try:
        meta = CheckpointMeta(
            architecture=arch,
            quick_gelu=quick,
            tower=found.tower,
            task=task,
            variant=variant or ("linearized" if found.linearized_at else "standard"),
            source=f"{found.format}: {path.name}",
            tensors_sha256=_fingerprint(path, found.format),
        )
    except ValidationError as exc:
        raise SchemaError(path, _describe(exc), fix="check the pool manifest's fields") from exc
    tensors = visual if found.tower == "visual" else {**{f"visual.{k}": v for k, v in visual.items()}, **found.text}
    _check_towers(tensors, meta, path, projection=projected)
    check_floating(found.linearized_at or {}, path)
    return LazyCheckpoint(
        path=path, meta=meta, tensors=tensors, verify=False, linearized_at=found.linearized_at, format=found.format
    )


def _open_adapter(path: Path, *, task: str | None, fill_from: Callable[[], LazyCheckpoint] | None) -> LazyCheckpoint:
    """A PEFT LoRA adapter as the image tower θ₀ + s·B·A on the pool's pretrained model (engine/io/formats/
    peft_adapter.py); its metadata is the base's, with the adapter's rank under `training["lora"]`."""
    if fill_from is None:
        raise CheckpointError(
            path,
            "is a LoRA adapter: it needs the base model it adapts",
            fix="open it in a pool (pool.yaml or a pool folder) whose pretrained model is the adapter's base",
        )
    adapter = read_adapter(path)
    for note in adapter.warnings:
        warnings.warn(f"{path}: {note}", stacklevel=3)
    base = fill_from()
    s = adapter.settings
    lora = {"rank": adapter.rank, "alpha": s.alpha, "rslora": s.use_rslora, "modules": len(adapter.parts)}
    notes = _adapter_notes(path)
    meta = CheckpointMeta.model_validate(
        {
            **base.meta.model_dump(),
            "tower": "visual",
            "task": task,
            "variant": "standard",
            "class_names": notes.get("class_names", ()),
            "training": {**notes.get("training", {}), "lora": lora},
            "source": notes.get("source", f"peft_lora: {path.name}"),
            "parent_sha256": base.meta.tensors_sha256,
            # θ₀ + ΔW changes with the base too: caches keyed by this identity must not outlive either
            "tensors_sha256": hashlib.sha256(
                f"{_fingerprint(path, 'peft_lora')}|{base.meta.tensors_sha256}".encode()
            ).hexdigest(),
        }
    )
    tensors = adapted_tower(adapter, base.visual, base_path=base.path)
    return LazyCheckpoint(path=path, meta=meta, tensors=tensors, verify=False, format="peft_lora")


def _adapter_notes(folder: Path) -> dict[str, Any]:
    """mergelab's notes beside an adapter it fine-tuned (source, class names, the recipe), or {} for others'."""
    notes = folder / NOTES
    if not notes.is_file():
        return {}
    fix = f"delete {NOTES}: it only adds the fine-tune's recipe to what the adapter says"
    try:
        data = json.loads(read_document(notes, fix=fix))
    except json.JSONDecodeError as exc:
        raise SchemaError(notes, f"is not JSON ({exc.msg}, line {exc.lineno})", fix=fix) from None
    kinds = {"source": str, "class_names": list, "training": dict}
    names = data.get("class_names", []) if isinstance(data, dict) else []
    if (
        not isinstance(data, dict)
        or any(not isinstance(v, kinds.get(k, ())) for k, v in data.items())
        or not all(isinstance(n, str) for n in names)
    ):
        raise SchemaError(notes, "holds other than source (text), class_names (a list), training (an object)", fix=fix)
    return data


def _no_projection(path: Path, *, lent: bool) -> CheckpointError:
    """A Hugging Face CLIPVisionModel keeps no `visual_projection`: the tower's output is not yet in the embedding
    space the heads (and the pretrained model) live in, so nothing can evaluate or merge it on its own."""
    where = "the pool's pretrained model has none to lend either" if lent else "no pretrained model lends one"
    return CheckpointError(
        path,
        f"has no image projection (open_clip `proj`, Hugging Face `visual_projection.weight`; {where}): the "
        "projection maps the tower's output into the embedding space of the heads",
        fix="open it in a pool whose pretrained model has both towers or a projection (fine-tuning leaves it "
        "at the pretrained value), or save it as a CLIPVisionModelWithProjection",
    )


def _fingerprint(path: Path, fmt: str) -> str:
    """Identity of a file without a sidecar: its format, resolved path, size and mtime. Caches keyed by it
    (heads, τJp, importance) go stale as soon as the file changes; a converted copy gets a content hash."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stats = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return hashlib.sha256(f"{fmt}|{stats}".encode()).hexdigest()


def read_sidecar(path: Path) -> CheckpointMeta:
    """Parse and validate `<path>.json`."""
    side = sidecar_path(path)
    if not side.exists():
        raise SchemaError(
            side,
            "missing JSON sidecar",
            fix=f"write {side.name} next to {Path(path).name} (schema: README, 'Checkpoint format')",
        )
    text = read_document(side, fix="write it as UTF-8 JSON (schema: README, 'Checkpoint format')")
    try:
        return CheckpointMeta.model_validate_json(text)
    except ValidationError as exc:
        raise SchemaError(side, _describe(exc), fix="correct the listed fields (schema: README)") from exc


def _changed(path: Path) -> CheckpointError:
    return CheckpointError(
        path,
        "tensors do not match the sidecar's tensors_sha256 (changed or corrupted)",
        fix="restore the original file, or re-save it with save_checkpoint",
    )


def _check_finite(state: Mapping[str, torch.Tensor], path: Path) -> None:
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(
                path,
                f"tensor {name!r} contains NaN or Inf values",
                fix="re-export the checkpoint from a run that did not diverge",
            )


def check_floating(tensors: Mapping[str, LazyTensor], path: Path, *, what: str = "tensor") -> None:
    """Every tensor is float32, float16, bfloat16 or float64 (`WEIGHT_DTYPES`). An integer or boolean tensor is
    refused, not cast: int64 weights cast to float merge as numbers they never meant (quantised or scaled
    values, a state dict saved with the wrong dtype), with results that look plausible."""
    wrong = sorted(k for k, v in tensors.items() if v.dtype not in WEIGHT_DTYPES)
    if wrong:
        dtype = str(tensors[wrong[0]].dtype).removeprefix("torch.")
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise CheckpointError(
            path,
            f"{what} {wrong[0]!r} is {dtype}{more}: weights must be float32, float16, bfloat16 or float64",
            fix="save the floating-point weights (e.g. model.float().state_dict()); mergelab does not dequantise",
        )


def _check_towers(
    tensors: Mapping[str, LazyTensor], meta: CheckpointMeta, path: Path, *, projection: bool = True
) -> None:
    """Every tensor the checkpoint holds against its architecture: the image tower always (without `proj` when
    `projection` is off), and for tower "clip" the text tower too (heads are built from it; a wrong shape
    there would otherwise only surface as a RuntimeError from load_state_dict, without the file's name); then
    every tensor's dtype (`check_floating`)."""
    expected = expected_visual_shapes(meta.architecture)
    if not projection:
        expected.pop("proj", None)
    if meta.tower == "visual":
        _check_shapes({k: v.shape for k, v in tensors.items()}, expected, meta, path)
    else:
        visual = {k.removeprefix("visual."): v.shape for k, v in tensors.items() if k.startswith("visual.")}
        text = {k: v.shape for k, v in tensors.items() if not k.startswith("visual.")}
        _check_shapes(visual, expected, meta, path)
        _check_shapes(text, expected_text_shapes(meta.architecture), meta, path, tower="text tower")
    check_floating(tensors, path)


def _check_shapes(
    shapes: Mapping[str, tuple[int, ...]],
    expected: Mapping[str, tuple[int, ...]],
    meta: CheckpointMeta,
    path: Path,
    *,
    tower: str = "image tower",
) -> None:
    """Keys and shapes of one tower; the message names the first wrong keys with the shape found and expected."""
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if tuple(shapes[k]) != tuple(expected[k]))
    if missing or extra or wrong:
        parts = [f"missing {missing[:3]}"] if missing else []
        parts += [f"unexpected {extra[:3]}"] if extra else []
        parts += [f"wrong shape: {k} is {list(shapes[k])}, expected {list(expected[k])}" for k in wrong[:3]]
        detail = "; ".join(parts)
        raise CheckpointError(
            path,
            f"{tower} does not fit architecture {meta.architecture} ({detail})",
            fix="fix the sidecar's architecture, or use a checkpoint of the chosen architecture",
        )


def _stored_tensor(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    tensor = tensor.detach().cpu()
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor.contiguous().clone()  # own storage: safetensors refuses shared views


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}" for e in exc.errors())
