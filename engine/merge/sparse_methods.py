"""Sparse merges registered by name, each a thin call of the generalized kernel.

- TIES (Yadav et al., "TIES-Merging", NeurIPS 2023): trim to the top-d magnitudes per task, elect
  signs by mass, disjoint mean, θ₀ + λ τ_m (λ default 1).
- DARE (Yu et al., "Language Models are Super Mario", ICML 2024): drop entries with rate p, rescale
  survivors by 1/(1 − p), then task arithmetic; DARE-TIES puts the same dropped vectors through TIES's
  sign election and disjoint mean (no magnitude trim), as mergekit's dare_ties does.
- Magnitude: top-d per task, then task arithmetic: the plain baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from engine.merge.generalized import masked_merge
from engine.merge.sparsify import dare_keep_mask, magnitude_cuts, magnitude_mask


def magnitude_keep(T: torch.Tensor, params: Mapping[str, Any], importance: torch.Tensor | None = None) -> torch.Tensor:
    """bool [K, P]: the top round(d·P) magnitudes of each task vector (TIES's trim), d = `density`."""
    return magnitude_mask(T, float(params["density"]))


def drop_keep(T: torch.Tensor, params: Mapping[str, Any], importance: torch.Tensor | None = None) -> torch.Tensor:
    """bool [K, P]: DARE's survivors, Bernoulli(1 − p) per entry from the seeded stream, p = `drop`."""
    return dare_keep_mask(tuple(T.shape), float(params["drop"]), seed=int(params["seed"]), device=T.device)


def ties(
    theta0: torch.Tensor, T: torch.Tensor, *, density: float, lam: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    cut = magnitude_cuts(T, density)  # TIES's trim, applied by the kernel without a [K, P] mask
    return masked_merge(theta0, T, mask=None, cut=cut, lam=torch.tensor([lam]), ties=True, out=out)


def dare(
    theta0: torch.Tensor,
    T: torch.Tensor,
    *,
    drop: float,
    lam: torch.Tensor,
    seed: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    mask = drop_keep(T, {"drop": drop, "seed": seed})  # [K, P]
    rescale = torch.full((T.shape[0],), 1.0 / (1.0 - drop))
    return masked_merge(theta0, T, mask=mask, lam=lam, rescale=rescale, out=out)


def dare_ties(
    theta0: torch.Tensor, T: torch.Tensor, *, drop: float, lam: float, seed: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    mask = drop_keep(T, {"drop": drop, "seed": seed})  # [K, P]
    rescale = torch.full((T.shape[0],), 1.0 / (1.0 - drop))
    return masked_merge(theta0, T, mask=mask, lam=torch.tensor([lam]), rescale=rescale, ties=True, out=out)


def magnitude(
    theta0: torch.Tensor, T: torch.Tensor, *, density: float, lam: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    return masked_merge(theta0, T, mask=None, cut=magnitude_cuts(T, density), lam=lam, out=out)
