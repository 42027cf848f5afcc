"""aTLAS: one learned coefficient per task vector and parameter block (Zhang et al., NeurIPS 2024, Eq. 4).

θ(Λ) = θ₀ + Σᵢ Λᵢ τᵢ with Λ [K, n_blocks] initialised at 0 (so training starts at θ₀, as in their code),
AdamW at lr 1e-2 (the DV-BASI repository's aTLAS stage; the aTLAS code defaults to 1e-3), early stopping
on the selection part of val. Linearized checkpoints are learned in the tangent space (their Eq. 5)
because the suite evaluates them so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.eval.suite import EvalSuite
from engine.learn.coefficients import (
    EpochRecord,
    LearnConfig,
    LearnResult,
    ValSplit,
    block_sizes,
    combine,
    learn_coefficients,
)
from engine.params import ParamSpec


@dataclass(frozen=True)
class AtlasResult:
    theta: torch.Tensor  # [P] the merged model at the best coefficients
    learned: LearnResult  # coefficients [K, n_blocks] and the per-epoch history
    blocks: tuple[str, ...]  # block labels, in coefficient column order


def atlas(
    suite: EvalSuite,
    theta0: torch.Tensor,
    T: torch.Tensor,
    spec: ParamSpec,
    *,
    data: ValSplit,
    config: LearnConfig = LearnConfig(),
    level: str = "tensor",
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> AtlasResult:
    """Learn Λ [K, n_blocks] on `data.fit`, choose the epoch on `data.select`; T [K, P] stays frozen."""
    sizes = block_sizes(spec, level=level)
    learned = learn_coefficients(suite, theta0, T, sizes, data=data, config=config, on_epoch=on_epoch)
    with torch.no_grad():
        theta = combine(theta0, T, learned.coefficients, sizes)  # [P]
    return AtlasResult(theta, learned, tuple(label for label, _ in spec.blocks(level=level)))
