"""Descriptive statistics of task vectors: how aligned are the tasks before any merge?"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.merge.registry import check_importance, get_method
from engine.merge.sparse_methods import keep_mask
from engine.params import ParamSpec
from engine.sta.codes import importance_mask


def cosine_similarity_matrix(T: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity of task vectors T [K, P] → [K, K] (float64 on the CPU).

    Ilharco et al. (2023, Fig. 2) show task vectors of different tasks are close to orthogonal;
    large similarities flag tasks likely to interfere (or help each other) when added.
    """
    unit = F.normalize(T.double(), dim=1)  # [K, P]
    return (unit @ unit.T).cpu()  # [K, K]


@dataclass(frozen=True)
class SparsityReport:
    """What a sparse merge keeps, and how often the kept entries of different tasks disagree in sign."""

    tasks: tuple[str, ...]
    kept_fraction: Mapping[str, float]  # task → share of its entries kept
    layers: tuple[str, ...]
    sign_conflict: tuple[float, ...]  # per layer: share of entries with + and − among tasks


def sparsity_report(
    method: str,
    T: torch.Tensor,
    params: Mapping,
    *,
    tasks: Sequence[str],
    spec: ParamSpec,
    importance: torch.Tensor | None = None,
) -> SparsityReport:
    """Kept fraction per task and sign conflict per layer block (TIES's motivation, Yadav et al. 2023,
    Fig. 2), of the task vectors as the method masks them."""
    registered = get_method(method)
    resolved = registered.resolve(params, num_tasks=T.shape[0])
    if registered.importance is not None:  # STA: entries whose importance is ≥ κ
        check_importance(method, importance, T)
        mask = importance_mask(importance, float(resolved["threshold"]))  # [K, P] or None
    else:
        mask = keep_mask(method, T, resolved)  # [K, P] or None
    kept = mask.float().mean(dim=1).tolist() if mask is not None else [1.0] * T.shape[0]
    layers, conflict = [], []
    for label, cols in spec.blocks(level="layer"):
        signs = torch.sign(T[:, cols] if mask is None else T[:, cols] * mask[:, cols])  # [K, n]
        layers.append(label)
        conflict.append(float(((signs.amax(dim=0) > 0) & (signs.amin(dim=0) < 0)).float().mean()))
    return SparsityReport(tuple(tasks), dict(zip(tasks, kept)), tuple(layers), tuple(conflict))
