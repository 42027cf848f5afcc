"""What a merge's evaluation gives the figures: merged against zero-shot and fine-tuned accuracy per task on one
split (`MergeComparison`), accuracy over a grid of one parameter with the papers' best value (`Sweep`), and the
one rule that picks the best setting of any grid, sweep, search, landscape or benchmark (`best_index`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.eval.evaluate import EvalResult


def best_index(scores: Sequence[float | None]) -> int | None:
    """The papers' selection rule, the only copy: the highest score (mean normalized accuracy on val), and on a
    tie the EARLIER one in the order the settings were planned (grid order, the last axis fastest; a search's
    trial index). On an ascending grid that is the smaller value, as a sweep's λ; unlike "the smaller value",
    it is defined for grids of several axes and per-task settings too. Missing (None) or NaN scores are never
    chosen; None when nothing is scored."""
    scored = [i for i, s in enumerate(scores) if s is not None and s == s]
    return max(scored, key=lambda i: (scores[i], -i)) if scored else None


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
        """The value `best_index` picks (the earlier value on ties; None if empty)."""
        best = best_index(self.mean_normalized)
        return None if best is None else self.values[best]
