"""Task arithmetic (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023).

Addition: θ = θ₀ + Σₜ λₜ τₜ (their Eq. 2 with one λ; one λ per task is the natural extension
used by later work, e.g. AdaMerging's task-wise variant). Negation is a negative λ.
"""

from __future__ import annotations

import torch

from engine.merge.kernels import weighted_sum


def task_arithmetic(
    theta0: torch.Tensor, T: torch.Tensor, *, lam: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """θ₀ [P] + Σₜ lam[t] · T[t]; `lam` is [K] (the registry broadcasts a global λ)."""
    return weighted_sum(theta0, T, lam, out=out)  # [P]
