"""Searches over per-task coefficients (one λ per task vector): Optuna's TPE sampler (Bergstra et al.,
NeurIPS 2011) or CMA-ES (Hansen, 2016; the `cma` package, as mergekit-evolve uses it). The objective is the
trial's mean normalized accuracy on `split` (val), maximised; the best setting is then evaluated once on test.

Trials are asked and told in batches of a fixed size: a batch is asked in full, run by the evaluator in
whatever order its workers finish, and told back in index order. So a seeded search asks the same trials,
and finds the same best, whatever the number of workers or the order they finish in.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.errors import ParameterError
from engine.merge import get_method
from engine.merge.declaration import ParamValue
from engine.search.outcome import OnTrial, SearchOutcome, run_batch
from engine.search.trials import Stop, TrialEvaluator, TrialRequest

STRATEGIES = ("tpe", "cma")


@dataclass(frozen=True)
class SearchSpace:
    """One coefficient `param` per task, each in [low, high] (inside the method's declared range)."""

    method: str
    tasks: tuple[str, ...]
    param: str = "lam"
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        declared = {p.name: p for p in get_method(self.method).params}
        where = f"{self.method}.{self.param}"
        if self.param not in declared or not declared[self.param].per_task:
            per_task = sorted(p for p, d in declared.items() if d.per_task)
            raise ParameterError(where, "is not a per-task parameter of the method", fix=f"search one of {per_task}")
        if not self.low < self.high:
            raise ParameterError(where, f"search range [{self.low}, {self.high}] is empty", fix="give low < high")
        declared[self.param].resolve([self.low, self.high], num_tasks=2, method=self.method)  # both in range

    @property
    def start(self) -> float:
        """CMA-ES's first mean: the method's default, moved into the range."""
        default = next(p.default for p in get_method(self.method).params if p.name == self.param)
        return min(max(default, self.low), self.high)


class Strategy(Protocol):
    def ask(self, count: int) -> list[list[float]]: ...
    def tell(self, points: Sequence[Sequence[float]], values: Sequence[float]) -> None: ...


class TpeStrategy:
    def __init__(self, space: SearchSpace, *, seed: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial otherwise
        self._space = space
        self._study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        self._asked: list[Any] = []

    def ask(self, count: int) -> list[list[float]]:
        self._asked = [self._study.ask() for _ in range(count)]
        space = self._space
        return [
            [t.suggest_float(f"{space.param}[{task}]", space.low, space.high) for task in space.tasks]
            for t in self._asked
        ]

    def tell(self, points: Sequence[Sequence[float]], values: Sequence[float]) -> None:
        for trial, value in zip(self._asked, values):
            self._study.tell(trial, value)


class CmaStrategy:
    """CMA-ES with the population as the batch; σ₀ a sixth of the range (mergekit-evolve's 1/6 on [0, 1]).
    `cma` samples from numpy's global generator: its state is kept here and restored around each ask, so
    other users of numpy's generator neither disturb this search nor are disturbed by it."""

    def __init__(self, space: SearchSpace, *, seed: int, batch: int) -> None:
        import numpy as np

        with warnings.catch_warnings():  # it warns on import that matplotlib (for cma.plot) is absent
            warnings.simplefilter("ignore", UserWarning)
            import cma

        saved = np.random.get_state()
        options = {
            "seed": seed + 1,
            "bounds": [space.low, space.high],
            "popsize": batch,
            "verbose": -9,
        }  # seed 0: clock
        self._es = cma.CMAEvolutionStrategy([space.start] * len(space.tasks), (space.high - space.low) / 6, options)
        self._state = np.random.get_state()
        np.random.set_state(saved)
        self._asked: list = []

    def ask(self, count: int) -> list[list[float]]:
        import numpy as np

        saved = np.random.get_state()
        np.random.set_state(self._state)
        try:
            self._asked = self._es.ask()  # a whole population; a last, shorter batch uses its first `count`
        finally:
            self._state = np.random.get_state()
            np.random.set_state(saved)
        return [[float(v) for v in x] for x in self._asked[:count]]

    def tell(self, points: Sequence[Sequence[float]], values: Sequence[float]) -> None:
        if len(values) == len(self._asked):  # CMA-ES learns from whole populations only
            self._es.tell(self._asked, [-v for v in values])  # cma minimises


def strategy_for(name: str, space: SearchSpace, *, seed: int, batch: int) -> Strategy:
    if name == "tpe":
        return TpeStrategy(space, seed=seed)
    if name == "cma":
        return CmaStrategy(space, seed=seed, batch=batch)
    raise ParameterError(f"search strategy {name!r}", "is unknown", fix=f"use one of {', '.join(STRATEGIES)}")


def coefficient_search(
    evaluator: TrialEvaluator,
    space: SearchSpace,
    *,
    strategy: str = "tpe",
    trials: int = 200,
    batch: int = 8,
    seed: int = 0,
    params: Mapping[str, ParamValue] | None = None,
    split: str = "val",
    test_split: str | None = "test",
    on_trial: OnTrial = lambda _r: None,
    stop: Stop = lambda: False,
) -> SearchOutcome:
    """`trials` settings of `space` on `split`, `batch` at a time, over the base `params`; the best setting
    is evaluated on `test_split` (unless None, or the search was stopped)."""
    if trials < 1 or batch < 1:
        raise ParameterError("search", f"trials {trials} and batch {batch} must be ≥ 1", fix="give positive numbers")
    chooser, base, done = strategy_for(strategy, space, seed=seed, batch=batch), dict(params or {}), []
    while len(done) < trials and not stop():
        points = chooser.ask(min(batch, trials - len(done)))
        requests = [
            TrialRequest(len(done) + i, space.method, space.tasks, {**base, space.param: point}, split)
            for i, point in enumerate(points)
        ]
        results = run_batch(evaluator, requests, on_trial=on_trial, stop=stop)
        done.extend(results)
        if len(results) < len(requests):
            break
        chooser.tell(points, [r.mean_normalized for r in results])
    outcome = SearchOutcome(strategy, space.method, space.tasks, tuple(done), trials)
    if test_split is None or not outcome.complete:
        return outcome
    best = outcome.best
    request = TrialRequest(trials, space.method, space.tasks, dict(best.params), test_split)
    tested = run_batch(evaluator, [request], on_trial=lambda _r: None, stop=stop)
    return SearchOutcome(strategy, space.method, space.tasks, outcome.trials, trials, tested[0] if tested else None)
