"""Writers of the checkpoint formats researchers bring, for tests and bench/pool_load.py.

Each writes what the real tools write: open_clip state dicts (safetensors, torch.save), task_vectors'
pickled `src.modeling.ImageEncoder` / `ClassificationHead` modules (under that module name, with
torchvision preprocessing attached), Hugging Face CLIPModel / CLIPVisionModel folders (q/k/v split,
no projection in the fine-tunes), and tangent task arithmetic's linearized dicts.
"""

from __future__ import annotations

import contextlib
import json
import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from engine.io.formats.hf_clip import hf_config, open_clip_to_hf
from engine.models import clip_parameter_names, create_clip, model_config

FORMATS = ("open_clip", "open_clip_pt", "task_vectors", "hf", "tangent")


class ImageEncoder(nn.Module):
    """Stand-in for task_vectors' src.modeling.ImageEncoder: `.model` is an open_clip CLIP without its text
    transformer, plus the train/val preprocessing the real class keeps."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        from torchvision import transforms

        self.model = clip
        delattr(self.model, "transformer")
        self.val_preprocess = transforms.Compose(
            [transforms.Resize(224), transforms.CenterCrop(224), transforms.ToTensor()]
        )
        self.cache_dir = None


class ClassificationHead(nn.Linear):
    """Stand-in for task_vectors' src.modeling.ClassificationHead (weight = logit scale × text embeddings)."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__(weights.shape[1], weights.shape[0])
        self.normalize = True
        self.weight = nn.Parameter(weights.clone())
        self.bias = nn.Parameter(torch.zeros(weights.shape[0]))


@contextlib.contextmanager
def as_module(name: str, *classes: type) -> Iterator[None]:
    """Pickle `classes` under module `name` (e.g. src.modeling), as the task_vectors code base did."""
    saved = {k: sys.modules.get(k) for k in ("src", name)}
    module = types.ModuleType(name)
    for cls in classes:
        setattr(module, cls.__name__, cls)
        cls.__module__ = name
    sys.modules.setdefault("src", types.ModuleType("src"))
    sys.modules[name] = module
    try:
        yield
    finally:
        for cls in classes:
            cls.__module__ = __name__
        for key, old in saved.items():
            if old is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = old


def clip_with(architecture: str, state: Mapping[str, torch.Tensor], *, quick_gelu: bool = True) -> nn.Module:
    clip = create_clip(architecture, quick_gelu=quick_gelu)
    clip.load_state_dict(state)
    return clip


def write_pool(
    root: Path,
    fmt: str,
    *,
    architecture: str,
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Mapping[str, Mapping[str, torch.Tensor]],
    heads: Mapping[str, torch.Tensor],
    quick_gelu: bool = True,
) -> Path:
    """Write a pool in `fmt` under `root`: `pretrained` is a full CLIP state dict, `finetuned` maps each
    task to an image-tower state dict (open_clip names), `heads` each task to a [C, E] head."""
    root.mkdir(parents=True, exist_ok=True)
    full = {t: {**pretrained, **{f"visual.{k}": v for k, v in s.items()}} for t, s in finetuned.items()}
    if fmt == "open_clip":
        save_file(_contiguous(pretrained), str(root / "pretrained.safetensors"))
        for task, state in full.items():
            (root / "finetuned").mkdir(exist_ok=True)
            save_file(_contiguous(state), str(root / "finetuned" / f"{task}.safetensors"))
    elif fmt == "open_clip_pt":
        torch.save(dict(pretrained), root / "pretrained.pt")
        for task, state in full.items():
            (root / "finetuned").mkdir(exist_ok=True)
            torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, root / "finetuned" / f"{task}.pt")
    elif fmt == "task_vectors":
        _write_task_vectors(root, architecture, pretrained, full, heads, quick_gelu=quick_gelu)
    elif fmt == "hf":
        _write_hf(root / "pretrained", pretrained, architecture, quick_gelu=quick_gelu)
        for task, state in finetuned.items():
            vision_only = {f"visual.{k}": v for k, v in state.items() if k != "proj"}  # CLIPVisionModel: no projection
            _write_hf(root / "finetuned" / task, vision_only, architecture, quick_gelu=quick_gelu)
    elif fmt == "tangent":
        _write_tangent(root, architecture, pretrained, full, heads, quick_gelu=quick_gelu)
    else:
        raise ValueError(f"unknown format {fmt!r}; one of {FORMATS}")
    return root


def _write_task_vectors(root: Path, architecture: str, pretrained, full, heads, *, quick_gelu: bool) -> None:
    """The task-vectors repository's layout: pickled ImageEncoder modules and ClassificationHead heads."""
    with as_module("src.modeling", ImageEncoder, ClassificationHead):
        torch.save(ImageEncoder(clip_with(architecture, pretrained, quick_gelu=quick_gelu)), root / "zeroshot.pt")
        for task, state in full.items():
            (root / task).mkdir(exist_ok=True)
            encoder = ImageEncoder(clip_with(architecture, state, quick_gelu=quick_gelu))
            torch.save(encoder, root / task / "finetuned.pt")
            torch.save(ClassificationHead(heads[task]), root / f"head_{task}.pt")


def _write_tangent(root: Path, architecture: str, pretrained, full, heads, *, quick_gelu: bool) -> None:
    """The tangent-task-arithmetic layout: linearized fine-tunes as model.params / model.params0 lists."""
    names = [n for n in clip_parameter_names(architecture) if not n.startswith("transformer.")]
    with as_module("src.modeling", ImageEncoder, ClassificationHead):
        torch.save(ImageEncoder(clip_with(architecture, pretrained, quick_gelu=quick_gelu)), root / "zeroshot.pt")
        for task, state in full.items():
            (root / f"{task}Val").mkdir(exist_ok=True)
            linear = {f"model.params.{i}": state[n] for i, n in enumerate(names)}
            linear.update({f"model.params0.{i}": pretrained[n] for i, n in enumerate(names)})
            torch.save({**linear, "model_name": architecture}, root / f"{task}Val" / "linear_finetuned.pt")
            torch.save(ClassificationHead(heads[task]), root / f"head_{task}Val.pt")


def write_image_folders(
    root: Path, tasks: Mapping[str, tuple[str, ...]], *, per_class: int = 3, size: int = 16, seed: int = 0
) -> None:
    """Random PNGs as `<root>/data/<task>/<split>/<class>/<i>.png`: the datasets a discovered pool expects."""
    gen = torch.Generator().manual_seed(seed)
    for task, classes in tasks.items():
        for split in ("train", "val", "test"):
            for name in classes:
                folder = root / "data" / task / split / name
                folder.mkdir(parents=True)
                for i in range(per_class):
                    pixels = torch.randint(0, 256, (size, size, 3), generator=gen, dtype=torch.uint8).numpy()
                    Image.fromarray(pixels).save(folder / f"{i}.png")


def write_open_clip_training_checkpoint(path: Path, architecture: str, state: Mapping[str, torch.Tensor]) -> Path:
    """open_clip's training/main.py checkpoint, `epoch_N.pt`: {epoch, name, state_dict, optimizer, scaler}, the
    model wrapped in DistributedDataParallel (keys `module.`) and a real AdamW state after one step: an
    exp_avg and exp_avg_sq per parameter, keyed by parameter index, shaped like the weights."""
    clip = clip_with(architecture, state)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=1e-5, weight_decay=0.2)
    for parameter in clip.parameters():
        parameter.grad = torch.full_like(parameter, 1e-3)
    optimizer.step()
    clip.load_state_dict(state)  # the weights as given; the optimizer keeps its moments
    checkpoint = {
        "epoch": 3,
        "name": f"2024_05_01-12_00_00-model_{architecture}-lr_1e-05-b_128-j_8-p_amp",
        "state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": torch.amp.GradScaler("cpu").state_dict(),
    }
    torch.save(checkpoint, path)
    return path


def write_hf_vision(
    folder: Path,
    visual: Mapping[str, torch.Tensor],
    architecture: str,
    *,
    projection: bool,
    prefixed: bool = True,
    quick_gelu: bool = True,
) -> Path:
    """A Hugging Face vision-only fine-tune of an open_clip image tower (`visual`, no "visual." prefix):
    CLIPVisionModelWithProjection (with `visual_projection.weight`) or CLIPVisionModel (without), keys under
    `vision_model.` (transformers < 5) or unprefixed (`prefixed=False`, transformers >= 5)."""
    folder.mkdir(parents=True, exist_ok=True)
    hf = open_clip_to_hf({f"visual.{k}": v for k, v in visual.items() if projection or k != "proj"})
    if not prefixed:
        hf = {k.removeprefix("vision_model."): v for k, v in hf.items()}
    save_file(_contiguous(hf), str(folder / "model.safetensors"))
    config = hf_config(model_config(architecture), quick_gelu=quick_gelu, with_text=False)
    config["architectures"] = ["CLIPVisionModelWithProjection" if projection else "CLIPVisionModel"]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _write_hf(folder: Path, state: Mapping[str, torch.Tensor], architecture: str, *, quick_gelu: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with_text = any(not k.startswith("visual.") for k in state)
    save_file(_contiguous(open_clip_to_hf(state)), str(folder / "model.safetensors"))
    config = hf_config(model_config(architecture), quick_gelu=quick_gelu, with_text=with_text)
    if not with_text:
        config["architectures"] = ["CLIPVisionModel"]
    (folder / "config.json").write_text(json.dumps(config))


def _contiguous(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def random_pool(
    architecture: str, tasks: tuple[str, ...], *, num_classes: int = 2, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """A random CLIP (both towers, QuickGELU), a fine-tune of its image tower per task (θ₀ + 1e-3·noise)
    and a [num_classes, E] head per task: what bench/pool_load.py and the ViT-B-32 pool test write."""
    torch.manual_seed(seed)
    clip = create_clip(architecture, quick_gelu=True)
    pretrained = {k: v.detach().clone() for k, v in clip.state_dict().items()}
    visual = {k.removeprefix("visual."): v for k, v in pretrained.items() if k.startswith("visual.")}
    finetuned = {t: {k: v + 1e-3 * torch.randn_like(v) for k, v in visual.items()} for t in tasks}
    embed = visual["proj"].shape[1]
    heads = {t: torch.nn.functional.normalize(torch.randn(num_classes, embed), dim=-1) * 100 for t in tasks}
    return pretrained, finetuned, heads


def tiny_source(architecture: str, tasks: Mapping[str, tuple[str, ...]], *, seed: int) -> dict:
    """A tiny model and what the format tests write of it: the CLIP, its state dict, its image tower,
    a seeded perturbation of the tower per task and a zero-shot head per task."""
    from engine.eval.heads import build_head
    from tests.builders import perturbed

    torch.manual_seed(seed)
    clip = create_clip(architecture, quick_gelu=True)
    pretrained = {k: v.clone() for k, v in clip.state_dict().items()}
    visual = {k.removeprefix("visual."): v for k, v in pretrained.items() if k.startswith("visual.")}
    finetuned = {t: perturbed(visual, seed=seed + 13 + i) for i, t in enumerate(tasks)}
    heads = {t: build_head(clip, architecture, names, ("a photo of a {}.",)) for t, names in tasks.items()}
    return {"clip": clip, "pretrained": pretrained, "visual": visual, "finetuned": finetuned, "heads": heads}
