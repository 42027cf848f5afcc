"""Which open_clip architecture an image tower's tensors belong to, from their shapes alone.

Foreign checkpoints carry no config we can trust (task_vectors pickles name open_clip classes, HF
config.json describes transformers' model), so the tower's shapes decide: width, depth, patch, grid
and embedding size are matched against open_clip's configs (ours first, then the CLIP ViTs researchers
use), and the match is confirmed key by key. QuickGELU does not change shapes; it is recorded separately.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path

from engine.errors import CheckpointError
from engine.models import architecture_config, expected_visual_shapes, list_architectures

PREFERRED = (
    "ViT-B-32",
    "ViT-B-16",
    "ViT-L-14",
    "ViT-L-14-336",
    "ViT-H-14",
    "ViT-g-14",
    "ViT-bigG-14",
    "ViT-B-16-plus-240",
)


def detect_architecture(shapes: Mapping[str, tuple[int, ...]], *, source: str | Path, projection: bool = True) -> str:
    """The open_clip config name whose image tower has exactly these keys and shapes.

    `projection=False` matches a tower saved without `proj` (a Hugging Face CLIPVisionModel): the embedding
    size is then unknown, so the first architecture in preference order whose tower matches is taken.
    """
    signature = _signature(shapes, source, projection=projection)
    for name in _candidates():
        config = _config_signature(name)
        if config is None or config[: len(signature)] != signature:
            continue  # only configs that match are built (on the meta device) to compare key by key
        expected = expected_visual_shapes(name)
        if not projection:
            expected.pop("proj", None)
        if expected == dict(shapes):
            return name
    width, layers, patch, image, *embed = signature
    raise CheckpointError(
        source,
        f"matches no known architecture (width {width}, {layers} layers, patch {patch}, "
        f"image {image}, embedding {embed[0] if embed else 'unknown: no projection'})",
        fix="name it in the pool manifest (architecture: <open_clip config>), or register its "
        "config with open_clip.add_model_config",
    )


def _signature(shapes: Mapping[str, tuple[int, ...]], source: str | Path, *, projection: bool) -> tuple[int, ...]:
    """(width, layers, patch, image size, embedding size); without the projection, the first four."""
    needed = ("class_embedding", "conv1.weight", "positional_embedding", *(("proj",) if projection else ()))
    try:
        width = shapes["class_embedding"][0]
        patch = shapes["conv1.weight"][-1]
        grid = round(max(shapes["positional_embedding"][0] - 1, 0) ** 0.5)
        embed = (shapes["proj"][1],) if projection else ()
    except (KeyError, IndexError):
        missing = [k for k in needed if k not in shapes]
        raise CheckpointError(
            source,
            f"is not an open_clip ViT image tower (missing {missing})",
            fix="point at a CLIP ViT checkpoint (open_clip, task_vectors or Hugging Face)",
        ) from None
    layers = len({m.group(1) for k in shapes if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))})
    return width, layers, patch, grid * patch, *embed


@functools.cache
def _candidates() -> tuple[str, ...]:
    names = list_architectures()
    ours = [n for n in names if n.startswith("mergelab-")]
    rest = [n for n in names if n not in ours and n not in PREFERRED and not n.endswith("quickgelu")]
    return (*ours, *(n for n in PREFERRED if n in names), *rest)


@functools.cache
def _config_signature(name: str) -> tuple[int, int, int, int, int] | None:
    config = architecture_config(name) or {}
    vision = config.get("vision_cfg", {})
    if not isinstance(vision, dict) or vision.get("timm_model_name") or "width" not in vision:
        return None
    image = vision.get("image_size", 224)
    image = image if isinstance(image, int) else image[0]
    layers = vision.get("layers")
    if not isinstance(layers, int):
        return None
    return vision["width"], layers, vision.get("patch_size", 16), image, config.get("embed_dim", 0)
