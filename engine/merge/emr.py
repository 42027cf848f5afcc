"""EMR-Merging (Huang et al., "EMR-Merging: Tuning-Free High-Performance Model Merging", NeurIPS 2024, §3):
elect one unified task vector, then keep a mask and a rescaler per task.

    γ = sign(Σ_t τ_t);  ε = max_t over the tasks agreeing with γ of |τ_t|;  τ_uni = γ ⊙ ε      (elect, Eq. 2–3)
    M_t = 1{τ_t ⊙ τ_uni > 0}                                                                (mask, Eq. 4)
    r_t = Σ|τ_t| / Σ|M_t ⊙ τ_uni|                                                           (rescaler, Eq. 5)
    θ_t = θ₀ + λ·r_t·(M_t ⊙ τ_uni)

The paper has no λ (λ = 1); ours scales every task's update so a sweep can show what the rescalers already do.
A task with no entry agreeing with the elected sign gets r_t = 0 (its mask is empty: θ_t = θ₀).
"""

from __future__ import annotations

import torch

from engine.merge.task_models import TaskParts


def unified_vector(T: torch.Tensor) -> torch.Tensor:
    """τ_uni [P]: the elected sign times the largest magnitude among the tasks that agree with it."""
    elected = T.sum(dim=0).sign_()  # [P]
    largest = torch.zeros_like(elected)  # [P]
    for k in range(T.shape[0]):  # one [P] temporary at a time
        torch.maximum(largest, torch.mul(T[k], elected).clamp_(min=0), out=largest)
    return largest.mul_(elected)


def emr_masks_and_rescalers(T: torch.Tensor, unified: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(bool [K, P] masks M_t, float32 [K] rescalers r_t) of T [K, P] against τ_uni [P]."""
    masks = torch.empty(T.shape, dtype=torch.bool, device=T.device)  # [K, P]
    rescale = torch.zeros(T.shape[0], dtype=torch.float32, device=T.device)  # [K]
    for k in range(T.shape[0]):
        torch.gt(torch.mul(T[k], unified), 0, out=masks[k])
        kept = float(torch.where(masks[k], unified, 0.0).abs_().sum())
        rescale[k] = float(T[k].abs().sum()) / kept if kept > 0 else 0.0
    return masks, rescale


def emr_parts(theta0: torch.Tensor, T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ₀, τ_uni): the shared model EMR stores is θ₀ + λ·τ_uni."""
    return theta0, unified_vector(T)


def emr(theta0: torch.Tensor, T: torch.Tensor, *, lam: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """The shared model θ₀ + λ·τ_uni [P] (what EMR stores besides its masks; each task uses `emr_task_parts`)."""
    return torch.add(theta0, unified_vector(T), alpha=lam, out=out)


def emr_task_parts(theta0: torch.Tensor, T: torch.Tensor, *, lam: float) -> TaskParts:
    """Shared λ·τ_uni, the packed masks M_t and the rescalers r_t: task t is θ₀ + r_t·(M_t ⊙ λ·τ_uni)."""
    unified = unified_vector(T)  # [P]
    masks, rescale = emr_masks_and_rescalers(T, unified)
    return TaskParts.of(unified.mul_(lam), masks, rescale)
