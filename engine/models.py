"""Architectures through open_clip's own factory, plus our model configs, and the device choice.

Our configs are JSON files in `engine/model_configs/` (same keys as open_clip's: embed_dim,
vision_cfg, text_cfg). They are added to open_clip's config registry on first use, so
`create_model("mergelab-zoo")` and `create_model("ViT-B-32")` go through one code path.
Weights are never downloaded: `pretrained=None` always.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.errors import CheckpointError

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"


@dataclass(frozen=True)
class Preprocess:
    """Per-channel normalisation of images in [0, 1], as the architecture was pretrained."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int


def _open_clip():
    """Import open_clip lazily (it is slow) and make sure our configs are registered."""
    import open_clip

    if not set(_our_config_names()) <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)
    return open_clip


def _our_config_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def list_architectures() -> list[str]:
    """Every architecture name `create_clip` accepts (ours first)."""
    open_clip = _open_clip()
    ours = _our_config_names()
    return ours + [m for m in open_clip.list_models() if m not in ours]


def create_clip(architecture: str, *, quick_gelu: bool = False, device: str = "cpu") -> nn.Module:
    """A randomly initialised open_clip CLIP (both towers) in eval mode."""
    open_clip = _open_clip()
    if architecture not in open_clip.list_models():
        raise CheckpointError(
            architecture, "is not a known architecture", fix=f"use one of {', '.join(list_architectures()[:12])}, ..."
        )
    with _quiet_open_clip():
        model = open_clip.create_model(architecture, pretrained=None, force_quick_gelu=quick_gelu, device=device)
    return model.eval()


def create_visual(architecture: str, *, quick_gelu: bool = False, device: str = "cpu") -> nn.Module:
    """The image tower alone: the module every merge and evaluation runs."""
    return create_clip(architecture, quick_gelu=quick_gelu, device=device).visual


def model_config(architecture: str) -> dict:
    """open_clip's config dict (embed_dim, vision_cfg, text_cfg, ...) for `architecture`.

    Exported with merged checkpoints: `open_clip.create_model("ViT-B-32", pretrained=None, **config)`
    rebuilds the architecture anywhere, even where our config files are not registered.
    """
    config = _open_clip().get_model_config(architecture)
    if config is None:
        raise CheckpointError(architecture, "is not a known architecture", fix="use an open_clip model name")
    return config


def tokenizer(architecture: str):
    """open_clip's tokenizer for `architecture`, with our configs registered first (their context
    length, e.g. 16 for the zoo, comes from the config; unregistered names would silently get 77)."""
    return _open_clip().get_tokenizer(architecture)


def preprocess_of(visual: nn.Module) -> Preprocess:
    """Normalisation constants open_clip attached to this image tower."""
    cfg = visual.preprocess_cfg
    size = cfg["size"]
    return Preprocess(
        mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), image_size=size if isinstance(size, int) else size[0]
    )


def expected_visual_shapes(architecture: str) -> dict[str, tuple[int, ...]]:
    """Key → shape of the image tower's state dict, built on the meta device (no memory; once per name).
    QuickGELU changes no shape."""
    return dict(_visual_shapes(architecture))


@functools.cache
def _visual_shapes(architecture: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    state, _ = _meta_clip(architecture)
    return tuple((k.removeprefix("visual."), shape) for k, shape in state if k.startswith("visual."))


def expected_text_shapes(architecture: str) -> dict[str, tuple[int, ...]]:
    """Key → shape of everything outside the image tower in a full CLIP state dict (text transformer, token
    and positional embeddings, ln_final, text_projection, logit_scale): what a pretrained checkpoint's text
    tower must hold for zero-shot heads to be built from it."""
    state, _ = _meta_clip(architecture)
    return {k: shape for k, shape in state if not k.startswith("visual.")}


def clip_parameter_names(architecture: str) -> tuple[str, ...]:
    """The CLIP's named_parameters() order (both towers): how index-keyed checkpoints (tangent's
    `model.params.{i}`) name their tensors."""
    return _meta_clip(architecture)[1]


@functools.cache
def _meta_clip(architecture: str) -> tuple[tuple[tuple[str, tuple[int, ...]], ...], tuple[str, ...]]:
    """A CLIP built once on the meta device (no memory): its state dict's names and shapes, and its
    named_parameters() order."""
    with torch.device("meta"):
        clip = create_clip(architecture, device="meta")
    return (
        tuple((k, tuple(v.shape)) for k, v in clip.state_dict().items()),
        tuple(name for name, _ in clip.named_parameters()),
    )


def architecture_config(name: str) -> dict | None:
    """open_clip's config dict for `name`, or None (no error: used to scan candidates)."""
    return _open_clip().get_model_config(name)


def pick_device(preferred: str | None = None) -> torch.device:
    """CUDA when present (or `preferred` when given), else the CPU."""
    if preferred:
        return torch.device(preferred)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def _quiet_open_clip():
    """open_clip logs 'No pretrained weights loaded' at INFO/WARNING for every random model."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
