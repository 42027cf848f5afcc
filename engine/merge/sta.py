"""STA merging: keep each task vector's important entries, then add (provisional definition).

STA (Tian, Lai et al., "Beyond Task Vectors: Selective Task Arithmetic Based on Importance Metrics",
arXiv 2411.16139): θ = θ₀ + λ Σₜ mₜ ⊙ τₜ with mₜ = [Ĩₜ ≥ κ], Ĩₜ the task's first-order Taylor
importance normalised per tensor (engine/sta/importance.py says how, and which choices are ours: the paper
body was not available). The review shows no λ; we keep one (default 1, which is the review's form)
so the method sits on the same sliders as TIES. κ = 0 keeps every entry: task arithmetic with λ.
`sta_parts` separates that λ, so the Workspace moves it with one pass over [P].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from engine.merge.generalized import masked_merge
from engine.merge.sparse_methods import no_base
from engine.sta.codes import importance_mask


def sta(
    theta0: torch.Tensor,
    T: torch.Tensor,
    *,
    threshold: float,
    lam: float,
    importance: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """θ₀ [P], T [K, P], importance uint8 codes [K, P] (or their mask `keep` computed before) → θ [P]."""
    mask = importance_keep(T, {"threshold": threshold}, importance) if keep is None else keep  # bool [K, P] or None
    return masked_merge(theta0, T, mask=mask, lam=torch.full((T.shape[0],), lam), out=out)


def sta_parts(
    theta0: torch.Tensor,
    T: torch.Tensor,
    *,
    threshold: float,
    importance: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ₀, Σₜ mₜ ⊙ τₜ), which λ scales."""
    direction = sta(
        no_base(theta0), T, threshold=threshold, lam=1.0, importance=importance, keep=keep, out=torch.empty_like(theta0)
    )
    return theta0, direction


def importance_keep(T: torch.Tensor, params: Mapping[str, Any], importance: torch.Tensor | None) -> torch.Tensor | None:
    """bool [K, P]: entries whose normalised importance is ≥ κ (`threshold`); None when κ keeps every entry."""
    if importance is None:
        raise ValueError("STA's mask needs the importance codes")  # the registry checks them before calling
    return importance_mask(importance, float(params["threshold"]))
