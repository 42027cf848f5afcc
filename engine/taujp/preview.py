"""Instant merge preview in the tangent space: accuracy for new coefficients without a forward pass.

With f(x; θ₀) [N, E] and J f(x; θ₀)·τₜ [K, N, E] cached for a split, the linearized model's embedding
for any coefficients is f₀ + Σₜ λₜ J τₜ (Ortiz-Jiménez et al., NeurIPS 2023, Eq. 3), one [K]×[K, N·E]
product per slider move. Exact for linearized checkpoints; for standard ones it is the first-order
approximation of θ₀ + Σₜ λₜ τₜ, and pages say so. Covers task-arithmetic coefficients only: masked
or elected methods change the vectors themselves, not just their weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.eval.suite import EvalSuite, Progress
from engine.taujp.jvp_cache import JvpStore, cached_jvp_features


@dataclass(frozen=True)
class TangentPreview:
    vectors: tuple[str, ...]  # the K task vectors, in coefficient order
    split: str
    base: Mapping[str, torch.Tensor]  # task → f(x; θ₀) [N_t, E]
    products: Mapping[str, torch.Tensor]  # task → J f(x; θ₀)·τₖ [K, N_t, E]
    labels: Mapping[str, torch.Tensor]  # task → [N_t]
    heads: Mapping[str, torch.Tensor]  # task → [C, E]

    @classmethod
    def build(
        cls,
        suite: EvalSuite,
        theta0: torch.Tensor,
        T: torch.Tensor,
        *,
        vectors: Sequence[str],
        tasks: Sequence[str] | None = None,
        split: str = "interactive",
        progress: Progress | None = None,
        store: JvpStore | None = None,
    ) -> TangentPreview:
        """One batched JVP pass over each task's `split` images (T [K, P], one row per name in `vectors`),
        or none where `store` (engine/taujp/jvp_cache.py) already holds the products."""
        names = tuple(tasks or suite.task_names)
        base, products = {}, {}
        for i, task in enumerate(names):
            base[task], products[task] = cached_jvp_features(
                suite, theta0, T, suite.tasks[task].split(split).images, store=store
            )
            if progress is not None:
                progress((i + 1) / len(names), f"tangent features of {task}")
        return cls(
            tuple(vectors),
            split,
            base,
            products,
            {t: suite.tasks[t].split(split).labels for t in names},
            {t: suite.heads[t] for t in names},
        )

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.base)

    def accuracy(self, lam: Sequence[float] | torch.Tensor) -> dict[str, float]:
        """Per-task accuracy of the linearized merge f₀ + Σₖ λₖ J τₖ."""
        weights = torch.as_tensor(lam, dtype=torch.float32)
        if weights.shape != (len(self.vectors),):
            raise ValueError(f"expected {len(self.vectors)} coefficients (one per vector), got {tuple(weights.shape)}")
        return {task: self.task_accuracy(task, weights) for task in self.base}

    def task_accuracy(self, task: str, weights: torch.Tensor) -> float:
        """Accuracy on one task of f₀ + Σₖ λₖ J τₖ, for coefficients `weights` [K]."""
        f0 = self.base[task]  # [N, E]
        feats = f0 + torch.einsum("k,kne->ne", weights.to(f0), self.products[task])  # [N, E]
        pred = (F.normalize(feats, dim=-1) @ self.heads[task].T).argmax(dim=-1)  # [N]
        return float((pred == self.labels[task]).float().mean())


def tangent_pair_drops(preview: TangentPreview, *, lam: float) -> dict[tuple[str, str], float]:
    """drop_b(a) = acc_b(λτ_b) − acc_b(λ(τ_a + τ_b)) of the linearized model, for every ordered pair a ≠ b of
    the preview's vectors (each the task vector of the task of that name), from its stored products alone:
    exact for linearized checkpoints, the first-order estimate for standard ones. No forward pass, so a new λ
    costs K² small [N, E] sums (the exact network version: engine/taujp/matrix.py `pair_drops`)."""
    names = preview.vectors
    missing = [t for t in names if t not in preview.base]
    if missing:
        raise ValueError(f"the preview holds no inputs of tasks {missing}; build it on every vector's task")
    eye = torch.eye(len(names))  # [K, K]
    alone = {b: preview.task_accuracy(b, lam * eye[j]) for j, b in enumerate(names)}
    return {
        (a, b): alone[b] - preview.task_accuracy(b, lam * (eye[i] + eye[j]))
        for i, a in enumerate(names)
        for j, b in enumerate(names)
        if a != b
    }


def preview_gap(preview: Mapping[str, float], exact: Mapping[str, float]) -> float:
    """Mean absolute difference between preview and exact accuracy over the previewed tasks."""
    return sum(abs(preview[t] - exact[t]) for t in preview) / len(preview)
