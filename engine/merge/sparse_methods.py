"""Sparse merges registered by name, each a thin call of the generalized kernel.

- TIES (Yadav et al., "TIES-Merging", NeurIPS 2023): trim to the top-d magnitudes per task, elect
  signs by mass, disjoint mean, θ₀ + λ τ_m (λ default 1).
- DARE (Yu et al., "Language Models are Super Mario", ICML 2024): drop entries with rate p, rescale
  survivors by 1/(1 − p), then task arithmetic; DARE-TIES puts the same dropped vectors through TIES's
  sign election and disjoint mean (no magnitude trim), as mergekit's dare_ties does.
- Magnitude: top-d per task, then task arithmetic: the plain baseline.

Each merge takes `keep=`, its mask computed before (the Workspace's cache), and has `*_parts`: (θ₀, τ_m)
with τ_m what λ scales (for DARE and magnitude, with every task's λ equal), so a λ move is one pass over [P].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from engine.merge.generalized import masked_merge
from engine.merge.sparsify import DropStream, dare_keep_mask, magnitude_cuts, magnitude_mask
from engine.store.reader import Reader, Rows


def magnitude_keep(T: torch.Tensor, params: Mapping[str, Any], importance: torch.Tensor | None = None) -> torch.Tensor:
    """bool [K, P]: the top round(d·P) magnitudes of each task vector (TIES's trim), d = `density`."""
    return magnitude_mask(T, float(params["density"]))


def drop_keep(T: torch.Tensor, params: Mapping[str, Any], importance: torch.Tensor | None = None) -> torch.Tensor:
    """bool [K, P]: DARE's survivors, Bernoulli(1 − p) per entry from the seeded stream, p = `drop`."""
    return dare_keep_mask(tuple(T.shape), float(params["drop"]), seed=int(params["seed"]), device=T.device)


def ties(
    theta0: torch.Tensor,
    T: torch.Tensor,
    *,
    density: float,
    lam: float,
    keep: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    cut = None if keep is not None else magnitude_cuts(T, density)  # the trim, applied without a [K, P] mask
    return masked_merge(theta0, T, mask=keep, cut=cut, lam=torch.tensor([lam]), ties=True, out=out)


def dare(
    theta0: torch.Tensor,
    T: torch.Tensor,
    *,
    drop: float,
    lam: torch.Tensor,
    seed: float,
    keep: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    mask, drops = _drop_mask(T, drop=drop, seed=seed, keep=keep)
    return masked_merge(theta0, T, mask=mask, drops=drops, lam=lam, rescale=_survivor_scale(T, drop), out=out)


def dare_ties(
    theta0: torch.Tensor,
    T: torch.Tensor,
    *,
    drop: float,
    lam: float,
    seed: float,
    keep: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    mask, drops = _drop_mask(T, drop=drop, seed=seed, keep=keep)
    rescale, first_lam = _survivor_scale(T, drop), torch.tensor([lam])  # TIES reads λ as lam[0]
    return masked_merge(theta0, T, mask=mask, drops=drops, lam=first_lam, rescale=rescale, ties=True, out=out)


def magnitude(
    theta0: torch.Tensor,
    T: torch.Tensor,
    *,
    density: float,
    lam: torch.Tensor,
    keep: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    cut = None if keep is not None else magnitude_cuts(T, density)  # the trim, applied without a [K, P] mask
    return masked_merge(theta0, T, mask=keep, cut=cut, lam=lam, out=out)


def ties_parts(
    theta0: torch.Tensor, T: torch.Tensor, *, density: float, keep: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ₀, τ_m): TIES's trimmed, elected, disjoint mean, which λ scales."""
    return theta0, ties(no_base(theta0), T, density=density, lam=1.0, keep=keep, out=torch.empty_like(theta0))


def dare_parts(
    theta0: torch.Tensor, T: torch.Tensor, *, drop: float, seed: float, keep: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ₀, Σₜ mₜ ⊙ τₜ / (1 − p)): DARE with one λ for every task is θ₀ + λ·direction."""
    ones = torch.ones(T.shape[0])
    return theta0, dare(no_base(theta0), T, drop=drop, lam=ones, seed=seed, keep=keep, out=torch.empty_like(theta0))


def dare_ties_parts(
    theta0: torch.Tensor, T: torch.Tensor, *, drop: float, seed: float, keep: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ₀, τ_m) of TIES's election over DARE's rescaled vectors."""
    merged = dare_ties(no_base(theta0), T, drop=drop, lam=1.0, seed=seed, keep=keep, out=torch.empty_like(theta0))
    return theta0, merged


def magnitude_parts(
    theta0: torch.Tensor, T: torch.Tensor, *, density: float, keep: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ₀, Σₜ top_d(τₜ)): magnitude pruning with one λ for every task is θ₀ + λ·direction."""
    ones = torch.ones(T.shape[0])
    return theta0, magnitude(no_base(theta0), T, density=density, lam=ones, keep=keep, out=torch.empty_like(theta0))


def no_base(theta0: torch.Tensor) -> torch.Tensor:
    """A zero θ₀ [P] of `theta0`'s kind that reads no memory (a broadcast scalar): the merge is then its direction."""
    return theta0.new_zeros(()).expand_as(theta0)


def _drop_mask(
    T: Rows, *, drop: float, seed: float, keep: torch.Tensor | None
) -> tuple[torch.Tensor | None, DropStream | None]:
    """DARE's mask as the merge takes it: `keep` when given (cached), else drawn whole (bool [K, P]) for a T in
    memory, or drawn block by block as the merge streams a T out of core (a store's rows or a mapped file:
    the same entries, without K·P bytes resident)."""
    if keep is not None:
        return keep, None
    if T.device.type == "cpu" and Reader.of(T).out_of_core:
        return None, DropStream(tuple(T.shape), drop, seed=int(seed))
    return drop_keep(T, {"drop": drop, "seed": seed}), None


def _survivor_scale(T: torch.Tensor, drop: float) -> torch.Tensor:
    """[K] DARE's rescale 1/(1 − p) of the surviving entries."""
    return torch.full((T.shape[0],), 1.0 / (1.0 - drop))
