"""STA importance maps: first-order Taylor importance of each task-vector entry (provisional definition).

STA (Tian, Lai et al., "Beyond Task Vectors: Selective Task Arithmetic Based on Importance Metrics",
arXiv 2411.16139) scores parameters by the first-order Taylor estimate of the loss change when an entry
is removed. Only the paper's abstract and third-party summaries were available to us, so these choices
are ours and the UI marks the method "provisional definition":
- importance Iᵢ = mean over calibration batches of |xᵢ · ∂L/∂θᵢ| at the fine-tuned weights, with
  x = τ (variant "tau", default: the change of loss if the task vector entry is dropped) or x = θ_ft
  (variant "theta", the paper's |θ ∇L| as reported by the review);
- variant "grad" stores the bare sensitivity mean |∂L/∂θᵢ| at the weights given (the pretrained θ₀
  for forgetting, engine/merge/forgetting.py), so |v ⊙ ∇L| follows for any vector v without new passes;
- L = cross-entropy of the task's zero-shot head on normalised image features; calibration data = the
  task's train split, `batches` seeded batches of `batch_size`;
- for linearized checkpoints (model "linearized") ∇L is the gradient of the linearized model the merge is
  evaluated as, f₀ + J(θ₀)·(θ − θ₀), i.e. J(θ₀)ᵀ ∂L/∂f at θ_ft, not the network's gradient at θ_ft (at θ₀
  the two agree, so "grad" maps are shared);
- normalised per parameter tensor by that tensor's largest importance (so every tensor has max 1),
  which makes one threshold comparable across tensors of different scale.
Maps are held as uint8 log-scale codes (engine/sta/codes.py), shipped with a collection
(its manifest's "importance" entry per task) or cached in the data home keyed by the fine-tuned
checkpoint's tensors_sha256; every file names the checkpoint it belongs to and is refused for another.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from engine.data.tasks import LabelledImages, normalize_batch
from engine.errors import CheckpointError
from engine.eval.suite import EvalSuite
from engine.eval.tangent import trainable_embedding
from engine.io.atomic import atomic_path
from engine.models import Preprocess
from engine.params import ParamSpec
from engine.sta.codes import encode
from engine.train.finetune import batch_indices

KINDS: Mapping[str, str] = MappingProxyType(
    {
        "tau": "|τ ⊙ ∇L| at each fine-tuned model (STA merging)",
        "theta": "|θ ⊙ ∇L| at each fine-tuned model (STA merging)",
        "grad0": "|∇L| at the pretrained model (STA forgetting)",
    }
)


@dataclass(frozen=True)
class ImportanceConfig:
    variant: Literal["tau", "theta", "grad"] = "tau"
    model: Literal["network", "linearized"] = "network"  # which model's gradient (see the module docstring)
    batches: int = 8
    batch_size: int = 128
    seed: int = 0


def taylor_importance(
    visual: nn.Module,
    theta_ft: torch.Tensor,
    theta0: torch.Tensor,
    spec: ParamSpec,
    head: torch.Tensor,
    data: LabelledImages,
    preprocess: Preprocess,
    config: ImportanceConfig = ImportanceConfig(),
) -> torch.Tensor:
    """Raw importance [P] of a fine-tuned tower θ_ft [P] (not normalised); config.model "linearized" takes
    the gradient of the model linearized at θ₀."""
    model = copy.deepcopy(visual).eval()  # a private template: the shared one may be in use elsewhere
    linearized_at = theta0.detach() if config.model == "linearized" else None
    params = theta_ft.detach().clone().requires_grad_(True)  # [P]
    scale = {"tau": theta_ft - theta0, "theta": theta_ft, "grad": torch.ones_like(theta_ft)}[config.variant].detach()
    total = torch.zeros_like(theta_ft)  # [P]
    order = batch_indices(
        len(data), steps=config.batches, batch_size=min(config.batch_size, len(data)), seed=config.seed
    )
    for idx in order:
        x = normalize_batch(data.images[idx], preprocess)  # [B, 3, S, S]
        features, _ = trainable_embedding(model, spec, params, x, linearized_at=linearized_at)  # [B, E]
        logits = F.normalize(features, dim=-1) @ head.T  # [B, C]
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, data.labels[idx]), params)
        total += (scale * grad).abs()
    return total / len(order)  # [P]


def normalize_per_tensor(importance: torch.Tensor, spec: ParamSpec) -> torch.Tensor:
    """Divide each tensor's entries by that tensor's largest importance → [P] in [0, 1]."""
    lengths = torch.tensor(spec.sizes, device=importance.device)
    peaks = torch.segment_reduce(importance, "max", lengths=lengths)  # [n_tensors]
    return importance / torch.repeat_interleave(peaks.clamp(min=torch.finfo(importance.dtype).tiny), lengths)


def importance_file(cache_dir: Path, checkpoint_sha: str, config: ImportanceConfig, *, task: str = "") -> Path:
    """Keyed by checkpoint, configuration and task (several tasks' maps share the pretrained checkpoint)."""
    key = hashlib.sha256(json.dumps({"sha": checkpoint_sha, "task": task, **asdict(config)}).encode()).hexdigest()[:16]
    return Path(cache_dir) / "importance" / f"{checkpoint_sha[:16]}-{key}.safetensors"


def save_importance(path: Path, codes: torch.Tensor, *, checkpoint_sha: str, config: ImportanceConfig) -> None:
    """Store a map's uint8 codes [P] with the checkpoint it belongs to in the file's metadata."""
    if codes.dtype != torch.uint8:
        raise CheckpointError(
            path,
            f"importance codes must be uint8, got {codes.dtype}",
            fix="encode the normalised map with engine.sta.codes.encode",
        )
    with atomic_path(Path(path)) as tmp:
        save_file(
            {"importance": codes.detach().cpu().contiguous()},
            str(tmp),
            metadata={
                "checkpoint_sha256": checkpoint_sha,
                "config": json.dumps(asdict(config)),
                "encoding": "log10-uint8-v1",
            },
        )


def load_importance(path: Path, *, checkpoint_sha: str, numel: int) -> torch.Tensor:
    """Read a map's uint8 codes [P] and check they were computed for this checkpoint and parameter count."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        owner, encoding = meta.get("checkpoint_sha256"), meta.get("encoding")
        importance = load_file(str(path))["importance"]
    except (SafetensorError, OSError, KeyError) as exc:
        raise CheckpointError(
            path, f"is not a readable importance map ({exc})", fix="delete it; it is recomputed from the checkpoint"
        ) from exc
    if owner != checkpoint_sha:
        raise CheckpointError(
            path,
            f"belongs to checkpoint {str(owner)[:12]}…, not {checkpoint_sha[:12]}…",
            fix="use the map computed for this checkpoint, or recompute it",
        )
    if encoding != "log10-uint8-v1" or importance.dtype != torch.uint8:
        raise CheckpointError(
            path,
            f"is not in the log10-uint8-v1 encoding (found {encoding}, {importance.dtype})",
            fix="delete it; it is recomputed from the checkpoint",
        )
    if importance.numel() != numel:
        raise CheckpointError(
            path,
            f"has {importance.numel()} entries, the checkpoint {numel}",
            fix="recompute the map for this architecture",
        )
    return importance


@dataclass(frozen=True)
class ImportanceSource:
    """Where one task's map lives: shipped with the collection, else in the data-home cache."""

    task: str
    checkpoint_sha: str  # the checkpoint the map belongs to
    config: ImportanceConfig
    cache_dir: Path
    shipped: Path | None = None

    @property
    def path(self) -> Path:
        return self.shipped or importance_file(self.cache_dir, self.checkpoint_sha, self.config, task=self.task)

    @property
    def available(self) -> bool:
        """Whether reading the map needs no gradient pass."""
        return self.path.is_file()


def importance_codes(
    suite: EvalSuite, theta_ft: torch.Tensor, theta0: torch.Tensor, source: ImportanceSource
) -> torch.Tensor:
    """The uint8 codes [P] of one task's normalised map at θ_ft: shipped, else cached, else computed and cached.

    A shipped map of another checkpoint is an error, not a silent recompute: the collection is wrong.
    """
    numel = suite.spec.numel
    if source.shipped is not None or source.available:
        return load_importance(source.path, checkpoint_sha=source.checkpoint_sha, numel=numel)
    raw = taylor_importance(
        suite.visual,
        theta_ft,
        theta0,
        suite.spec,
        suite.heads[source.task],
        suite.tasks[source.task].split("train"),
        suite.preprocess,
        source.config,
    )  # [P]
    codes = encode(normalize_per_tensor(raw, suite.spec)).cpu()  # [P] uint8
    save_importance(source.path, codes, checkpoint_sha=source.checkpoint_sha, config=source.config)
    return codes
