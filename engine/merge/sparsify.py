"""Which entries of each task vector survive: magnitude top-k (TIES's trim) and random drop (DARE).

Masks are bool [K, P] (1 byte per entry) and keep exactly round(d·P) entries per task; ties among equal
magnitudes are broken deterministically by topk's order. Up to `EXACT_TOPK_LIMIT` entries per task a
plain `torch.topk` over the row does it. Above that (a full sort or kthvalue over 88M entries takes
seconds even on a GPU: bench/sparse_merge.py), a seeded sample of `QUANTILE_SAMPLE` magnitudes brackets the
threshold in a narrow band; everything above the band is kept and `topk` runs only inside the band for the exact
remainder (falling back to the whole row if the sample missed).
"""

from __future__ import annotations

import torch

EXACT_TOPK_LIMIT = 1 << 22  # 4M entries per task: exact top-k below, sampled quantile above
QUANTILE_SAMPLE = 1 << 20


def kept_count(num_entries: int, density: float) -> int:
    """round(d·P), at least one entry."""
    return max(1, round(density * num_entries))


def magnitude_mask(T: torch.Tensor, density: float, *, seed: int = 0) -> torch.Tensor:
    """Per task, keep the `density` fraction of entries with the largest |τ| → bool [K, P]."""
    K, P = T.shape
    mask = torch.empty(K, P, dtype=torch.bool, device=T.device)  # [K, P]
    if density >= 1.0:
        return mask.fill_(True)
    n_keep = kept_count(P, density)
    mag = torch.empty(P, dtype=T.dtype, device=T.device)  # [P] |T[k]|, reused row after row (no page faults)
    for k in range(K):
        torch.abs(T[k], out=mag)
        if P <= EXACT_TOPK_LIMIT:
            mask[k].zero_()[torch.topk(mag, n_keep, sorted=False).indices] = True
        else:
            _banded_top_k(mag, n_keep, seed=seed + k, out=mask[k])
    return mask


def _banded_top_k(mag: torch.Tensor, n_keep: int, *, seed: int, out: torch.Tensor) -> None:
    """Exact top-`n_keep` mask of magnitudes [P] into `out` (bool [P]), using a sampled band around the threshold."""
    P = mag.numel()
    gen = torch.Generator(device=mag.device).manual_seed(seed)
    sample = mag[torch.randint(0, P, (QUANTILE_SAMPLE,), generator=gen, device=mag.device)]  # [S]
    q = 1.0 - n_keep / P
    spread = 6.0 * (q * (1 - q) / QUANTILE_SAMPLE) ** 0.5 + 1.0 / QUANTILE_SAMPLE  # ~6σ of the estimate
    lo, hi = torch.quantile(
        sample.float(), torch.tensor([max(0.0, q - spread), min(1.0, q + spread)], device=mag.device)
    )
    torch.gt(mag, hi, out=out)  # [P] surely kept
    band = torch.gt(mag, lo).logical_xor_(out).nonzero().squeeze(1)  # undecided: lo < |τ| ≤ hi
    rest = n_keep - int(torch.count_nonzero(out))
    if not 0 <= rest <= band.numel():  # the sample missed the threshold: do it the slow, exact way
        out.zero_()[torch.topk(mag, n_keep, sorted=False).indices] = True
        return
    out[band[torch.topk(mag[band], rest, sorted=False).indices]] = True


def dare_keep_mask(
    shape: tuple[int, int], drop: float, *, seed: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """DARE's Bernoulli mask (Yu et al., ICML 2024): keep each entry with probability 1 − p → bool [K, P]."""
    gen = torch.Generator(device=device).manual_seed(seed)
    K, P = shape
    mask = torch.empty(K, P, dtype=torch.bool, device=device)  # [K, P]
    uniforms = torch.empty(P, device=device)  # [P] one row's draws, reused: never a float [K, P]
    for k in range(K):
        torch.ge(torch.rand(P, generator=gen, device=device, out=uniforms), drop, out=mask[k])
    return mask
