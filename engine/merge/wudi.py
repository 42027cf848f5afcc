"""WUDI merging: each layer's merged task matrix optimised to end the interference its task vectors start.

Cheng et al., "Whoever Started the Interference Should End It: Guiding Data-Free Model Merging via Task
Vectors", ICML 2025, §4. The rows of a linear layer's task vector τₜ [out, in] span (approximately) the
inputs that task feeds the layer, so the interference of a merged matrix τ_m on task t is measured through
τₜ itself; per layer, τ_m minimises

    L(τ_m) = Σₜ ‖(τ_m − τₜ) τₜᵀ‖²_F / ‖τₜ‖²_F

by Adam (lr 1e-5, no weight decay, 300 steps, started at Σₜ τₜ), as the paper's code does; the optimum
is not reached in 300 steps, and the result depends on the start, the step count and the learning rate,
so all three are the paper's. Matrices: every 2-D tensor (the paper's ViT code and FusionBench both
optimise every 2-D task-vector tensor of the image tower). The other tensors get the mean of the task
vectors (the paper's code; FusionBench keeps their sum instead: we follow the authors). The paper has no
scaling coefficient (θ = θ₀ + Δ); α scales Δ here like the other subspace methods, default 1.

The gradient is exact and one product per step: with Gₜ = τₜᵀ τₜ / ‖τₜ‖² [in, in],
∇L = 2 (τ_m A − B), A = Σₜ Gₜ and B = Σₜ τₜ Gₜ, both computed once per layer; autograd of the loss as
written costs K products [out, in] @ [in, out] and back per step instead. The loss itself is
⟨τ_m A, τ_m⟩ − 2⟨τ_m, B⟩ + Σₜ ‖τₜ τₜᵀ‖² / ‖τₜ‖², nearly free once τ_m A is there. Layers of one shape are
optimised together as one batch: Adam is elementwise, so that is the same as one optimiser per layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.merge.subspace import Memo, no_memo
from engine.params import ParamSpec

WUDI_LR = 1e-5
WUDI_STEPS = 300
StepProgress = Callable[[int, int, float], None]
"""(step done, steps in all, the loss summed over every layer) after each Adam step; may raise to cancel."""


@dataclass(frozen=True)
class WudiRun:
    """The optimised Δ [P] and the loss summed over layers before the first step and after each one."""

    delta: torch.Tensor
    losses: tuple[float, ...]


@dataclass
class _Group:
    """The layers of one shape, optimised as one batch."""

    names: tuple[str, ...]
    merged: torch.Tensor  # [L, out, in] τ_m, the optimised variable
    gram: torch.Tensor  # [L, in, in] A
    target: torch.Tensor  # [L, out, in] B
    constant: torch.Tensor  # [L] Σₜ ‖τₜτₜᵀ‖² / ‖τₜ‖²

    def gradient_and_loss(self) -> tuple[torch.Tensor, float]:
        merged_gram = self.merged @ self.gram  # [L, out, in] τ_m A
        loss = (merged_gram * self.merged).sum() - 2 * (self.merged * self.target).sum() + self.constant.sum()
        return 2 * (merged_gram - self.target), float(loss)  # [L, out, in], scalar


def _terms(T: torch.Tensor, spec: ParamSpec, names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """Σₜ τₜ, A, B and the constant of the layers `names` (one shape), accumulated one task at a time so
    the temporaries stay at one task's [L, in, in]. Read-only once made (they may be cached)."""
    start = torch.stack([spec.matrix_view(T, n).sum(dim=0) for n in names])  # [L, out, in] Σₜ τₜ
    gram = torch.zeros(*start.shape[:-2], start.shape[-1], start.shape[-1], dtype=T.dtype, device=T.device)
    target, constant = torch.zeros_like(start), torch.zeros(len(names), dtype=T.dtype, device=T.device)
    for k in range(T.shape[0]):  # K tasks: a handful of batched products each
        tau = torch.stack([spec.matrix_view(T, n)[k] for n in names])  # [L, out, in] τₜ
        norm = tau.square().sum(dim=(-2, -1)).clamp(min=torch.finfo(T.dtype).tiny)  # [L] ‖τₜ‖²
        g = tau.transpose(-1, -2) @ tau / norm[:, None, None]  # [L, in, in] Gₜ
        gram += g
        target += tau @ g  # [L, out, in]
        constant += g.square().sum(dim=(-2, -1)) * norm  # [L] ‖τₜᵀτₜ‖² / ‖τₜ‖²
    return start, gram, target, constant


def wudi_run(
    T: torch.Tensor,
    spec: ParamSpec,
    *,
    steps: int = WUDI_STEPS,
    lr: float = WUDI_LR,
    progress: StepProgress | None = None,
    memo: Memo = no_memo,
) -> WudiRun:
    """Δ [P] of WUDI after `steps` Adam steps on every 2-D tensor (others: the mean), with its loss curve."""
    delta = torch.empty(T.shape[1], dtype=T.dtype, device=T.device)  # [P]
    matrices = spec.matrices()
    keep = torch.ones(spec.numel, dtype=torch.bool, device=T.device)  # [P] the tensors that are not matrices
    for name in matrices:
        keep[spec.slice_of(name)] = False
    delta[keep] = T[:, keep].mean(dim=0)  # [P_other]
    groups = []
    for names in spec.by_shape(matrices).values():  # the terms do not depend on the step count: memo them
        start, gram, target, constant = memo(("wudi_terms", names), lambda n=names: _terms(T, spec, n))
        groups.append(_Group(names, start.clone(), gram, target, constant))  # τ_m starts as a copy of Σₜ τₜ
    optimiser = torch.optim.Adam([g.merged for g in groups], lr=lr, weight_decay=0.0)
    losses = []
    for step in range(steps + 1):
        total = 0.0
        for g in groups:
            g.merged.grad, loss = g.gradient_and_loss()
            total += loss
        losses.append(total)
        if progress is not None and step > 0:
            progress(step, steps, total)
        if step == steps:
            break
        optimiser.step()
    for g in groups:
        for name, merged in zip(g.names, g.merged):  # one [out, in] copy per layer
            spec.matrix_view(delta, name).copy_(merged)
    return WudiRun(delta, tuple(losses))


def wudi_parts(
    theta0: torch.Tensor,
    T: torch.Tensor,
    *,
    spec: ParamSpec,
    steps: float = WUDI_STEPS,
    progress: StepProgress | None = None,
    memo: Memo = no_memo,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ₀, Δ): WUDI's θ = θ₀ + α·Δ."""
    return theta0, wudi_run(T, spec, steps=int(steps), progress=progress, memo=memo).delta


def wudi(
    theta0: torch.Tensor,
    T: torch.Tensor,
    *,
    spec: ParamSpec,
    alpha: float,
    steps: float = WUDI_STEPS,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    base, direction = wudi_parts(theta0, T, spec=spec, steps=steps)  # [P] each
    return torch.add(base, direction, alpha=alpha, out=out)  # [P]
