"""Which entries of each task vector survive: magnitude top-k (TIES's trim) and random drop (DARE).

Masks are bool [K, P] (1 byte per entry). Top-k is exact (`torch.topk`, exactly round(d·P) entries per
task; ties among equal magnitudes are broken deterministically by topk's order) up to
`EXACT_TOPK_LIMIT` entries per task; above it, the threshold is the d-quantile of a seeded sample of
`QUANTILE_SAMPLE` magnitudes, whose kept-count error bench/sparse_merge.py measures (the exact
per-row kthvalue over ViT-B/32 takes seconds on a GPU, gpu_anchor.md).
"""
from __future__ import annotations

import torch

EXACT_TOPK_LIMIT = 1 << 22   # 4M entries per task: exact top-k below, sampled quantile above
QUANTILE_SAMPLE = 1 << 20


def kept_count(num_entries: int, density: float) -> int:
    """round(d·P), at least one entry."""
    return max(1, round(density * num_entries))


def magnitude_mask(T: torch.Tensor, density: float, *, seed: int = 0) -> torch.Tensor:
    """Per task, keep the `density` fraction of entries with the largest |τ| → bool [K, P]."""
    K, P = T.shape
    mask = torch.zeros(K, P, dtype=torch.bool, device=T.device)  # [K, P]
    n_keep = kept_count(P, density)
    for k in range(K):  # one row at a time: |T[k]| is the only float temporary [P]
        if density >= 1.0:
            mask[k] = True
        elif P <= EXACT_TOPK_LIMIT:
            mask[k, torch.topk(T[k].abs(), n_keep, sorted=False).indices] = True
        else:
            mask[k] = T[k].abs() >= _sampled_threshold(T[k], density, seed=seed + k)
    return mask


def _sampled_threshold(row: torch.Tensor, density: float, *, seed: int) -> torch.Tensor:
    """The (1 − density)-quantile of |row| estimated from a seeded uniform sample."""
    gen = torch.Generator(device=row.device).manual_seed(seed)
    idx = torch.randint(0, row.numel(), (QUANTILE_SAMPLE,), generator=gen, device=row.device)
    return torch.quantile(row[idx].abs().float(), 1.0 - density)


def dare_keep_mask(shape: tuple[int, int], drop: float, *, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """DARE's Bernoulli mask (Yu et al., ICML 2024): keep each entry with probability 1 − p → bool [K, P]."""
    gen = torch.Generator(device=device).manual_seed(seed)
    K, P = shape
    mask = torch.empty(K, P, dtype=torch.bool, device=device)  # [K, P]
    for k in range(K):  # a float [P] of uniforms per row, not [K, P]
        mask[k] = torch.rand(P, generator=gen, device=device) >= drop
    return mask
