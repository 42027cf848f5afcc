"""What STA's importance maps say before any merge: their distribution, overlap and depth profile.

Inputs are the uint8 codes [K, P] of engine/sta/codes.py; every statistic is one pass over
columns in chunks (no [K, P] float temporaries, no per-key loops: layers are a dozen column ranges).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.params import ParamSpec
from engine.sta.codes import decode_table, threshold_code

CHUNK = 1 << 20


@dataclass(frozen=True)
class ImportanceSummary:
    tasks: tuple[str, ...]
    threshold: float
    code_values: torch.Tensor  # [256] the value each code stands for (0, then 10⁻⁶ … 1)
    histogram: torch.Tensor  # [K, 256] entries per code, per task
    kept_fraction: torch.Tensor  # [K] share of entries with importance ≥ κ
    overlap: torch.Tensor  # [K, K] Jaccard overlap of the kept sets (1 on the diagonal)
    layers: tuple[str, ...]
    kept_per_layer: torch.Tensor  # [K, L] share of each layer's entries kept


def importance_summary(
    codes: torch.Tensor, spec: ParamSpec, *, tasks: Sequence[str], threshold: float
) -> ImportanceSummary:
    """Histograms, kept fractions, pairwise mask overlap and per-layer kept share at κ = `threshold`."""
    K, P = codes.shape
    level = threshold_code(threshold)
    offsets = (torch.arange(K, device=codes.device) * 256)[:, None]  # [K, 1]
    histogram = torch.zeros(K * 256, dtype=torch.int64, device=codes.device)
    intersection = torch.zeros(K, K, dtype=torch.float64, device=codes.device)
    for start in range(0, P, CHUNK):
        chunk = codes[:, start : start + CHUNK]  # [K, c]
        histogram += torch.bincount((chunk.long() + offsets).flatten(), minlength=K * 256)
        kept = (chunk >= level).double()  # [K, c]
        intersection += kept @ kept.T  # [K, K]
    counts = intersection.diagonal()  # [K]
    union = counts[:, None] + counts[None, :] - intersection  # [K, K]
    overlap = torch.where(union > 0, intersection / union.clamp(min=1), 1.0)
    layers, per_layer = [], []
    for label, cols in spec.blocks(level="layer"):
        layers.append(label)
        per_layer.append((codes[:, cols] >= level).float().mean(dim=1))  # [K]
    return ImportanceSummary(
        tuple(tasks),
        threshold,
        decode_table(),
        histogram.reshape(K, 256).cpu(),
        (counts / P).float().cpu(),
        overlap.float().cpu(),
        tuple(layers),
        torch.stack(per_layer, dim=1).cpu(),
    )
