"""Write a merged flat vector as a checkpoint (safetensors + sidecar) with its recipe and open_clip
model config, all or nothing. Reload with the engine (`load_checkpoint`) or with open_clip alone:

    model = open_clip.create_model("ViT-B-32", pretrained=None, **json.load(open("m.open_clip.json")))
    model.visual.load_state_dict(safetensors.torch.load_file("m.safetensors"))
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

from engine.io.atomic import atomic_path
from engine.io.checkpoints import Checkpoint, CheckpointMeta, save_checkpoint, sidecar_path
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


def bundle_path(checkpoint_path: Path) -> Path:
    """`merged.safetensors` → `merged.zip`."""
    return Path(checkpoint_path).with_suffix(".zip")


def export_bundle(checkpoint: Checkpoint) -> Path:
    """One zip of an exported checkpoint: weights, sidecar, recipe, open_clip config and a README saying how
    to load it with open_clip alone (what a download needs elsewhere). Stored, not compressed: float weights
    do not shrink; written atomically next to the checkpoint."""
    path = Path(checkpoint.path)
    files = [path, sidecar_path(path), recipe_path(path), open_clip_config_path(path)]
    target = bundle_path(path)
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as bundle:
        for file in files:
            bundle.write(file, arcname=file.name)
        bundle.writestr("README.txt", loading_readme(path.name, checkpoint.meta))
    return target


def loading_readme(name: str, meta: CheckpointMeta) -> str:
    """The README of a bundle: what the files are and the lines that load the weights with open_clip alone.
    `create_model` is given a built-in name ("ViT-B-32") and the exported config, which replaces every part of
    it (embed_dim, vision_cfg, text_cfg): so the lines work where `meta.architecture` is not registered."""
    stem = Path(name).stem
    quick = ", force_quick_gelu=True" if meta.quick_gelu else ""
    return (
        f"{name}: a merged {meta.architecture} image tower written by mergelab ({stem}.json: its metadata, "
        f"{stem}.recipe.json: the merge that made it, {stem}.open_clip.json: the model config).\n"
        "Load it with open_clip alone (the config replaces every part of the built-in ViT-B-32):\n\n"
        "    import json, open_clip, safetensors.torch\n"
        f'    config = json.load(open("{stem}.open_clip.json"))\n'
        f'    model = open_clip.create_model("ViT-B-32", pretrained=None{quick}, **config)\n'
        f'    model.visual.load_state_dict(safetensors.torch.load_file("{name}"))\n'
    )
