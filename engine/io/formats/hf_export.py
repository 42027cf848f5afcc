"""Write a checkpoint as a Hugging Face model folder (the reverse of reading FusionBench's checkpoints).

`config.json` + `model.safetensors`, written together or not at all: CLIPVisionModelWithProjection for an
image tower, CLIPVisionModel for one read without its projection (a Hugging Face CLIPVisionModel fine-tune:
what it holds is written, nothing is made up), CLIPModel when the checkpoint holds both towers. Reading the
folder back with `engine.io.checkpoints.load_checkpoint` gives the same tensors (tests/test_io_formats.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from engine.io.atomic import all_or_nothing
from engine.io.checkpoints import Checkpoint
from engine.io.formats.hf_clip import hf_config, open_clip_to_hf
from engine.models import model_config


def export_hf_folder(checkpoint: Checkpoint, folder: Path) -> Path:
    """`folder`/config.json and `folder`/model.safetensors (fp32) for `checkpoint`."""
    meta = checkpoint.meta
    state = checkpoint.state if meta.tower == "clip" else {f"visual.{k}": v for k, v in checkpoint.state.items()}
    tensors = {k: v.float().contiguous() for k, v in open_clip_to_hf(state).items()}
    config = hf_config(
        model_config(meta.architecture),
        quick_gelu=meta.quick_gelu,
        with_text=meta.tower == "clip",
        with_projection="visual_projection.weight" in tensors,
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with all_or_nothing([folder / "model.safetensors", folder / "config.json"]) as (tmp_weights, tmp_config):
        save_file(tensors, str(tmp_weights), metadata={"format": "pt", "source": f"mergelab: {checkpoint.path.name}"})
        tmp_config.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder
