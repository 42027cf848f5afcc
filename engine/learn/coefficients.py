"""Block-scaled merges with learned coefficients, and the loop that learns them (aTLAS and DV-BASI share it).

θ(C) = θ_base + Σₖ C[k, b(p)]·Dₖ[p] for directions D [K, P] (aTLAS: the task vectors, base θ₀;
DV-BASI: the difference vector δ, base θ_cur) and one coefficient per direction and block (Zhang et al.,
NeurIPS 2024, Eq. 2-4; Wang et al., AAAI-26, Eq. 2-4). A block is one parameter tensor, as in both
papers' code; `block_sizes(spec, level="layer")` offers coarser blocks and `isotropic` a single one.
Only C is a parameter: D and θ_base are frozen, and the encoder runs through `functional_call` on θ(C)
(or its linearization around θ₀ when the suite evaluates linearized checkpoints).

Objective per step: a batch from every task; supervised = Σₜ CE(headₜ · normalize(f(xₜ)), yₜ),
unsupervised = Σₜ mean prediction entropy (AdaMerging-style). Val is split once into a fit part (the
objective's data) and a selection part (early stopping with patience, model choice); test is never used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from engine.data.tasks import LabelledImages, normalize_batch
from engine.errors import ParameterError
from engine.eval.evaluate import accuracy_on
from engine.eval.suite import EvalSuite
from engine.eval.tangent import trainable_embedding
from engine.params import ParamSpec

Objective = Literal["supervised", "unsupervised"]


def block_sizes(spec: ParamSpec, *, level: str = "tensor") -> torch.Tensor:
    """Lengths [n_blocks] (long) of the contiguous blocks of the flat vector, tensor or layer level."""
    return torch.tensor([s.stop - s.start for _, s in spec.blocks(level=level)])


def combine(
    base: torch.Tensor,
    directions: torch.Tensor,
    coefficients: torch.Tensor,
    sizes: torch.Tensor,
    *,
    group: int = 1 << 12,
) -> torch.Tensor:
    """θ = base [P] + Σₖ coefficients[k, b] · directions[k] over contiguous blocks of `sizes` [n_blocks].

    Differentiable in `coefficients` only (base and directions are frozen). Forward and backward each read
    the directions once: a block of at least `group` entries is one matrix-vector product ([K] · [K, n] and
    [K, n] · [n]); runs of smaller blocks are handled together, up to `group` entries at a time, so the loop
    runs at most 2·P/group + 1 times whatever the number of blocks, and memory stays O(K · group)."""
    return _BlockCombination.apply(coefficients, base, directions, _Segments.of(sizes, group))


@dataclass(frozen=True)
class _Segments:
    """The flat vector cut at block boundaries into segments: one large block, or a run of small ones."""

    spans: tuple[tuple[int, int, int, torch.Tensor], ...]  # (start, stop, first block, block lengths [m])
    n_blocks: int

    @classmethod
    def of(cls, sizes: torch.Tensor, group: int) -> _Segments:
        spans: list[tuple[int, int, int, torch.Tensor]] = []
        run: list[int] = []  # lengths of consecutive small blocks not yet placed
        start = 0  # where the pending run, or else the next block, starts

        def place(first: int, lengths: list[int]) -> None:
            nonlocal start
            total = sum(lengths)
            spans.append((start, start + total, first, torch.tensor(lengths)))
            start += total

        pending = 0  # sum(run)
        for block, size in enumerate(sizes.tolist()):  # plan only: no tensor work per block
            if size >= group:
                if run:
                    place(block - len(run), run)
                    run, pending = [], 0
                place(block, [size])
                continue
            run.append(size)
            pending += size
            if pending >= group or block == sizes.numel() - 1:
                place(block + 1 - len(run), run)
                run, pending = [], 0
        return cls(tuple(spans), sizes.numel())


class _BlockCombination(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        coefficients: torch.Tensor,
        base: torch.Tensor,
        directions: torch.Tensor,  # type: ignore[override]
        segments: _Segments,
    ) -> torch.Tensor:
        merged = torch.empty_like(base)  # [P]
        for start, stop, first, lengths in segments.spans:
            part = directions[:, start:stop]  # [K, n]
            if lengths.numel() == 1:
                torch.addmv(base[start:stop], part.T, coefficients[:, first], out=merged[start:stop])
            else:
                scale = torch.repeat_interleave(
                    coefficients[:, first : first + lengths.numel()],
                    lengths.to(base.device),
                    dim=1,
                    output_size=stop - start,
                )  # [K, n]
                torch.add(base[start:stop], (scale * part).sum(0), out=merged[start:stop])
        ctx.save_for_backward(directions)
        ctx.segments = segments
        return merged

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (directions,) = ctx.saved_tensors
        segments: _Segments = ctx.segments
        out = grad.new_empty(directions.shape[0], segments.n_blocks)  # [K, n_blocks]
        for start, stop, first, lengths in segments.spans:
            part = directions[:, start:stop]  # [K, n]
            if lengths.numel() == 1:
                torch.mv(part, grad[start:stop], out=out[:, first])
            else:
                per_row = lengths.to(grad.device).expand(part.shape[0], -1).contiguous()  # [K, m]
                out[:, first : first + lengths.numel()] = torch.segment_reduce(
                    part * grad[start:stop], "sum", lengths=per_row, axis=1
                )
        return out, None, None, None


@dataclass(frozen=True)
class LearnConfig:
    objective: Objective = "supervised"
    lr: float = 1e-2
    weight_decay: float = 0.0
    epochs: int = 30
    patience: int = 5
    batch_size: int = 128  # images per step, split evenly over the tasks
    grad_clip: float = 1.0
    select_by: Literal["selection_accuracy", "fit_loss"] = "selection_accuracy"  # what early stopping watches
    seed: int = 0

    def __post_init__(self) -> None:
        self.check()  # a config that exists is valid

    def check(self) -> None:
        checks = [
            ("objective", self.objective in ("supervised", "unsupervised"), "use supervised or unsupervised"),
            ("lr", self.lr > 0, "use a positive learning rate"),
            ("epochs", self.epochs >= 1, "run at least 1 epoch"),
            ("patience", self.patience >= 1, "use a patience of at least 1 epoch"),
            ("select_by", self.select_by in ("selection_accuracy", "fit_loss"), "use selection_accuracy or fit_loss"),
            ("batch_size", self.batch_size >= 1, "use at least 1 image per step"),
        ]
        for name, ok, fix in checks:
            if not ok:
                raise ParameterError(name, f"invalid setting {getattr(self, name)!r}", fix=fix)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    loss: float  # mean objective over the epoch's steps
    selection: Mapping[str, float]  # per-task accuracy on the selection part of val
    coefficient_mean: float
    coefficient_std: float

    @property
    def mean_selection(self) -> float:
        return sum(self.selection.values()) / len(self.selection)


@dataclass(frozen=True)
class LearnResult:
    coefficients: torch.Tensor  # [K, n_blocks], the best epoch's (by `select_by`)
    best_epoch: int  # 0: the starting coefficients were never beaten
    history: tuple[EpochRecord, ...]


@dataclass(frozen=True)
class ValSplit:
    """Each task's val split cut once into a fit part and a selection part (seeded, disjoint)."""

    fit: Mapping[str, LabelledImages]
    select: Mapping[str, LabelledImages]

    @classmethod
    def of(cls, suite: EvalSuite, *, fraction: float = 0.5, seed: int = 0) -> ValSplit:
        fit, select = {}, {}
        for i, (task, data) in enumerate(suite.tasks.items()):
            val = data.split("val")
            order = torch.randperm(len(val), generator=torch.Generator().manual_seed(seed + i)).to(val.labels.device)
            cut = max(1, min(len(val) - 1, round(fraction * len(val))))
            fit[task] = LabelledImages(val.images[order[:cut]], val.labels[order[:cut]])
            select[task] = LabelledImages(val.images[order[cut:]], val.labels[order[cut:]])
        return cls(fit, select)


def learn_coefficients(
    suite: EvalSuite,
    base: torch.Tensor,
    directions: torch.Tensor,
    sizes: torch.Tensor,
    *,
    data: ValSplit,
    config: LearnConfig,
    init: float = 0.0,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> LearnResult:
    """Learn C [K, n_blocks] for θ(C) = combine(base, directions, C, sizes); AdamW with early stopping.

    `config.select_by`: "selection_accuracy" keeps the epoch with the best mean accuracy on the selection
    part (the start counts as epoch 0); "fit_loss" keeps the epoch with the lowest mean objective on the
    fit part and stops when it stagnates (DV-BASI's inner loop, as in its code)."""
    tasks = tuple(data.fit)
    coefficients = nn.Parameter(torch.full((directions.shape[0], sizes.numel()), init, device=base.device))
    optimizer = torch.optim.AdamW([coefficients], lr=config.lr, weight_decay=config.weight_decay)
    per_task = max(1, config.batch_size // len(tasks))
    steps = max(math.ceil(len(part) / per_task) for part in data.fit.values())
    generator = torch.Generator().manual_seed(config.seed)
    by_loss = config.select_by == "fit_loss"
    with torch.no_grad():
        start = -math.inf if by_loss else _mean_selection(suite, combine(base, directions, coefficients, sizes), data)
    best = (start, 0, coefficients.detach().clone())
    history, stale = [], 0
    for epoch in range(1, config.epochs + 1):
        losses = []
        for _ in range(steps):
            batch = {t: _draw(data.fit[t], per_task, generator) for t in tasks}
            loss = objective_loss(suite, combine(base, directions, coefficients, sizes), batch, config.objective)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_([coefficients], config.grad_clip)
            optimizer.step()
            losses.append(loss.item())
        with torch.no_grad():
            theta = combine(base, directions, coefficients, sizes)  # [P]
        record = _epoch_record(epoch, losses, selection_accuracy(suite, theta, data.select), coefficients.detach())
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        score = -record.loss if by_loss else record.mean_selection
        if score > best[0]:
            best, stale = (score, epoch, coefficients.detach().clone()), 0
        elif (stale := stale + 1) >= config.patience:  # `patience` epochs in a row without a better score
            break
    return LearnResult(best[2], best[1], tuple(history))


def _mean_selection(suite: EvalSuite, theta: torch.Tensor, data: ValSplit) -> float:
    """The mean accuracy of θ [P] on the selection part: the score of the start (epoch 0)."""
    accuracy = selection_accuracy(suite, theta, data.select)
    return sum(accuracy.values()) / len(accuracy)


def _epoch_record(
    epoch: int, losses: list[float], selection: Mapping[str, float], coefficients: torch.Tensor
) -> EpochRecord:
    """An epoch's record: its mean objective, the selection accuracy and the coefficients' spread."""
    spread = float(coefficients.std()) if coefficients.numel() > 1 else 0.0
    return EpochRecord(epoch, sum(losses) / len(losses), selection, float(coefficients.mean()), spread)


def objective_loss(
    suite: EvalSuite, theta: torch.Tensor, batch: Mapping[str, LabelledImages], objective: Objective
) -> torch.Tensor:
    """Σ over tasks of CE (supervised) or mean prediction entropy (unsupervised), one encoder pass for all."""
    images = torch.cat([b.images for b in batch.values()])  # [B, 3, H, W] uint8
    feats = F.normalize(_embed(suite, theta, images), dim=-1)  # [B, E]
    total = theta.new_zeros(())
    for task, chunk in zip(batch, torch.split(feats, [len(b) for b in batch.values()])):
        logits = chunk @ suite.heads[task].T  # [b, C]
        if objective == "supervised":
            total = total + F.cross_entropy(logits, batch[task].labels)
        else:
            total = total - (logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()
    return total


def selection_accuracy(suite: EvalSuite, theta: torch.Tensor, parts: Mapping[str, LabelledImages]) -> dict[str, float]:
    """Per-task accuracy of θ [P] on the selection part (f or f_lin, as the suite evaluates)."""
    return accuracy_on(theta.detach(), suite, parts)


def _embed(suite: EvalSuite, theta: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Raw embeddings [B, E] with gradients to θ: f(x; θ), or f₀ + J(θ − θ₀) for a linearized suite."""
    x = normalize_batch(images, suite.preprocess)  # [B, 3, S, S]
    with suite.lock:
        return trainable_embedding(suite.visual, suite.spec, theta, x, linearized_at=suite.linearized_at)[0]


def _draw(part: LabelledImages, n: int, generator: torch.Generator) -> LabelledImages:
    idx = torch.randint(len(part), (n,), generator=generator).to(part.labels.device)
    return LabelledImages(part.images[idx], part.labels[idx])
