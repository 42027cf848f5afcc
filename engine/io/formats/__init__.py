"""Checkpoints in the formats researchers bring, detected by content and canonicalised lazily.

`read_foreign(path)` returns open_clip image-tower names → LazyTensor (and the text tower when the file
has a complete one), plus what the file says about QuickGELU and linearization. Formats:
- open_clip state dicts: safetensors or torch zip (`.pt/.pth/.bin`), full CLIP or visual-only, with
  `module.`/`model.`/`state_dict` wrappers (engine/io/formats/safetensors_file.py, torch_zip.py), and
  training checkpoints that keep the loop's state beside the weights (open_clip's `epoch_N.pt`);
- task_vectors / tangent / aTLAS pickled `ImageEncoder` modules, read by the restricted unpickler;
- Hugging Face CLIPModel / CLIPVisionModel(WithProjection) safetensors, a file or a folder with
  model.safetensors (or pytorch_model.bin) and config.json (engine/io/formats/hf_clip.py);
- tangent task arithmetic's linearized dicts (`model.params.{i}`, `model.params0.{i}`, `model_name`),
  whose θ₀ comes along as `linearized_at`.
Nothing here reads tensor data; engine/io/checkpoints.py does, straight into the task matrix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.errors import CheckpointError
from engine.home import read_document, refuse_special
from engine.io.formats.hf_clip import hf_to_open_clip, is_hf_clip
from engine.io.formats.lazy import LazyTensor
from engine.io.formats.safetensors_file import read_header
from engine.io.formats.torch_zip import StandIn, read_torch_zip, state_tensors
from engine.models import clip_parameter_names

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
HF_WEIGHTS = ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
# (the hub's openai/clip-vit-* base models ship pytorch_model.bin only)
# Training checkpoints keep the model's state dict under one of these keys, beside the optimizer's moments
# (one exp_avg per parameter), the AMP scaler and counters: open_clip's epoch_N.pt ({epoch, name,
# state_dict, optimizer[, scaler]}), Lightning's .ckpt, PyTorch's "general checkpoint" recipe.
MODEL_STATE_KEYS = ("state_dict", "model_state_dict", "model")
_TEXT_COMPLETE = ("token_embedding.weight", "ln_final.weight", "text_projection", "positional_embedding")


@dataclass(frozen=True)
class ForeignCheckpoint:
    path: Path
    format: str  # "open_clip", "task_vectors", "hf_clip", "tangent_linearized"
    visual: dict[str, LazyTensor]  # open_clip image-tower names (no "visual." prefix)
    text: dict[str, LazyTensor] = field(default_factory=dict)  # complete text tower + logit_scale, else empty
    quick_gelu: bool | None = None  # None: the file does not say
    architecture_hint: str | None = None  # a model name the file states (tangent's model_name)
    linearized_at: dict[str, LazyTensor] | None = None  # θ₀ of a linearized checkpoint (tangent)

    @property
    def tower(self) -> str:
        return "clip" if self.text else "visual"


def is_model_folder(path: Path) -> bool:
    """A Hugging Face (or open_clip hub) model folder: one of the known weight files inside."""
    return path.is_dir() and any(_present(path / name) for name in HF_WEIGHTS)


def _present(path: Path) -> bool:
    """There, and not a folder: a pipe or device in a weights file's place is refused by name when read."""
    return path.exists() and not path.is_dir()


def read_foreign(path: Path) -> ForeignCheckpoint:
    """Detect the format of `path` (a file, or a Hugging Face model folder) by content."""
    path = Path(path)
    if path.is_dir():
        return _hf_folder(path)
    refuse_special(path, fix="point at the checkpoint file itself (.safetensors, .pt) or a Hugging Face folder")
    if not path.is_file():
        raise CheckpointError(path, "no such file", fix="check the path")
    if path.suffix == ".safetensors":
        header = read_header(path)
        quick = header.metadata.get("quick_gelu")
        return _from_state(
            path, header.tensors, fmt="safetensors", quick_gelu=None if quick is None else quick.lower() == "true"
        )
    if path.suffix in TORCH_SUFFIXES:
        return _from_torch_zip(path)
    raise CheckpointError(
        path,
        f"unknown checkpoint suffix {path.suffix!r}",
        fix=f"use .safetensors, a Hugging Face folder, or one of {', '.join(TORCH_SUFFIXES)}",
    )


def _hf_folder(folder: Path) -> ForeignCheckpoint:
    weights = next((folder / n for n in HF_WEIGHTS if _present(folder / n)), None)
    if weights is None:
        raise CheckpointError(
            folder,
            f"is a folder without {' or '.join(HF_WEIGHTS)}",
            fix="point at a Hugging Face CLIP model folder, or at a checkpoint file",
        )
    quick = None
    config = folder / "config.json"
    if config.exists():
        try:
            info = json.loads(read_document(config, error=CheckpointError, fix="restore the model's config.json"))
        except (ValueError, RecursionError) as exc:
            raise CheckpointError(config, f"unreadable config ({exc})", fix="restore the model's config.json") from exc
        act = info.get("hidden_act") or info.get("vision_config", {}).get("hidden_act")
        quick = None if act is None else act == "quick_gelu"
    found = read_foreign(weights)
    return ForeignCheckpoint(
        folder, found.format, found.visual, found.text, quick if quick is not None else found.quick_gelu
    )


def model_state(root: Any) -> Any:
    """The model's weights of an unpickled torch file: a training checkpoint's state dict entry (its optimizer
    and scaler state are not the model, and their tensors would otherwise be read as weights), else `root`."""
    if not isinstance(root, dict):
        return root
    for key in MODEL_STATE_KEYS:
        inner = root.get(key)
        if isinstance(inner, dict) and any(isinstance(v, LazyTensor) for v in inner.values()):
            return inner
    return root


def _from_torch_zip(path: Path) -> ForeignCheckpoint:
    unpickled = read_torch_zip(path)
    root = model_state(unpickled.root)
    if isinstance(root, dict) and "model_name" in root and any(str(k).startswith("model.params.") for k in root):
        return _tangent_linearized(path, root)
    quick = (
        True
        if any(g.endswith(".QuickGELU") for g in unpickled.globals)
        else (False if isinstance(root, StandIn) else None)
    )
    fmt = "task_vectors" if isinstance(root, StandIn) else "torch"
    return _from_state(path, state_tensors(replace(unpickled, root=root)), fmt=fmt, quick_gelu=quick)


def _from_state(path: Path, tensors: dict[str, LazyTensor], *, fmt: str, quick_gelu: bool | None) -> ForeignCheckpoint:
    """Canonical open_clip names from any wrapping of an open_clip or HF state dict."""
    tensors = _unwrapped(tensors)
    if is_hf_clip(set(tensors)):
        tensors, fmt = hf_to_open_clip(tensors), "hf_clip"
        quick_gelu = True if quick_gelu is None else quick_gelu  # every HF CLIP checkpoint we know is OpenAI-derived
    elif fmt == "safetensors":
        fmt = "open_clip"
    if any(k.startswith("visual.") for k in tensors):
        visual = {k.removeprefix("visual."): v for k, v in tensors.items() if k.startswith("visual.")}
        rest = {k: v for k, v in tensors.items() if not k.startswith("visual.")}
    elif "conv1.weight" in tensors and "class_embedding" in tensors:
        visual, rest = tensors, {}
    else:
        raise CheckpointError(
            path,
            f"holds no CLIP image tower (first keys: {sorted(tensors)[:4]})",
            fix="point at an open_clip, task_vectors or Hugging Face CLIP checkpoint",
        )
    text = rest if all(k in rest for k in _TEXT_COMPLETE) and any(k.startswith("transformer.") for k in rest) else {}
    return ForeignCheckpoint(path, fmt, visual, text, quick_gelu)


def _unwrapped(tensors: dict[str, LazyTensor]) -> dict[str, LazyTensor]:
    """Strip `state_dict.`, `module.` (DDP) and `model.` (task_vectors' ImageEncoder) wrappers."""
    for prefix in ("state_dict.", "module.", "model."):
        if tensors and all(k.startswith(prefix) for k in tensors):
            tensors = {k.removeprefix(prefix): v for k, v in tensors.items()}
        elif prefix == "model." and any(k.startswith("model.visual.") for k in tensors):
            tensors = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    return tensors


def _tangent_linearized(path: Path, root: dict) -> ForeignCheckpoint:
    """`model.params.{i}` (θ) and `model.params0.{i}` (θ₀), i in the ImageEncoder's named_parameters() order:
    open_clip's CLIP order without the deleted text `transformer` (tangent_task_arithmetic, linearize.py)."""
    name = str(root["model_name"])
    architecture = re.sub(r"-quickgelu$", "", name)
    names = [n for n in clip_parameter_names(architecture) if not n.startswith("transformer.")]
    count = sum(1 for k in root if str(k).startswith("model.params."))
    if count != len(names):
        raise CheckpointError(
            path,
            f"has {count} parameters, {architecture} has {len(names)} without its text transformer",
            fix="check model_name, or re-export the linearized model",
        )
    params = {n: _tensor_at(root, f"model.params.{i}", path) for i, n in enumerate(names)}
    params0 = {
        n: _tensor_at(root, f"model.params0.{i}", path) for i, n in enumerate(names) if f"model.params0.{i}" in root
    }
    visual = {k.removeprefix("visual."): v for k, v in params.items() if k.startswith("visual.")}
    base = {k.removeprefix("visual."): v for k, v in params0.items() if k.startswith("visual.")}
    return ForeignCheckpoint(path, "tangent_linearized", visual, {}, True, architecture, base or None)


def _tensor_at(root: dict, key: str, path: Path) -> LazyTensor:
    value = root.get(key)
    if not isinstance(value, LazyTensor):
        raise CheckpointError(
            path,
            f"has no tensor under {key!r} (model.params.0 … must number every parameter)",
            fix="re-export the linearized model",
        )
    return value
