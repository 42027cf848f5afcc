"""Zero-shot classification heads from class names and prompt templates (Radford et al., 2021).

Per class, the text tower embeds every template filled with the class name; the L2-normalised
embeddings are averaged and renormalised, then scaled by the model's logit scale (as the
task_vectors heads store it), so logits = head [C, E] @ normalize(f(x)) [E]. Heads are cached
in the data home keyed by the CLIP checkpoint's tensors_sha256, the class names and templates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from engine.errors import CheckpointError
from engine.home import refuse_special
from engine.io.atomic import atomic_path
from engine.io.checkpoints import Checkpoint, check_floating
from engine.models import create_clip, tokenizer


@torch.no_grad()
def build_head(
    clip: torch.nn.Module, architecture: str, class_names: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """[C, E] head from a full CLIP model (text tower used, image tower untouched)."""
    prompts = [t.format(c) for c in class_names for t in templates]
    tokens = tokenizer(architecture)(prompts)  # [C·M, context]
    emb = clip.encode_text(tokens, normalize=True)  # [C·M, E]
    emb = emb.view(len(class_names), len(templates), -1).mean(dim=1)  # [C, E]
    scale = clip.logit_scale.exp().clamp(max=100.0)
    return F.normalize(emb, dim=-1) * scale  # [C, E]


def cached_head(
    clip_checkpoint: Checkpoint, class_names: Sequence[str], templates: Sequence[str], *, cache_dir: Path
) -> torch.Tensor:
    """The head for these classes and templates, built once per CLIP checkpoint and cached."""
    key = _head_key(clip_checkpoint.sha256, class_names, templates)
    file = Path(cache_dir) / "heads" / f"{key}.safetensors"
    if file.is_file():
        return load_file(str(file))["head"]
    if clip_checkpoint.meta.tower != "clip":
        raise CheckpointError(
            clip_checkpoint.path,
            "holds only an image tower; heads need the text tower",
            fix="point the collection's 'pretrained' at a full CLIP checkpoint",
        )
    clip = load_clip(clip_checkpoint)
    head = build_head(clip, clip_checkpoint.meta.architecture, class_names, templates)
    with atomic_path(file) as tmp:
        save_file({"head": head.contiguous()}, str(tmp))
    return head


def load_clip(checkpoint: Checkpoint) -> torch.nn.Module:
    """A full CLIP module with the checkpoint's weights, in fp32 and eval mode."""
    clip = create_clip(checkpoint.meta.architecture, quick_gelu=checkpoint.meta.quick_gelu)
    state = {k: v.float() if v.is_floating_point() else v for k, v in checkpoint.state.items()}
    missing, unexpected = clip.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            checkpoint.path,
            f"does not fit {checkpoint.meta.architecture} (missing {missing[:3]}, unexpected {unexpected[:3]})",
            fix="check the sidecar's architecture",
        )
    return clip.eval()


def load_head_file(path: Path, *, num_classes: int | None, embed_dim: int | None = None) -> torch.Tensor:
    """A stored head [C, E] in our convention (logits = head @ normalize(f(x))), every value finite.

    `num_classes` pairs it with its dataset; None accepts any count (a pool converted without reading its data).
    `embed_dim` (E of the model it serves), when given, must match its second dimension.

    Accepted: a safetensors file with one [C, E] tensor (or keys "head"/"weight"), a torch zip state dict,
    or task_vectors' pickled `ClassificationHead` (an nn.Linear whose weight already holds logit_scale ×
    the normalised class embeddings, and a zero bias), read by the restricted unpickler; or a PEFT LoRA adapter
    folder whose `modules_to_save` carries a head (a Linear [C, E], zero bias), taken as is.
    """
    path = Path(path)
    head = _read_head(path)  # [C, E]
    _check_head(head, path, num_classes=num_classes, embed_dim=embed_dim)
    return head


def _read_head(path: Path) -> torch.Tensor:
    """The file's head matrix as float32 (not yet shape-checked); a non-zero bias is refused."""
    from engine.io.formats.peft_adapter import is_peft_adapter, read_adapter
    from engine.io.formats.safetensors_file import read_header
    from engine.io.formats.torch_zip import read_torch_zip, state_tensors

    refuse_special(path, fix="point at the head file itself (.safetensors or .pt)")
    if is_peft_adapter(path):  # a LoRA adapter's modules_to_save head: {"weight", "bias"}
        tensors = dict(read_adapter(path).head)
    elif not path.is_file():
        raise CheckpointError(path, "no such head file", fix="check the pool manifest's head path")
    else:
        tensors = read_header(path).tensors if path.suffix == ".safetensors" else state_tensors(read_torch_zip(path))
    tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    key = next(
        (k for k in ("head", "weight") if k in tensors), next(iter(tensors), None) if len(tensors) == 1 else None
    )
    if key is None:
        raise CheckpointError(path, f"holds no head matrix (keys {sorted(tensors)[:4]})", fix=_HEAD_FIX)
    check_floating({k: v for k, v in tensors.items() if k in (key, "bias")}, path, what="head tensor")
    if "bias" in tensors and tensors["bias"].read().abs().max() > 0:
        raise CheckpointError(
            path,
            "has a non-zero bias; mergelab heads are bias-free",
            fix="fold the bias away or re-build the head from class names",
        )
    return tensors[key].read(dtype=torch.float32)


_HEAD_FIX = "save the [classes, embedding] matrix under 'head', or a ClassificationHead"


def _check_head(head: torch.Tensor, path: Path, *, num_classes: int | None, embed_dim: int | None) -> None:
    """Shape [C, E] against the task's classes and the model's embedding, every value finite."""
    shape = tuple(head.shape)
    if head.ndim != 2:
        raise CheckpointError(path, f"head has shape {shape}, not [classes, embedding]", fix=_HEAD_FIX)
    if num_classes is not None and head.shape[0] != num_classes:
        raise CheckpointError(
            path,
            f"head has shape {shape}, the task has {num_classes} classes",
            fix="pair the head file with the task's dataset (same classes, same order)",
        )
    if embed_dim is not None and head.shape[1] != embed_dim:
        raise CheckpointError(
            path,
            f"head has shape {shape}, the model's embedding has {embed_dim} dimensions",
            fix="use the head built for this pool's pretrained model (same architecture)",
        )
    if not torch.isfinite(head).all():
        raise CheckpointError(
            path, "contains NaN or Inf values", fix="re-build the head from class names, or re-export it"
        )


def _head_key(clip_sha: str, class_names: Sequence[str], templates: Sequence[str]) -> str:
    payload = json.dumps({"clip": clip_sha, "classes": list(class_names), "templates": list(templates)})
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
