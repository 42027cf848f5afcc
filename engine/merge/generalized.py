"""The generalized task-arithmetic kernel: masks × sign consensus × rescale, in one pass over T.

    τ̂ₖ = mₖ ⊙ τₖ · sₖ                 (mask from sparsify.py, rescale sₖ, e.g. DARE's 1/(1−p))
    no consensus:   θ = θ₀ + Σₖ λₖ τ̂ₖ
    TIES consensus: γ = sign(Σₖ τ̂ₖ);  τ_m = Σₖ τ̂ₖ·[sign τ̂ₖ = γ, τ̂ₖ ≠ 0] / #{k : sign τ̂ₖ = γ, τ̂ₖ ≠ 0};
                    θ = θ₀ + λ τ_m     (Yadav et al., NeurIPS 2023, §3: trim, elect sign, disjoint merge)

Columns are processed in cache-sized chunks, so the temporaries are [K, chunk], never [K, P].
"""

from __future__ import annotations

import torch

CHUNK = 1 << 15


def masked_merge(
    theta0: torch.Tensor,
    T: torch.Tensor,
    *,
    mask: torch.Tensor | None,
    lam: torch.Tensor,
    rescale: torch.Tensor | None = None,
    ties: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """θ₀ [P], T [K, P], mask bool [K, P] or None, lam [K] (TIES: its first entry is λ) → θ [P]."""
    K, P = T.shape
    out = torch.empty_like(theta0) if out is None else out  # [P]
    lam = lam.to(T)  # [K]
    scale = None if rescale is None else rescale.to(T)[:, None]  # [K, 1]
    for start in range(0, P, CHUNK):
        cols = slice(start, start + CHUNK)
        tau = T[:, cols] if mask is None else T[:, cols] * mask[:, cols]  # [K, c]
        if scale is not None:
            tau = tau * scale
        out[cols] = theta0[cols] + (_disjoint_mean(tau) * lam[0] if ties else lam @ tau)  # [c]
    return out


def _disjoint_mean(tau: torch.Tensor) -> torch.Tensor:
    """TIES elect + disjoint merge of trimmed vectors [K, c] → [c].

    The agreement indicator stays a float 0/1 tensor: summing bools over K (an integer reduction) and
    `where` is about twice as slow on the CPU, with identical results (bench/sparse_merge.py)."""
    elected = tau.sum(dim=0).sign_()  # [c]
    agree = (tau * elected).gt_(0)  # [K, c] 1.0 where same sign as elected and non-zero, else 0.0
    return (tau * agree).sum(dim=0) / agree.sum(dim=0).clamp_(min=1)  # [c]
