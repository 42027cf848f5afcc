"""Which entries of each task vector survive: magnitude top-k (TIES's trim) and random drop (DARE).

Masks are bool [K, P] (1 byte per entry) and keep exactly round(d·P) entries per task; ties among equal
magnitudes are broken deterministically by topk's order. Up to `EXACT_TOPK_LIMIT` entries per task a
plain `torch.topk` over the row does it. Above that (a full sort or kthvalue over 88M entries takes
seconds, gpu_anchor.md), a seeded sample of `QUANTILE_SAMPLE` magnitudes brackets the threshold in a
narrow band; everything above the band is kept and `topk` runs only inside the band for the exact
remainder (falling back to the whole row if the sample missed).
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
            mask[k] = _banded_top_k(T[k].abs(), n_keep, seed=seed + k)
    return mask


def _banded_top_k(mag: torch.Tensor, n_keep: int, *, seed: int) -> torch.Tensor:
    """Exact top-`n_keep` mask of magnitudes [P] using a sampled band around the threshold."""
    P = mag.numel()
    gen = torch.Generator(device=mag.device).manual_seed(seed)
    sample = mag[torch.randint(0, P, (QUANTILE_SAMPLE,), generator=gen, device=mag.device)]  # [S]
    q = 1.0 - n_keep / P
    spread = 6.0 * (q * (1 - q) / QUANTILE_SAMPLE) ** 0.5 + 1.0 / QUANTILE_SAMPLE  # ~6σ of the estimate
    lo, hi = torch.quantile(sample.float(), torch.tensor([max(0.0, q - spread), min(1.0, q + spread)],
                                                         device=mag.device))
    above = mag > hi  # [P] surely kept
    band = ((mag > lo) & ~above).nonzero().squeeze(1)  # indices of the undecided entries
    rest = n_keep - int(torch.count_nonzero(above))
    if not 0 <= rest <= band.numel():  # the sample missed the threshold: do it the slow, exact way
        keep = torch.zeros(P, dtype=torch.bool, device=mag.device)
        keep[torch.topk(mag, n_keep, sorted=False).indices] = True
        return keep
    above[band[torch.topk(mag[band], rest, sorted=False).indices]] = True
    return above


def dare_keep_mask(shape: tuple[int, int], drop: float, *, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """DARE's Bernoulli mask (Yu et al., ICML 2024): keep each entry with probability 1 − p → bool [K, P]."""
    gen = torch.Generator(device=device).manual_seed(seed)
    K, P = shape
    mask = torch.empty(K, P, dtype=torch.bool, device=device)  # [K, P]
    for k in range(K):  # a float [P] of uniforms per row, not [K, P]
        mask[k] = torch.rand(P, generator=gen, device=device) >= drop
    return mask
