"""Write a merged flat vector as a checkpoint (safetensors + sidecar) with its recipe and open_clip
model config, all or nothing. Reload with the engine (`load_checkpoint`) or with open_clip alone:

    model = open_clip.create_model("ViT-B-32", pretrained=None, **json.load(open("m.open_clip.json")))
    model.visual.load_state_dict(safetensors.torch.load_file("m.safetensors"))
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.io.checkpoints import Checkpoint, CheckpointMeta, save_checkpoint
from engine.models import model_config
from engine.params import ParamSpec, unflatten
from engine.runs.recipes import MergeRecipe


def recipe_path(checkpoint_path: Path) -> Path:
    """`merged.safetensors` → `merged.recipe.json`."""
    return Path(checkpoint_path).with_suffix(".recipe.json")


def open_clip_config_path(checkpoint_path: Path) -> Path:
    """`merged.safetensors` → `merged.open_clip.json`."""
    return Path(checkpoint_path).with_suffix(".open_clip.json")


def export_merged(
    path: Path, merged: torch.Tensor, spec: ParamSpec, *, pretrained: CheckpointMeta, recipe: MergeRecipe
) -> Checkpoint:
    """Save θ [P] as an image-tower checkpoint whose sidecar and recipe name its origin (`pretrained`'s sidecar)."""
    return save_checkpoint(
        Path(path),
        unflatten(merged.detach().cpu(), spec),
        companions={
            recipe_path(path): recipe.model_dump_json(indent=2),
            open_clip_config_path(path): json.dumps(model_config(pretrained.architecture), indent=2),
        },
        architecture=pretrained.architecture,
        quick_gelu=pretrained.quick_gelu,
        tower="visual",
        task=None,
        variant="merged",
        class_names=(),
        training=recipe.model_dump(mode="json"),
        source="mergelab merge",
        parent_sha256=pretrained.tensors_sha256,
    )
