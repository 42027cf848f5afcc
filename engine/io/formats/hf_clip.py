"""Hugging Face CLIP names ↔ open_clip names (FusionBench's CLIPVisionModel checkpoints and back).

transformers' CLIP splits attention into q/k/v projections; open_clip fuses them, q then k then v along
dim 0, into `attn.in_proj_weight/bias`. Vision keys carry `vision_model.` (CLIPModel, and CLIPVisionModel
saved by transformers < 5) or no prefix (CLIPVisionModel from transformers ≥ 5). The projection lives
outside the tower (`visual_projection.weight` [E, W] = open_clip's `proj`ᵀ); a fine-tuned CLIPVisionModel
has none, and the pool takes it from the pretrained model. `position_ids` buffers are ignored. Numerics
match (LayerNorm eps 1e-5, pooled output = post_layernorm(h[:, 0]) = open_clip's pre-projection output).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

from engine.io.formats.lazy import Concatenated, LazyTensor, Transposed

_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_BLOCK_RENAMES = {
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
    "self_attn.out_proj.": "attn.out_proj.",
}
_VISION_RENAMES = {
    "embeddings.class_embedding": "class_embedding",
    "embeddings.position_embedding.weight": "positional_embedding",
    "embeddings.patch_embedding.weight": "conv1.weight",
    "pre_layrnorm.weight": "ln_pre.weight",
    "pre_layrnorm.bias": "ln_pre.bias",
    "post_layernorm.weight": "ln_post.weight",
    "post_layernorm.bias": "ln_post.bias",
}
_TEXT_RENAMES = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}


def is_hf_clip(keys: set[str]) -> bool:
    """Whether these are transformers CLIP names (with or without the `vision_model.` prefix)."""
    return any(k.startswith(("vision_model.", "text_model.")) for k in keys) or (
        "embeddings.patch_embedding.weight" in keys and any(k.startswith("encoder.layers.") for k in keys)
    )


def hf_to_open_clip(tensors: Mapping[str, LazyTensor]) -> dict[str, LazyTensor]:
    """open_clip CLIP names: `visual.*` for the image tower, top-level names for the text tower."""
    vision = (
        _strip(tensors, "vision_model.")
        if any(k.startswith("vision_model.") for k in tensors)
        else {
            k: v
            for k, v in tensors.items()
            if not k.startswith(("text_model.", "visual_projection.", "text_projection.")) and k != "logit_scale"
        }
    )
    out = {f"visual.{k}": v for k, v in _tower(vision, _VISION_RENAMES).items()}
    if "visual_projection.weight" in tensors:
        out["visual.proj"] = Transposed(tensors["visual_projection.weight"])  # [W, E]
    text = _strip(tensors, "text_model.")
    if text:
        out.update(_tower(text, _TEXT_RENAMES))
        if "text_projection.weight" in tensors:
            out["text_projection"] = Transposed(tensors["text_projection.weight"])  # [Wt, E]
        if "logit_scale" in tensors:
            out["logit_scale"] = tensors["logit_scale"]
    return out


def open_clip_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reverse: an open_clip state dict (`visual.*`, and text keys when present) → transformers CLIP names
    (`vision_model.*` + `visual_projection.weight`, plus `text_model.*`, `text_projection.weight`, `logit_scale`)."""
    out: dict[str, torch.Tensor] = {}
    visual = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    out.update({f"vision_model.{k}": v for k, v in _tower_back(visual, _VISION_RENAMES).items()})
    if "proj" in visual:
        out["visual_projection.weight"] = visual["proj"].T.contiguous()  # [E, W]
    text = {
        k: v for k, v in state.items() if not k.startswith("visual.") and k not in ("text_projection", "logit_scale")
    }
    if text:
        out.update({f"text_model.{k}": v for k, v in _tower_back(text, _TEXT_RENAMES).items()})
    if "text_projection" in state:
        out["text_projection.weight"] = state["text_projection"].T.contiguous()  # [E, Wt]
    if "logit_scale" in state:
        out["logit_scale"] = state["logit_scale"]
    return out


def _strip(tensors: Mapping[str, LazyTensor], prefix: str) -> dict[str, LazyTensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def _tower(tensors: Mapping[str, LazyTensor], renames: Mapping[str, str]) -> dict[str, LazyTensor]:
    """One tower's HF names → open_clip names, q/k/v fused."""
    out: dict[str, LazyTensor] = {}
    qkv: dict[tuple[str, str], dict[str, LazyTensor]] = {}
    for name, tensor in tensors.items():
        if name.endswith("position_ids"):
            continue
        if name in renames:
            out[renames[name]] = tensor
            continue
        match = _LAYER.match(name)
        if match is None:
            out[name] = tensor  # left as is: the shape check names it as unexpected
            continue
        layer, rest = match.groups()
        block = f"transformer.resblocks.{layer}."
        projection = re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", rest)
        if projection:
            qkv.setdefault((block, projection.group(2)), {})[projection.group(1)] = tensor
            continue
        out[block + _swap_prefix(rest, _BLOCK_RENAMES.items())] = tensor
    for (block, kind), parts in qkv.items():
        if set(parts) == {"q", "k", "v"}:
            out[f"{block}attn.in_proj_{kind}"] = Concatenated((parts["q"], parts["k"], parts["v"]))
        else:
            out.update({f"{block}self_attn.{p}_proj.{kind}": t for p, t in parts.items()})  # reported as unexpected
    return out


def _tower_back(state: Mapping[str, torch.Tensor], renames: Mapping[str, str]) -> dict[str, torch.Tensor]:
    back = {new: old for old, new in renames.items()}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name in back:
            out[back[name]] = tensor
            continue
        match = re.match(r"^transformer\.resblocks\.(\d+)\.(.+)$", name)
        if match is None:
            continue  # attn_mask-like leftovers have no HF name
        layer, rest = match.groups()
        prefix = f"encoder.layers.{layer}."
        fused = re.match(r"^attn\.in_proj_(weight|bias)$", rest)
        if fused:
            q, k, v = tensor.chunk(3, dim=0)
            for part, value in zip("qkv", (q, k, v)):
                out[f"{prefix}self_attn.{part}_proj.{fused.group(1)}"] = value.contiguous()
            continue
        out[prefix + _swap_prefix(rest, ((new, old) for old, new in _BLOCK_RENAMES.items()))] = tensor
    return out


def _swap_prefix(name: str, pairs: Iterable[tuple[str, str]]) -> str:
    """`name` with the first matching prefix `a` of (a, b) in `pairs` replaced by `b`; unchanged if none."""
    for a, b in pairs:
        if name.startswith(a):
            return b + name.removeprefix(a)
    return name


def hf_config(architecture_config: Mapping, *, quick_gelu: bool, with_text: bool, with_projection: bool = True) -> dict:
    """A transformers config.json for the exported model: CLIPVisionModelWithProjection, CLIPVisionModel for a
    tower saved without its projection (no projection_dim: the embedding size is then unknown), or CLIPModel
    when the text tower comes along (`architecture_config` is open_clip's config dict)."""
    act = "quick_gelu" if quick_gelu else "gelu"
    vision_config = _vision_config(architecture_config, act=act)
    if not with_text:
        if not with_projection:
            del vision_config["projection_dim"]
        return {
            "architectures": ["CLIPVisionModelWithProjection" if with_projection else "CLIPVisionModel"],
            "model_type": "clip_vision_model",
            **vision_config,
            "torch_dtype": "float32",
        }
    text = architecture_config["text_cfg"]
    text_config = {
        "hidden_size": text["width"],
        "intermediate_size": int(text["width"] * text.get("mlp_ratio", 4)),
        "num_attention_heads": text["heads"],
        "num_hidden_layers": text["layers"],
        "max_position_embeddings": text["context_length"],
        "vocab_size": text["vocab_size"],
        "layer_norm_eps": 1e-5,
        "hidden_act": act,
        "projection_dim": architecture_config["embed_dim"],
    }
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": architecture_config["embed_dim"],
        "vision_config": vision_config,
        "text_config": text_config,
        "torch_dtype": "float32",
    }


def _vision_config(architecture_config: Mapping, *, act: str) -> dict:
    """transformers' CLIPVisionConfig fields for open_clip's `vision_cfg`."""
    vision = architecture_config["vision_cfg"]
    width = vision["width"]
    return {
        "hidden_size": width,
        "intermediate_size": int(width * vision.get("mlp_ratio", 4)),
        "num_attention_heads": width // vision.get("head_width", 64),
        "num_hidden_layers": vision["layers"],
        "patch_size": vision["patch_size"],
        "image_size": vision["image_size"],
        "num_channels": 3,
        "layer_norm_eps": 1e-5,
        "hidden_act": act,
        "projection_dim": architecture_config["embed_dim"],
    }
