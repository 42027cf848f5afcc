"""Write a low-rank update of an image tower as a PEFT LoRA adapter a transformers CLIPVisionModel loads.

The update comes as factors per block of rows of an open_clip weight, ΔW[row:row + rows] = B·A (any scale folded
into B). Module names are those of a
transformers ≥ 5 CLIPVisionModel (`encoder.layers.{i}.self_attn.{q,k,v,out}_proj`, `mlp.fc1`, `mlp.fc2`; also
FusionBench's bare CLIPVisionTransformer): open_clip's fused in_proj update B·A splits into q, k, v as the row
blocks of B with the same A, exactly (a block of W rows is q, k or v by its offset). Every module gets lora_alpha =
its rank, so PEFT's scale α/r is 1; `r` is the largest rank, and modules of a lower rank are listed in
`rank_pattern` and `alpha_pattern`.
`adapter_config.json` and `adapter_model.safetensors` (and mergelab's own notes, `mergelab.json`: the recipe of a
fine-tune, which PEFT ignores) are written together or not at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from engine.errors import ShapeError
from engine.io.atomic import all_or_nothing
from engine.io.formats.peft_adapter import CONFIG, NOTES, PEFT_PREFIX

_BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
_HF_MODULES = {
    "attn.out_proj.weight": "self_attn.out_proj",
    "mlp.c_fc.weight": "mlp.fc1",
    "mlp.c_proj.weight": "mlp.fc2",
}


@dataclass(frozen=True)
class ExportedAdapter:
    folder: Path
    modules: int  # LoRA modules written (q, k, v count separately)
    rank: int  # the largest rank (adapter_config's r)
    bytes: int  # size of adapter_model.safetensors


def export_lora_adapter(
    factors: Mapping[tuple[str, int, int], tuple[torch.Tensor, torch.Tensor]],
    folder: Path,
    *,
    base_model: str = "",
    notes: Mapping[str, Any] | None = None,
) -> ExportedAdapter:
    """Write `factors` ((open_clip tower name, row, rows) → (B [rows, r], A [r, in])) as a PEFT adapter; `notes`
    (source, class_names, training) become what mergelab reads as the checkpoint's metadata."""
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    for (name, row, _), (up, down) in factors.items():
        for module, b in _hf_modules(name, row, up, width=down.shape[1]):
            tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = down.float().contiguous().clone()  # [r, in]
            tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = b.float().contiguous().clone()  # [out, r]
            ranks[module] = down.shape[0]
    config = _adapter_config(ranks, base_model=base_model)
    folder = Path(folder)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "adapter_model.safetensors"
    targets = [weights, folder / CONFIG, *([folder / NOTES] if notes else [])]
    try:
        with all_or_nothing(targets) as (tmp_weights, tmp_config, *tmp_notes):
            save_file(tensors, str(tmp_weights), metadata={"format": "pt"})
            tmp_config.write_text(json.dumps(config, indent=2), encoding="utf-8")
            for tmp in tmp_notes:
                tmp.write_text(json.dumps(dict(notes or {}), indent=2), encoding="utf-8")
    except BaseException:
        if made:
            folder.rmdir()  # nothing of the adapter landed in it
        raise
    return ExportedAdapter(folder, len(ranks), config["r"], weights.stat().st_size)


def _adapter_config(ranks: Mapping[str, int], *, base_model: str) -> dict[str, Any]:
    """PEFT's adapter_config.json for plain LoRA with scale 1 (α = r): the largest rank as `r`, the modules of
    another rank in `rank_pattern` and `alpha_pattern`."""
    r = max(ranks.values())
    other = {m: k for m, k in ranks.items() if k != r}
    return {
        "peft_type": "LORA",
        "base_model_name_or_path": base_model or None,
        "r": r,
        "lora_alpha": r,
        "rank_pattern": other,
        "alpha_pattern": other,
        "target_modules": sorted(ranks),
        "use_rslora": False,
        "use_dora": False,
        "fan_in_fan_out": False,
        "bias": "none",
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "inference_mode": True,
        "task_type": None,
    }


def _hf_modules(name: str, row: int, up: torch.Tensor, *, width: int) -> list[tuple[str, torch.Tensor]]:
    """(HF module name, its rows of B) for the update of rows row:row + len(B) of one open_clip weight."""
    match = _BLOCK.match(name)
    if match is None or match.group(2) not in (*_HF_MODULES, "attn.in_proj_weight"):
        raise ShapeError(name, "is no Linear of a Hugging Face CLIP vision model", fix="export tower Linears only")
    layer, rest = match.groups()
    block = f"encoder.layers.{layer}."
    if rest == "attn.in_proj_weight" and up.shape[0] == 3 * width:
        return [(f"{block}self_attn.{p}_proj", b) for p, b in zip("qkv", up.chunk(3, dim=0))]
    if rest == "attn.in_proj_weight":
        return [(f"{block}self_attn.{'qkv'[row // width]}_proj", up)]
    return [(block + _HF_MODULES[rest], up)]
