"""Tiny real-format artefacts for tests: an open_clip model of a few thousand visual parameters,
labelled image sets, fine-tuned checkpoints and a collection manifest, all written to a folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.data.tasks import LabelledImages, TaskData, save_task
from engine.io.checkpoints import save_checkpoint
from engine.models import create_clip

TINY_ARCH = "mergelab-test-tiny"
TASKS = {"colour": ("red", "green", "blue"), "brightness": ("dark", "bright"), "texture": ("smooth", "noisy")}
SPLIT_SIZES = {"train": 24, "val": 140, "test": 40}


def tiny_task(name: str, class_names: tuple[str, ...], *, seed: int, size: int = 16) -> TaskData:
    gen = torch.Generator().manual_seed(seed)
    splits = {}
    for split, n in SPLIT_SIZES.items():
        images = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)  # [N, 3, H, W]
        labels = torch.randint(0, len(class_names), (n,), generator=gen)  # [N]
        splits[split] = LabelledImages(images, labels)
    return TaskData(name, class_names, ("a photo of {}.", "{}"), splits)


def perturbed(state: dict[str, torch.Tensor], *, seed: int, scale: float = 0.05) -> dict[str, torch.Tensor]:
    """A stand-in for a fine-tuned tower: the same tensors plus a small seeded perturbation."""
    gen = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=gen) for k, v in state.items()}


def build_tiny_collection(root: Path, *, seed: int = 0) -> Path:
    """Write pretrained CLIP, 3 tasks, one fine-tuned tower each and collection.json under `root`."""
    torch.manual_seed(seed)
    clip = create_clip(TINY_ARCH)
    save_checkpoint(
        root / "pretrained.safetensors",
        clip.state_dict(),
        architecture=TINY_ARCH,
        tower="clip",
        variant="pretrained",
        source="tests",
    )
    visual = {k: v for k, v in clip.visual.state_dict().items()}
    tasks = {}
    for i, (name, classes) in enumerate(TASKS.items()):
        save_task(tiny_task(name, classes, seed=seed + i), root / "tasks" / f"{name}.safetensors")
        save_checkpoint(
            root / "finetuned" / f"{name}.standard.safetensors",
            perturbed(visual, seed=seed + 10 + i),
            architecture=TINY_ARCH,
            task=name,
            variant="standard",
            class_names=classes,
            training={"kind": "test perturbation"},
            source="tests",
        )
        tasks[name] = {
            "data": f"tasks/{name}.safetensors",
            "checkpoints": {"standard": f"finetuned/{name}.standard.safetensors"},
        }
    manifest = {"schema_version": 1, "name": "tiny", "pretrained": "pretrained.safetensors", "tasks": tasks}
    (root / "collection.json").write_text(json.dumps(manifest, indent=2))
    return root
