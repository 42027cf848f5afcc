"""LoRA adapters in PEFT's folder format, read as updates of an image tower (θ = θ₀ + ΔW).

A PEFT folder holds `adapter_config.json` and `adapter_model.safetensors` (or `adapter_model.bin`, read by the
restricted unpickler of engine/io/formats/torch_zip.py). Each adapted Linear module `m` has `m.lora_A.weight`
[r, in] and `m.lora_B.weight` [out, r]; the update is ΔW = s·B·A with PEFT's scale s = α/r, or α/√r with
`use_rslora` (Kalajdzievski 2023, rsLoRA, eq. 2), r and α per module from `rank_pattern`/`alpha_pattern`
(PEFT matches a pattern key as a suffix of the module name, `(.*\\.)?<key>$`).

Module names, after PEFT's `base_model.model.` prefix:
- Hugging Face CLIP: `vision_model.encoder.layers.{i}.self_attn.{q,k,v,out}_proj`, `mlp.fc1`, `mlp.fc2` (a
  CLIPModel, or a CLIPVisionModel saved by transformers < 5), or the same without `vision_model.` (transformers ≥ 5
  CLIPVisionModel, and FusionBench's adapters on the bare CLIPVisionTransformer). q, k, v update the rows 0:W, W:2W,
  2W:3W of open_clip's fused `attn.in_proj_weight`.
- open_clip towers (prefix `visual.` or `model.visual.` or none): PEFT wraps the whole `nn.MultiheadAttention`
  (`…attn`: one pair over the fused in_proj [3W, W]; `…attn.base_layer.out_proj`: one on out_proj), or plain
  Linears (`attn.out_proj`, `mlp.c_fc`, `mlp.c_proj`). PEFT up to 0.21.2 applies the out_proj part of such a
  wrapped attention twice in its own forward and `merge_and_unload` (an open upstream bug); mergelab applies
  ΔW = s·B·A once, so numbers from PEFT's own runs on such adapters differ, and reading one says so.

Every tensor of the file must be placed; otherwise the adapter is refused naming the keys left over (PEFT itself only
warns and runs freshly initialised weights). Text-tower and projection modules are refused by name (task vectors are
image-tower only), as are DoRA and PEFT types other than LORA. `fan_in_fan_out` concerns GPT-2's Conv1D layers,
which CLIP has none of: PEFT turns it off for nn.Linear, and so does this reader. `modules_to_save` copies of tower
modules replace those weights; one outside the tower with a 2-D weight [C, E] is the task's head.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.errors import CheckpointError
from engine.home import read_document
from engine.io.formats.hf_clip import hf_to_open_clip
from engine.io.formats.lazy import LazyTensor, LowRankUpdated, Opener
from engine.io.formats.safetensors_file import read_header
from engine.io.formats.torch_zip import read_torch_zip, state_tensors

CONFIG = "adapter_config.json"
NOTES = "mergelab.json"  # a mergelab fine-tune's recipe beside its adapter (engine/jobs/finetune.py); PEFT ignores it
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."
KNOTS_PREFIXES = ("vision_model.base_model.model.", "lora_model.base_model.model.")  # KnOTS' .pt state dicts
KNOTS_NAME = re.compile(r"lora-r(?P<r>\d+)-alpha(?P<alpha>\d+(?:\.\d+)?)")  # KnOTS' file names: r and α
FIX_SAVE = "save the adapter again with PEFT's save_pretrained (adapter_config.json + adapter_model.safetensors)"
OUT_PROJ_TWICE = (
    "an adapter PEFT made on an open_clip nn.MultiheadAttention: PEFT up to 0.21.2 applies its out_proj update twice "
    "in its own forward and merge_and_unload, mergelab once (ΔW = s·B·A), so PEFT's own numbers differ"
)
_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<factor>[AB])\.weight$")
_HF_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(self_attn\.[qkvo]\w*_proj|mlp\.fc[12])$")
_OC_LAYER = re.compile(r"^transformer\.resblocks\.(\d+)\.(attn|attn\.base_layer\.out_proj|attn\.out_proj|mlp\.c_\w+)$")
_HF_TARGETS = {
    "self_attn.out_proj": "attn.out_proj.weight",
    "mlp.fc1": "mlp.c_fc.weight",
    "mlp.fc2": "mlp.c_proj.weight",
}
_OC_TARGETS = {
    "attn": "attn.in_proj_weight",
    "attn.base_layer.out_proj": "attn.out_proj.weight",
    "attn.out_proj": "attn.out_proj.weight",
    "mlp.c_fc": "mlp.c_fc.weight",
    "mlp.c_proj": "mlp.c_proj.weight",
}
_OUTSIDE = ("text_model.", "text_projection", "visual_projection", "logit_scale")
_HF_TOWER = ("vision_model.", "embeddings.", "encoder.", "pre_layrnorm.", "post_layernorm.")
_OC_TOWER = ("class_embedding", "positional_embedding", "conv1.", "ln_pre.", "ln_post.", "transformer.", "proj")
_TOWER_PREFIXES = (*_HF_TOWER, *_OC_TOWER, "visual.", "model.visual.")


@dataclass(frozen=True)
class LoraSettings:
    """What adapter_config.json says about the update's scale and where it applies."""

    r: int
    alpha: float
    use_rslora: bool = False
    target_modules: tuple[str, ...] | str = ()  # names, or one regex PEFT matches in full
    rank_pattern: Mapping[str, int] = field(default_factory=dict)
    alpha_pattern: Mapping[str, float] = field(default_factory=dict)
    fan_in_fan_out: bool = False
    modules_to_save: tuple[str, ...] = ()

    def scale(self, module: str) -> tuple[int, float]:
        """(r, s) of one module: its rank and PEFT's scale α/r (α/√r with rsLoRA)."""
        r = int(_pattern_value(self.rank_pattern, module, self.r))
        alpha = float(_pattern_value(self.alpha_pattern, module, self.alpha))
        return r, alpha / (math.sqrt(r) if self.use_rslora else r)


@dataclass(frozen=True)
class LowRankPart:
    """s·B·A added to rows `row:row + B.shape[0]` of one open_clip weight."""

    module: str  # the adapter's module name, for messages
    row: int
    scale: float
    down: LazyTensor  # A [r, in]
    up: LazyTensor  # B [out, r]

    @property
    def rank(self) -> int:
        return self.down.shape[0]


@dataclass(frozen=True)
class Adapter:
    """A PEFT LoRA adapter placed on open_clip image-tower names."""

    path: Path
    settings: LoraSettings
    parts: Mapping[str, tuple[LowRankPart, ...]]  # open_clip tower name → its low-rank updates
    replaced: Mapping[str, LazyTensor]  # modules_to_save copies of tower weights (open_clip names)
    head: Mapping[str, LazyTensor]  # a modules_to_save head: "weight" [C, E] (and "bias"), else empty
    warnings: tuple[str, ...] = ()

    @property
    def rank(self) -> int:
        """The largest rank of its updates (rank_pattern may lower some)."""
        return max((p.rank for ps in self.parts.values() for p in ps), default=0)


def is_peft_adapter(path: Path) -> bool:
    """A folder PEFT's save_pretrained wrote (adapter_config.json beside the adapter weights), or one of KnOTS'
    released `.pt` adapters (`is_knots_adapter_file`)."""
    path = Path(path)
    if path.is_file():
        return is_knots_adapter_file(path)
    return path.is_dir() and (path / CONFIG).is_file() and any((path / w).is_file() for w in WEIGHTS)


def is_knots_adapter_file(path: Path) -> bool:
    """KnOTS' released adapters (`<task>_lora-r16-alpha16-dropout0.1.pt`): `torch.save` of its LoRA-wrapped Hugging
    Face vision model's state dict (KnOTS' models/huggingface_clip.py, HFLoRACLIPVisionModel), whose LoRA factors sit
    under PEFT's adapter name: `vision_model.base_model.model.<module>.lora_A.default.weight` (`lora_model.` in its
    older saves). The pickle is read by the restricted unpickler; a file it refuses is not one."""
    if path.suffix not in (".pt", ".pth", ".bin"):
        return False
    try:
        keys = state_tensors(read_torch_zip(path)).keys()
    except CheckpointError:
        return False
    return any(k.startswith(KNOTS_PREFIXES) and k.endswith(".lora_A.default.weight") for k in keys)


def read_adapter(folder: Path) -> Adapter:
    """Settings and located factors of the adapter in `folder` (or KnOTS' `.pt` file); no tensor data is read."""
    folder = Path(folder)
    if folder.is_file():
        settings, tensors = _knots_file(folder)
    else:
        settings, tensors = read_settings(folder / CONFIG), _adapter_tensors(folder)
    lora = {k: v for k, v in tensors.items() if _LORA.match(k)}
    others = {k: v for k, v in tensors.items() if k not in lora}
    pairs = _pairs(lora, folder)
    _check_patterns(settings, set(pairs), folder)
    _refuse_outside(set(pairs), folder)
    parts: dict[str, list[LowRankPart]] = {}
    unplaced: list[str] = []
    for module, (down, up) in sorted(pairs.items()):
        placed = _place(module, down, up, settings, folder)
        if placed is None:
            unplaced.append(module)
            continue
        name, part = placed
        parts.setdefault(name, []).append(part)
    replaced, head, left = _saved_modules(others, settings, folder)
    unplaced += left
    if unplaced:
        raise CheckpointError(
            folder,
            f"adapter keys mergelab cannot place on a CLIP image tower: {unplaced[:4]}"
            + (f" (and {len(unplaced) - 4} more)" if len(unplaced) > 4 else ""),
            fix="use an adapter of a CLIP image tower (Hugging Face CLIPModel/CLIPVisionModel or open_clip), "
            "targeting its attention and MLP Linears",
        )
    wrapped = any(p.module.endswith("attn.base_layer.out_proj") for ps in parts.values() for p in ps)
    return Adapter(folder, settings, {k: tuple(v) for k, v in parts.items()}, replaced, head,
                   (OUT_PROJ_TWICE,) if wrapped else ())  # fmt: skip


def adapted_tower(adapter: Adapter, base: Mapping[str, LazyTensor], *, base_path: Path) -> dict[str, LazyTensor]:
    """The image tower θ₀ + ΔW (open_clip names) of `adapter` on the tower `base` (θ₀); the task vector is then ΔW
    over the adapted weights and zero elsewhere. Shapes are checked here: an adapter of another base is refused."""
    tower = dict(base)
    for name, parts in adapter.parts.items():
        weight = base.get(name)
        if weight is None or len(weight.shape) != 2:
            raise _other_base(adapter, base_path, f"{parts[0].module} updates {name!r}, which the base lacks")
        for part in parts:
            rows, cols = part.up.shape[0], part.down.shape[1]
            if cols != weight.shape[1] or part.row + rows > weight.shape[0]:
                raise _other_base(
                    adapter,
                    base_path,
                    f"{part.module} is a [{rows}, {cols}] update, {name!r} of the base is {list(weight.shape)}",
                )
        tower[name] = LowRankUpdated(weight, tuple((p.row, p.scale, p.down, p.up) for p in parts))
    for name, value in adapter.replaced.items():
        if name not in base or tuple(base[name].shape) != tuple(value.shape):
            found = list(base[name].shape) if name in base else "absent"
            raise _other_base(adapter, base_path, f"modules_to_save {name!r} is {list(value.shape)}, base: {found}")
        tower[name] = value
    return tower


def _other_base(adapter: Adapter, base_path: Path, detail: str) -> CheckpointError:
    return CheckpointError(
        adapter.path,
        f"is an adapter for another base model than {base_path.name} ({detail})",
        fix="open it in a pool whose pretrained model is the adapter's base (adapter_config.json names it in "
        "base_model_name_or_path)",
    )


def read_settings(config: Path) -> LoraSettings:
    """adapter_config.json, refusing what mergelab does not read as ΔW = s·B·A."""
    fix = "restore the adapter's adapter_config.json"
    try:
        raw = json.loads(read_document(config, error=CheckpointError, fix=fix))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(config, f"unreadable adapter config ({exc})", fix=fix) from exc
    if not isinstance(raw, dict):
        raise CheckpointError(config, "is not a JSON object", fix=fix)
    kind = str(raw.get("peft_type", "")).upper()
    if kind != "LORA":
        raise CheckpointError(
            config,
            f"is a PEFT {kind or 'untyped'} adapter; mergelab reads LORA adapters only",
            fix="merge the adapter into its model (PEFT's merge_and_unload) and open the full checkpoint",
        )
    for flag, what in (("use_dora", "DoRA"), ("lora_bias", "a trained LoRA bias")):
        if raw.get(flag):
            raise CheckpointError(
                config,
                f"is a {what} adapter ({flag}: true); its update is not s·B·A",
                fix="merge it into its model (PEFT's merge_and_unload) and open the full checkpoint",
            )
    targets = raw.get("target_modules") or ()
    try:
        return LoraSettings(
            r=int(raw["r"]),
            alpha=float(raw.get("lora_alpha", raw["r"])),
            use_rslora=bool(raw.get("use_rslora", False)),
            target_modules=targets if isinstance(targets, str) else tuple(targets),
            rank_pattern=dict(raw.get("rank_pattern") or {}),
            alpha_pattern=dict(raw.get("alpha_pattern") or {}),
            fan_in_fan_out=bool(raw.get("fan_in_fan_out", False)),
            modules_to_save=tuple(raw.get("modules_to_save") or ()),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(config, f"has no valid rank r or lora_alpha ({exc!r})", fix=fix) from exc


def _pattern_value(pattern: Mapping[str, float], module: str, default: float) -> float:
    key = next((k for k in pattern if re.match(rf"(.*\.)?({k})$", module)), None)
    return default if key is None else pattern[key]


def _knots_file(path: Path) -> tuple[LoraSettings, dict[str, LazyTensor]]:
    """Settings and LoRA factors (PEFT's saved names) of a KnOTS `.pt` adapter. The file holds no config: r and α
    come from its name (`lora-r16-alpha16`), else α = r, a scale of 1, as KnOTS' merging code uses the bare B·A.
    Its other tensors, the frozen base weights and the projection, are not read: the pool's pretrained model
    stands for them, and an adapter of another base is refused by its factors' shapes."""
    factors = {}
    for key, tensor in state_tensors(read_torch_zip(path)).items():
        prefix = next((p for p in KNOTS_PREFIXES if key.startswith(p)), None)
        if prefix is not None and re.search(r"\.lora_[AB]\.default\.weight$", key):
            factors[key.removeprefix(prefix).replace(".default.weight", ".weight")] = tensor
    ranks = {k.removesuffix(".lora_A.weight"): t.shape[0] for k, t in factors.items() if k.endswith(".lora_A.weight")}
    named = KNOTS_NAME.search(path.name)
    if named is not None:
        return LoraSettings(r=int(named["r"]), alpha=float(named["alpha"])), factors
    r = max(ranks.values(), default=1)
    other = {m: k for m, k in ranks.items() if k != r}
    return LoraSettings(r=r, alpha=float(r), rank_pattern=other, alpha_pattern=other), factors


def _adapter_tensors(folder: Path) -> dict[str, LazyTensor]:
    weights = next((folder / w for w in WEIGHTS if (folder / w).is_file()), None)
    if weights is None:
        raise CheckpointError(folder, f"has {CONFIG} but none of {', '.join(WEIGHTS)}", fix=FIX_SAVE)
    tensors = dict(read_header(weights).tensors) if weights.suffix == ".safetensors" else None
    if tensors is None:
        tensors = state_tensors(read_torch_zip(weights))
    return {k.removeprefix(PEFT_PREFIX): v for k, v in tensors.items()}


def _pairs(lora: Mapping[str, LazyTensor], folder: Path) -> dict[str, tuple[LazyTensor, LazyTensor]]:
    """module → (A, B); a module with one factor only is refused."""
    found: dict[str, dict[str, LazyTensor]] = {}
    for key, tensor in lora.items():
        match = _LORA.match(key)
        found.setdefault(match["module"], {})[match["factor"]] = tensor
    lonely = sorted(m for m, f in found.items() if set(f) != {"A", "B"})
    if lonely:
        raise CheckpointError(folder, f"modules with lora_A or lora_B only: {lonely[:4]}", fix=FIX_SAVE)
    return {m: (f["A"], f["B"]) for m, f in found.items()}


def _check_patterns(settings: LoraSettings, modules: set[str], folder: Path) -> None:
    """target_modules, rank_pattern and alpha_pattern must each name a module the file holds."""
    config = folder / CONFIG
    for what, pattern in (("rank_pattern", settings.rank_pattern), ("alpha_pattern", settings.alpha_pattern)):
        idle = sorted(k for k in pattern if not any(re.match(rf"(.*\.)?({k})$", m) for m in modules))
        if idle:
            raise CheckpointError(
                config,
                f"{what} names no module of the adapter: {idle[:4]}",
                fix=f"remove those {what} entries, or save the adapter again with PEFT",
            )
    targets = settings.target_modules
    if isinstance(targets, str):
        missing = [] if any(re.fullmatch(targets, m) for m in modules) else [targets]
    else:
        missing = sorted(t for t in targets if not any(m == t or m.endswith(f".{t}") for m in modules))
    if missing:
        raise CheckpointError(
            config,
            f"target module {missing[0]!r} has no lora_A/lora_B in the adapter weights",
            fix="the weights file is incomplete or belongs to another adapter: " + FIX_SAVE,
        )


def _refuse_outside(modules: set[str], folder: Path) -> None:
    """Text-tower and projection modules, by name: a task vector covers the image tower only. In a full open_clip
    CLIP (modules under `visual.`) the top-level `transformer.` is the text tower."""
    full_clip = any(m.startswith(("visual.", "model.visual.")) for m in modules)
    text = "transformer." if full_clip else _OUTSIDE
    outside = sorted(m for m in modules if m.startswith(_OUTSIDE) or m.startswith(text) or ".text_model." in m)
    if outside:
        raise CheckpointError(
            folder,
            f"adapts the text tower or a projection ({outside[:3]}); task vectors cover the image tower only",
            fix="train the adapter on the image tower only (target its vision_model / visual modules)",
        )


def _place(
    module: str, down: LazyTensor, up: LazyTensor, settings: LoraSettings, folder: Path
) -> tuple[str, LowRankPart] | None:
    """The open_clip weight and row offset `module` updates; None when it is not an image-tower Linear."""
    target = _tower_target(module)
    if target is None:
        return None
    name, slot = target
    r, scale = settings.scale(module)
    if len(down.shape) != 2 or len(up.shape) != 2 or down.shape[0] != r or up.shape[1] != r:
        raise CheckpointError(
            folder,
            f"module {module!r} has lora_A {list(down.shape)} and lora_B {list(up.shape)}, the config says rank {r}",
            fix="fix r / rank_pattern in adapter_config.json, or " + FIX_SAVE,
        )
    row = slot * up.shape[0]
    return name, LowRankPart(module, row, scale, down, up)


def _tower_target(module: str) -> tuple[str, int] | None:
    """(open_clip tower name, q/k/v slot) for a module name of either naming."""
    hf = re.sub(r"^vision_model\.", "", module)
    match = _HF_LAYER.match(hf)
    if match is not None:
        layer, rest = match.groups()
        block = f"transformer.resblocks.{layer}."
        if rest in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            return block + "attn.in_proj_weight", "qkv".index(rest[len("self_attn.")])
        return (block + _HF_TARGETS[rest], 0) if rest in _HF_TARGETS else None
    oc = re.sub(r"^(model\.)?visual\.", "", module)
    match = _OC_LAYER.match(oc)
    if match is None:
        return None
    layer, rest = match.groups()
    return (f"transformer.resblocks.{layer}.{_OC_TARGETS[rest]}", 0) if rest in _OC_TARGETS else None


def _saved_modules(
    others: Mapping[str, LazyTensor], settings: LoraSettings, folder: Path
) -> tuple[dict[str, LazyTensor], dict[str, LazyTensor], list[str]]:
    """modules_to_save copies: tower weights (renamed to open_clip's), a head, and keys placed nowhere."""
    saved = {k: v for k, v in others.items() if any(_under(k, m) for m in settings.modules_to_save)}
    left = sorted(set(others) - set(saved))
    tower = {k: v for k, v in saved.items() if not k.startswith(_OUTSIDE) and _tower_name(k) is not None}
    heads = {k: v for k, v in saved.items() if not k.startswith((*_OUTSIDE, *_TOWER_PREFIXES))}
    left += sorted(set(saved) - set(tower) - set(heads))  # outside the image tower, or a tower part not placed
    head: dict[str, LazyTensor] = {}
    if heads:
        weights = [k for k, v in heads.items() if k.endswith(".weight") and len(v.shape) == 2]
        if len(weights) != 1 or any(k.rsplit(".", 1)[0] != weights[0].rsplit(".", 1)[0] for k in heads):
            left += sorted(heads)
        else:
            head = {k.rsplit(".", 1)[1]: v for k, v in heads.items()}
    replaced = {_tower_name(k): v for k, v in tower.items()}
    return replaced, head, left


def _under(key: str, module: str) -> bool:
    return key.startswith(f"{module}.") or f".{module}." in key


def _tower_name(key: str) -> str | None:
    """The open_clip tower name of a saved tower parameter (either naming), None if it is not one (or a Hugging
    Face q/k/v projection saved whole, which has no open_clip tensor of its own)."""
    if key.startswith(_HF_TOWER):
        renamed = hf_to_open_clip({key: _NO_TENSOR})
        name = next(iter(renamed), "")
        return name.removeprefix("visual.") if ".self_attn." not in name and "encoder." not in name else None
    oc = re.sub(r"^(model\.)?visual\.", "", key)
    return oc if oc.startswith(_OC_TOWER) and oc != "proj" else None


class _Placeholder(LazyTensor):
    """A name-only tensor: lets hf_to_open_clip rename one key without a file behind it."""

    shape = (0,)
    dtype = torch.float32

    def read_into(self, out: torch.Tensor) -> None:  # pragma: no cover - never read
        raise AssertionError("a placeholder is never read")

    def opened_by(self, opener: Opener) -> LazyTensor:  # pragma: no cover
        return self


_NO_TENSOR = _Placeholder()
