"""TALL masks and Consensus merging (Wang et al., "Localizing Task Information for Improved Model Merging and
Compression", ICML 2024).

§3, the TALL mask of task t over a multi-task vector τ_MTL [P]:  m_t = 1{|τ_t| ≥ λ·|τ_MTL − τ_t|}: the entries
where task t's own update dominates what the other tasks add. Task t is then served by θ₀ + m_t ⊙ τ_MTL
(engine/merge/task_models.py). §4, Consensus merging keeps only the entries at least k tasks use:
m_cons = 1{Σ_t m_t ≥ k} (k = 2 removes the "selfish" weights one task uses and the "catastrophic" ones none does),
θ = θ₀ + λ·(m_cons ⊙ τ_MTL), with τ_MTL the base merge's vector (task arithmetic's sum, or TIES's).

Choices where the paper leaves room (docstrings of the methods repeat them):
- one threshold λ for every task (the paper picks λ_t per task on validation data; a data-free merge cannot);
- Consensus builds its masks against the base merge's vector at scale 1 (Σ_t τ_t; TIES's τ_m), so its final λ
  stays a cheap scale; the authors' code builds them from the task-arithmetic vector at its tuned scale;
- the comparison is ≥ as in the paper (FusionBench 0.2.33 compares |θ₀ − τ_t|, not |τ_t|: a bug we do not copy).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from engine.merge.sparse_methods import no_base, ties
from engine.merge.task_models import TaskParts


def tall_masks(T: torch.Tensor, tau_mtl: torch.Tensor, *, mask_lambda: float) -> torch.Tensor:
    """bool [K, P]: m_t = |τ_t| ≥ λ·|τ_MTL − τ_t| for each row τ_t of T [K, P], τ_MTL [P]."""
    masks = torch.empty(T.shape, dtype=torch.bool, device=T.device)  # [K, P]
    for k in range(T.shape[0]):  # one [P] temporary at a time, not [K, P] floats
        torch.ge(T[k].abs(), torch.sub(tau_mtl, T[k]).abs_().mul_(mask_lambda), out=masks[k])
    return masks


def consensus_mask(T: torch.Tensor, tau_mtl: torch.Tensor, *, mask_lambda: float, k: float) -> torch.Tensor:
    """bool [P]: the entries whose TALL mask is on for at least k tasks."""
    count = torch.zeros(T.shape[1], dtype=torch.int16, device=T.device)  # [P] tasks using each entry
    for row in range(T.shape[0]):
        count += torch.le(torch.sub(tau_mtl, T[row]).abs_().mul_(mask_lambda), T[row].abs())
    return count >= int(k)


def task_sum(T: torch.Tensor) -> torch.Tensor:
    """Σ_t τ_t [P]: task arithmetic's multi-task vector at scale 1."""
    return T.sum(dim=0)


def consensus_ta_keep(
    T: torch.Tensor, params: Mapping[str, Any], importance: torch.Tensor | None = None
) -> torch.Tensor:
    """bool [K, P]: what Consensus TA keeps of each task vector, m_cons ∧ (τ_t ≠ 0), masks against Σ_t τ_t."""
    return _kept_of_each(T, consensus_mask(T, task_sum(T), mask_lambda=params["mask_lambda"], k=params["k"]))


def consensus_ties_keep(
    T: torch.Tensor, params: Mapping[str, Any], importance: torch.Tensor | None = None
) -> torch.Tensor:
    """bool [K, P]: what Consensus TIES keeps of each task vector, m_cons ∧ (τ_t ≠ 0), masks against τ_m."""
    merged = ties(no_base(T[0]), T, density=params["density"], lam=1.0, out=torch.empty_like(T[0]))  # [P]
    return _kept_of_each(T, consensus_mask(T, merged, mask_lambda=params["mask_lambda"], k=params["k"]))


def _kept_of_each(T: torch.Tensor, consensus: torch.Tensor) -> torch.Tensor:
    """bool [K, P]: each task's non-zero entries inside the consensus mask [P] (the keep panel's per-task share)."""
    return torch.logical_and(T != 0, consensus)


def consensus_ta_parts(
    theta0: torch.Tensor, T: torch.Tensor, *, mask_lambda: float, k: float, keep: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ₀, m_cons ⊙ Σ_t τ_t): Consensus TA at λ is θ₀ + λ·direction. A cached `keep` [K, P] gives m_cons as the
    entries any task keeps (where every τ_t is 0 the sum is 0 too: the same direction)."""
    total = task_sum(T)  # [P]
    consensus = consensus_mask(T, total, mask_lambda=mask_lambda, k=k) if keep is None else keep.any(dim=0)
    return theta0, total.mul_(consensus)


def consensus_ties_parts(
    theta0: torch.Tensor,
    T: torch.Tensor,
    *,
    density: float,
    mask_lambda: float,
    k: float,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ₀, m_cons ⊙ τ_m) with τ_m TIES's merged vector at λ = 1, the masks built against it."""
    merged = ties(no_base(theta0), T, density=density, lam=1.0, out=torch.empty_like(theta0))  # [P]
    consensus = consensus_mask(T, merged, mask_lambda=mask_lambda, k=k) if keep is None else keep.any(dim=0)
    return theta0, merged.mul_(consensus)


def consensus_ta(
    theta0: torch.Tensor,
    T: torch.Tensor,
    *,
    mask_lambda: float,
    k: float,
    lam: float,
    keep: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    _, direction = consensus_ta_parts(theta0, T, mask_lambda=mask_lambda, k=k, keep=keep)
    return torch.add(theta0, direction, alpha=lam, out=out)


def consensus_ties(
    theta0: torch.Tensor,
    T: torch.Tensor,
    *,
    density: float,
    mask_lambda: float,
    k: float,
    lam: float,
    keep: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    _, direction = consensus_ties_parts(theta0, T, density=density, mask_lambda=mask_lambda, k=k, keep=keep)
    return torch.add(theta0, direction, alpha=lam, out=out)


def tall_parts(theta0: torch.Tensor, T: torch.Tensor, *, mask_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ₀, Σ_t τ_t): the shared model TALL masks store is task arithmetic's, θ₀ + α·Σ_t τ_t."""
    return theta0, task_sum(T)


def tall(
    theta0: torch.Tensor, T: torch.Tensor, *, mask_lambda: float, lam: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The shared model θ₀ + α·Σ_t τ_t [P] (each task is served by `tall_task_parts`)."""
    return torch.add(theta0, task_sum(T), alpha=lam, out=out)


def tall_task_parts(theta0: torch.Tensor, T: torch.Tensor, *, mask_lambda: float, lam: float) -> TaskParts:
    """τ_MTL = α·Σ_t τ_t and the TALL masks against it: task t is θ₀ + m_t ⊙ τ_MTL."""
    tau_mtl = task_sum(T).mul_(lam)  # [P]
    return TaskParts.of(tau_mtl, tall_masks(T, tau_mtl, mask_lambda=mask_lambda))
