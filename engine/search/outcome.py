"""What a sweep or a search reached: its trials in index order, how many were planned, the best by the
papers' rule (highest mean normalized accuracy on val, the earlier trial on ties) and, for a search, the
best setting evaluated once on test."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.eval.results import best_index
from engine.search.trials import Stop, TrialEvaluator, TrialRequest, TrialResult

OnTrial = Callable[[TrialResult], None]


def best_trial(trials: Sequence[TrialResult]) -> TrialResult | None:
    """The trial `engine.eval.results.best_index` picks, in index order whatever order they finished in."""
    ordered = sorted(trials, key=lambda t: t.index)
    best = best_index([t.mean_normalized for t in ordered])
    return None if best is None else ordered[best]


@dataclass(frozen=True)
class SearchOutcome:
    strategy: str  # "grid", "tpe" or "cma"
    method: str
    tasks: tuple[str, ...]
    trials: tuple[TrialResult, ...]  # index order; fewer than planned when stopped
    planned: int
    test: TrialResult | None = None  # the best setting on the test split (searches)

    @property
    def complete(self) -> bool:
        return len(self.trials) == self.planned

    @property
    def best(self) -> TrialResult | None:
        return best_trial(self.trials)

    def to_json(self) -> dict[str, Any]:
        best = self.best
        return {
            "strategy": self.strategy,
            "trials": len(self.trials),
            "planned": self.planned,
            "best": None if best is None else best.to_json(),
            "best_params": None if best is None else dict(best.params),
            "accuracy": {} if best is None else dict(best.accuracy),
            "mean_normalized": None if best is None else best.mean_normalized,
            "test": None if self.test is None else self.test.to_json(),
        }


def run_batch(
    evaluator: TrialEvaluator, requests: Sequence[TrialRequest], *, on_trial: OnTrial, stop: Stop
) -> list[TrialResult]:
    """Every request's result in index order (fewer when stopped), each passed to `on_trial` as it
    finishes; a result whose index is not asked for, or comes twice, is an error of the evaluator."""
    asked, results = {r.index for r in requests}, {}
    for result in evaluator.run(requests, stop=stop):
        if result.index not in asked or result.index in results:
            raise RuntimeError(f"trial {result.index} returned twice or never asked for")
        results[result.index] = result
        on_trial(result)
    return [results[i] for i in sorted(results)]
