"""Fine-tuning an image tower against a frozen zero-shot head (Ilharco et al., ICLR 2023, §2).

Only the image tower trains; the head is the task's zero-shot head from the pretrained text tower,
so the task vector τ = θ_ft − θ₀ lives entirely in the image tower and merges by task arithmetic.
Loss: cross-entropy on head @ normalize(f(x)); AdamW with linear warm-up then cosine decay.
Later issues add the linearized and τJp-regularised variants beside `finetune_standard`.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.data import LabelledImages, normalize_batch
from engine.models import Preprocess

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 300
    batch_size: int = 128
    lr: float = 3e-4
    weight_decay: float = 0.1
    warmup_steps: int = 20
    seed: int = 0


def cosine_with_warmup(step: int, *, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up to 1, then cosine to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def batch_indices(n: int, *, steps: int, batch_size: int, seed: int) -> torch.Tensor:
    """[steps, batch_size] indices from successive seeded permutations (every image once per epoch)."""
    gen = torch.Generator().manual_seed(seed)
    epochs = math.ceil(steps * batch_size / n)
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(epochs)])  # [epochs·n]
    return order[: steps * batch_size].view(steps, batch_size)


def finetune_standard(visual: nn.Module, head: torch.Tensor, train: LabelledImages, preprocess: Preprocess,
                      config: FinetuneConfig, *, progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """Train a copy of `visual` on `train`; returns its fp32 state dict (`visual` is untouched)."""
    model = copy.deepcopy(visual).float().train()
    head = head.detach()  # [C, E]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, total=config.steps, warmup=config.warmup_steps))
    batch_size = min(config.batch_size, len(train))
    for step, idx in enumerate(batch_indices(len(train), steps=config.steps, batch_size=batch_size,
                                             seed=config.seed)):
        x = normalize_batch(train.images[idx], preprocess)  # [B, 3, S, S]
        logits = F.normalize(model(x), dim=-1) @ head.T  # [B, C]
        loss = F.cross_entropy(logits, train.labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress((step + 1) / config.steps, f"loss {loss.item():.3f}")
    return {k: v.detach().clone() for k, v in model.eval().state_dict().items()}
