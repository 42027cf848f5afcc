"""What a merge's evaluation gives the figures: merged against zero-shot and fine-tuned accuracy per task on one
split (`MergeComparison`), and accuracy over a grid of one parameter with the papers' best value (`Sweep`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.eval.evaluate import EvalResult


@dataclass(frozen=True)
class MergeComparison:
    """Merged vs zero-shot vs fine-tuned accuracy per task, on one split."""

    split: str
    tasks: tuple[str, ...]
    merged: EvalResult
    zero_shot: Mapping[str, float]
    finetuned: Mapping[str, float]

    @property
    def mean_merged(self) -> float:
        return self.merged.mean_accuracy

    @property
    def mean_normalized(self) -> float:
        return self.merged.mean_normalized or 0.0


@dataclass(frozen=True)
class Sweep:
    """Accuracy over a grid of one parameter (λ), with the best value by mean normalized accuracy."""

    split: str
    param: str
    values: tuple[float, ...]
    mean_accuracy: tuple[float, ...]
    mean_normalized: tuple[float, ...]
    per_task: Mapping[str, tuple[float, ...]]

    @classmethod
    def from_results(
        cls, split: str, param: str, values: Sequence[float], results: Sequence[EvalResult], tasks: Sequence[str]
    ) -> Sweep:
        """One EvalResult per value (a job's partial sweep may have fewer results than planned values)."""
        return cls(
            split,
            param,
            tuple(values[: len(results)]),
            tuple(r.mean_accuracy for r in results),
            tuple(r.mean_normalized for r in results),
            {t: tuple(r.accuracy[t] for r in results) for t in tasks},
        )

    @property
    def best_value(self) -> float | None:
        """The papers' rule: best mean normalized accuracy, the smaller value on ties (None if empty)."""
        if not self.values:
            return None
        best = max(range(len(self.values)), key=lambda i: (self.mean_normalized[i], -self.values[i]))
        return self.values[best]
