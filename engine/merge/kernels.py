"""The one hot loop of every linear merge: θ₀ + Σₖ cₖ Tₖ, as close to memory bandwidth as we can.

On CUDA a single `addmv` comes close to the bandwidth bound (bench/merge_bandwidth.py --device cuda). On the CPU,
`addmv` over 88M parameters streams θ₀ and T through the cache once per output tile it cannot
keep; accumulating row by row over cache-sized chunks reads each element of T exactly once and
writes the output once, which measured at the bound here (bench/merge_bandwidth.py). A T mapped from a built
store has each chunk's pages released once summed (engine/store/pages.py), so the resident size stays bounded;
a store's rows (`StoredRows`) are densified a chunk at a time (engine/store/reader.py).
"""

from __future__ import annotations

import torch

from engine.store.reader import Reader, Rows

CPU_CHUNK = 1 << 18  # 256k floats = 1 MiB per row chunk; measured best on the 2-core CPU
GPU_BLOCK_ENTRIES = 1 << 27  # K·c entries widened at once on a GPU (512 MiB of float32)


def weighted_sum(
    theta0: torch.Tensor, T: Rows, coeffs: torch.Tensor, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """θ₀ [P] + coeffs [K] @ T [K, P] → a new tensor [P], or into `out` [P] when given.

    Reusing `out` across calls (a dashboard moving a slider) skips the allocation, whose first-touch
    page faults cost about as much as the merge itself on the CPU for ViT-B/32.
    """
    if T.shape[0] != coeffs.shape[0] or T.shape[1] != theta0.shape[0]:
        raise ValueError(
            f"weighted_sum: T {tuple(T.shape)}, θ₀ {tuple(theta0.shape)} and "
            f"coeffs {tuple(coeffs.shape)} do not line up as [K, P], [P], [K]"
        )
    if theta0.device.type != "cpu" and isinstance(T, torch.Tensor) and T.dtype == theta0.dtype:
        return torch.addmv(theta0, T.t(), coeffs.to(T), out=out)  # [P]
    if theta0.device.type != "cpu":
        return _widened_addmv(theta0, T, coeffs, out=out)
    scales = [(k, c) for k, c in enumerate(coeffs.tolist()) if c != 0.0]
    out, reader = torch.empty_like(theta0) if out is None else out, Reader.of(T)  # [P]
    for start in range(0, theta0.shape[0], CPU_CHUNK):
        cols = slice(start, start + CPU_CHUNK)
        tile, block = out[cols], reader.columns(cols)  # [c], [K, c]
        tile.copy_(theta0[cols])
        for k, c in scales:
            tile.add_(block[k], alpha=c)
        reader.release_columns(cols)
    return out


def _widened_addmv(theta0: torch.Tensor, T: Rows, coeffs: torch.Tensor, *, out: torch.Tensor | None) -> torch.Tensor:
    """θ₀ + coeffs @ T for a T of another dtype (a bfloat16 T on a GPU) or a store's rows, a block of columns at
    a time."""
    out, reader = torch.empty_like(theta0) if out is None else out, Reader.of(T)  # [P]
    width = max(1, GPU_BLOCK_ENTRIES // T.shape[0])
    for start in range(0, theta0.shape[0], width):
        cols = slice(start, start + width)
        block = reader.columns(cols).to(theta0.dtype)  # [K, c]
        torch.addmv(theta0[cols], block.t(), coeffs.to(theta0), out=out[cols])  # [c]
    return out
