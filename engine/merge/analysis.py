"""Descriptive statistics of task vectors: how aligned are the tasks before any merge?"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from engine.merge.declaration import MergeMethod
from engine.merge.registry import get_method
from engine.params import ParamSpec
from engine.store.protocol import column_blocks
from engine.store.reader import Reader, Rows

GRAM_BLOCK_ENTRIES = 1 << 22  # K·c float64 entries per block (32 MiB)


def cosine_similarity_matrix(T: Rows) -> torch.Tensor:
    """Pairwise cosine similarity of task vectors T [K, P] → [K, K] (float64 on the CPU).

    Ilharco et al. (2023, Fig. 2) show task vectors of different tasks are close to orthogonal;
    large similarities flag tasks likely to interfere (or help each other) when added. The Gram matrix is summed
    over column blocks in float64, so a large or bfloat16 T (or a store's rows) is never copied whole.
    """
    K, P = T.shape
    gram, reader = torch.zeros(K, K, dtype=torch.float64, device=T.device), Reader.of(T)  # [K, K]
    for cols in column_blocks(P, max(1, GRAM_BLOCK_ENTRIES // K)):  # a block at a time: never a float64 copy of T
        part = reader.columns(cols).double()  # [K, c]
        gram += part @ part.T
        reader.release_columns(cols)
    norms = gram.diagonal().sqrt().clamp(min=1e-12)  # [K] as F.normalize's eps
    return (gram / norms[:, None] / norms[None, :]).cpu()  # [K, K]


@dataclass(frozen=True)
class SparsityReport:
    """What a sparse merge keeps, and how often the kept entries of different tasks disagree in sign."""

    tasks: tuple[str, ...]
    kept_fraction: Mapping[str, float]  # task → share of its entries kept
    layers: tuple[str, ...]
    sign_conflict: tuple[float, ...]  # per layer: share of entries with + and − among tasks


def sparsity_report(
    method: str | MergeMethod,
    T: torch.Tensor,
    params: Mapping,
    *,
    tasks: Sequence[str],
    spec: ParamSpec,
    importance: torch.Tensor | None = None,
) -> SparsityReport:
    """Kept fraction per task and sign conflict per layer block (TIES's motivation, Yadav et al. 2023,
    Fig. 2), of the task vectors as the method masks them: the mask is the one the method's registry
    entry declares (`MergeMethod.keep_mask`), so a new selecting method shows here with no change."""
    mask = get_method(method).kept(T, params, importance=importance)  # bool [K, P] or None
    return masked_sparsity(T, mask, tasks=tasks, spec=spec)


def masked_sparsity(T: Rows, mask: torch.Tensor | None, *, tasks: Sequence[str], spec: ParamSpec) -> SparsityReport:
    """`sparsity_report` of a mask computed before (bool [K, P], or None: every entry kept), e.g. a cached one;
    T is read one layer's columns at a time (a store's rows too)."""
    kept = mask.float().mean(dim=1).tolist() if mask is not None else [1.0] * T.shape[0]
    layers, conflict, reader = [], [], Reader.of(T)
    for label, cols in spec.blocks(level="layer"):
        block = reader.columns(cols)  # [K, n]
        signs = torch.sign(block if mask is None else block * mask[:, cols])  # [K, n]
        layers.append(label)
        conflict.append(float(((signs.amax(dim=0) > 0) & (signs.amin(dim=0) < 0)).float().mean()))
    return SparsityReport(tuple(tasks), dict(zip(tasks, kept)), tuple(layers), tuple(conflict))
