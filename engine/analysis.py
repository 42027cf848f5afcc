"""Descriptive statistics of task vectors: how aligned are the tasks before any merge?"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_similarity_matrix(T: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity of task vectors T [K, P] → [K, K] (float64 on the CPU).

    Ilharco et al. (2023, Fig. 2) show task vectors of different tasks are close to orthogonal;
    large similarities flag tasks likely to interfere (or help each other) when added.
    """
    unit = F.normalize(T.double(), dim=1)  # [K, P]
    return (unit @ unit.T).cpu()  # [K, K]
