"""Contrastive pretraining of the zoo's tiny CLIP from scratch on a generated, captioned image pool.

CLIP's symmetric InfoNCE loss (Radford et al., 2021, Fig. 3) with one change: captions repeat in a
batch (the pool has a few hundred unique captions), so every pair sharing a caption counts as a
positive and the targets are the row-normalised "same caption" matrix (soft targets, as the
zoo's CPU prototype did: docs/zoo.md). The schedule is by steps (not wall clock) so a build is
reproducible. Zero-shot accuracy is checked every `eval_every` steps, and the checkpoint kept is
the latest one inside the demo's quality band (see `pick_checkpoint`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.data.tasks import normalize_batch
from engine.models import preprocess_of
from engine.train.finetune import batch_indices, cosine_with_warmup

Progress = Callable[[float, str], None]
ZeroShotProbe = Callable[[nn.Module], Mapping[str, float]]  # model → {task: val accuracy}


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 2400
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 200
    eval_every: int = 400
    seed: int = 0


@dataclass(frozen=True)
class Snapshot:
    step: int
    loss: float
    zero_shot: Mapping[str, float]
    state: Mapping[str, torch.Tensor] = field(repr=False)


def soft_clip_loss(
    img: torch.Tensor, txt: torch.Tensor, caption_ids: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric contrastive loss; img, txt [B, E] normalised, caption_ids [B]."""
    logits = scale * img @ txt.T  # [B, B]
    same = (caption_ids[:, None] == caption_ids[None, :]).float()  # [B, B]
    targets = same / same.sum(dim=1, keepdim=True)  # [B, B], symmetric support
    loss_i = torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()
    loss_t = torch.sum(-targets * F.log_softmax(logits.T, dim=1), dim=1).mean()
    return (loss_i + loss_t) / 2


def pretrain_clip(
    clip: nn.Module,
    images: torch.Tensor,
    caption_ids: torch.Tensor,
    caption_tokens: torch.Tensor,
    config: PretrainConfig,
    *,
    probe: ZeroShotProbe,
    progress: Progress | None = None,
) -> list[Snapshot]:
    """Train `clip` in place on images [N, 3, S, S] uint8 with caption_ids [N] into caption_tokens [U, L].

    Returns a snapshot (state copy + zero-shot val accuracies) every `eval_every` steps and at the end.
    """
    preprocess = preprocess_of(clip.visual)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=config.betas)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, total=config.steps, warmup=config.warmup_steps)
    )
    snapshots: list[Snapshot] = []
    order = batch_indices(images.shape[0], steps=config.steps, batch_size=config.batch_size, seed=config.seed)
    for step, idx in enumerate(order, start=1):
        clip.train()
        ids = caption_ids[idx]  # [B]
        img = F.normalize(clip.encode_image(normalize_batch(images[idx], preprocess)), dim=-1)  # [B, E]
        txt = F.normalize(clip.encode_text(caption_tokens[ids]), dim=-1)  # [B, E]
        loss = soft_clip_loss(img, txt, ids, clip.logit_scale.exp().clamp(max=100.0))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % config.eval_every == 0 or step == config.steps:
            snapshots.append(_snapshot(clip, step, loss.item(), probe))
        if progress is not None:
            progress(step / config.steps, f"loss {loss.item():.3f}")
    return snapshots


def _snapshot(clip: nn.Module, step: int, loss: float, probe: ZeroShotProbe) -> Snapshot:
    clip.eval()
    with torch.no_grad():
        zero_shot = dict(probe(clip))
    return Snapshot(step, loss, zero_shot, {k: v.detach().clone() for k, v in clip.state_dict().items()})


def pick_checkpoint(
    snapshots: list[Snapshot],
    *,
    chance: Mapping[str, float],
    band: tuple[float, float] = (0.40, 0.75),
    margin: float = 0.05,
    ceiling: float = 0.95,
) -> Snapshot:
    """The latest snapshot whose zero-shot val accuracies suit the demo, else the last one.

    Suits = mean within `band`, every task at least `margin` above chance and none above `ceiling`:
    the zoo must leave room between zero-shot and fine-tuned accuracy for merges to show.
    """

    def suits(s: Snapshot) -> bool:
        acc = s.zero_shot
        mean = sum(acc.values()) / len(acc)
        return (
            band[0] <= mean <= band[1]
            and all(acc[t] >= chance[t] + margin for t in acc)
            and all(a <= ceiling for a in acc.values())
        )

    fitting = [s for s in snapshots if suits(s)]
    return (fitting or snapshots)[-1]
