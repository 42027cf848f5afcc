"""Checkpoints on disk: a safetensors file of tensors plus a validated JSON sidecar.

`foo.safetensors` holds a state dict (the image tower's for fine-tuned and merged checkpoints, the
whole CLIP for a pretrained model whose text tower builds zero-shot heads). `foo.json` beside it
follows `CheckpointMeta` (schema version 1). `.pt`/`.pth` files are read with
`torch.load(weights_only=True)` and need the same sidecar; nothing here runs a full unpickler.

`tensors_sha256` hashes the tensors themselves (sorted keys, dtype, shape, raw bytes), not the file,
so it survives a change of container and keys every cache in the data home.
"""
from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.atomic import all_or_nothing
from engine.errors import CheckpointError, SchemaError
from engine.models import expected_visual_shapes

SCHEMA_VERSION = 1
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
Variant = Literal["pretrained", "standard", "linearized", "tau_jp", "merged"]
LINEARIZED_VARIANTS = ("linearized", "tau_jp")   # evaluated as f₀ + J f(x; θ₀)·(θ − θ₀) everywhere


class CheckpointMeta(BaseModel):
    """The sidecar schema. Unknown fields are rejected so typos surface at once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    architecture: str                      # an open_clip config name, e.g. "ViT-B-32"
    quick_gelu: bool = False               # OpenAI-derived weights need QuickGELU
    tower: Literal["visual", "clip"] = "visual"
    task: str | None = None                # None for pretrained and multi-task merges
    variant: Variant
    class_names: tuple[str, ...] = ()
    training: dict[str, Any] = {}          # the recipe that produced it: steps, lr, method, λ ...
    source: str = ""                       # free text: "mergelab zoo build", a paper, a URL
    parent_sha256: str | None = None       # tensors_sha256 of the checkpoint it derives from
    tensors_sha256: str

    @property
    def linearized(self) -> bool:
        """Whether θ parametrises the linearized model (engine/finetune.py), not the network itself."""
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


def save_checkpoint(path: Path, state: Mapping[str, torch.Tensor], *, dtype: torch.dtype | None = None,
                    companions: Mapping[Path, str] | None = None, **meta: Any) -> Checkpoint:
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


def load_checkpoint(path: Path, *, architecture: str | None = None) -> Checkpoint:
    """Read and validate a checkpoint; every failure names the file and the fix.

    Checks, in order: the file exists and parses, the sidecar follows the schema, the tensors
    hash to the sidecar's sha256, every value is finite, and (for image towers) every key and
    shape matches the sidecar's architecture and, when given, `architecture`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file", fix="check the path, or pick a checkpoint from the list")
    meta = read_sidecar(path)
    if architecture is not None and meta.architecture != architecture:
        raise CheckpointError(path, f"is a {meta.architecture} checkpoint, expected {architecture}",
                              fix=f"choose a {architecture} checkpoint or switch the architecture")
    state = _read_tensors(path)
    if tensors_sha256(state) != meta.tensors_sha256:
        raise CheckpointError(path, "tensors do not match the sidecar's tensors_sha256 (changed or corrupted)",
                              fix="restore the original file, or re-save it with save_checkpoint")
    _check_finite(state, path)
    if meta.tower == "visual":
        _check_architecture(state, meta, path)
    return Checkpoint(path=path, state=state, meta=meta)


def read_sidecar(path: Path) -> CheckpointMeta:
    """Parse and validate `<path>.json`."""
    side = sidecar_path(path)
    if not side.is_file():
        raise SchemaError(side, "missing JSON sidecar",
                          fix=f"write {side.name} next to {Path(path).name} (schema: README, 'Checkpoint format')")
    try:
        return CheckpointMeta.model_validate_json(side.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise SchemaError(side, _describe(exc), fix="correct the listed fields (schema: README)") from exc


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        if path.suffix in TORCH_SUFFIXES:
            return _unwrap(torch.load(path, map_location="cpu", weights_only=True), path)
    except (SafetensorError, OSError, RuntimeError, EOFError) as exc:
        raise CheckpointError(path, f"cannot be read, likely truncated or not a checkpoint ({exc})",
                              fix="copy or download the file again") from exc
    except pickle.UnpicklingError as exc:
        raise CheckpointError(path, "holds Python objects besides tensors; refusing to unpickle it",
                              fix="save its state_dict() with torch.save, or as safetensors") from exc
    raise CheckpointError(path, f"unknown checkpoint suffix {path.suffix!r}",
                          fix=f"use .safetensors or one of {', '.join(TORCH_SUFFIXES)}")


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept {'state_dict': {...}} and DistributedDataParallel's 'module.' prefix."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(path, "is not a state dict of tensors", fix="save model.state_dict(), not the model")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _check_finite(state: Mapping[str, torch.Tensor], path: Path) -> None:
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(path, f"tensor {name!r} contains NaN or Inf values",
                                  fix="re-export the checkpoint from a run that did not diverge")


def _check_architecture(state: Mapping[str, torch.Tensor], meta: CheckpointMeta, path: Path) -> None:
    expected = expected_visual_shapes(meta.architecture, quick_gelu=meta.quick_gelu)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or extra or wrong:
        detail = "; ".join(f"{label} {keys[:3]}" for label, keys in
                           (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)) if keys)
        raise CheckpointError(path, f"does not fit architecture {meta.architecture} ({detail})",
                              fix="fix the sidecar's architecture, or use a checkpoint of the chosen architecture")


def _stored_tensor(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    tensor = tensor.detach().cpu()
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor.contiguous().clone()  # own storage: safetensors refuses shared views


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}" for e in exc.errors())
