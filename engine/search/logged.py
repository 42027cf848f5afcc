"""A sweep or search read back from the run log (its row and its trials), and the two views of it the Sweep
page draws: a plane of two objectives with its Pareto front, and each trial's setting as coordinates.

An objective is a task's accuracy, "mean" (mean accuracy over the tasks) or "worst" (the lowest task's); a
trial is on the front when no other trial is at least as good on both and better on one (Pareto, 1896)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import ParameterError
from engine.runs.log import Run, RunLog
from engine.search.outcome import best_trial
from engine.search.trials import TrialResult

SWEEP_KINDS = ("grid_sweep", "search")
SUMMARIES = ("mean", "worst")


@dataclass(frozen=True)
class LoggedSweep:
    run: Run
    trials: tuple[TrialResult, ...]  # index order

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.run.tasks

    @property
    def best(self) -> TrialResult | None:
        """The papers' rule, as the sweep chose: best mean normalized accuracy, the earlier trial on ties."""
        return best_trial(self.trials)


@dataclass(frozen=True)
class ObjectivePlane:
    x: str
    y: str
    xs: tuple[float, ...]  # per trial, in index order
    ys: tuple[float, ...]
    indices: tuple[int, ...]
    front: tuple[int, ...]  # positions (into xs) of the Pareto front, by x
    best: int | None  # position of the sweep's best trial


@dataclass(frozen=True)
class Coordinates:
    names: tuple[str, ...]  # one per varied parameter value (a per-task λ: one per task)
    columns: tuple[tuple[float, ...], ...]  # per name, per trial
    score: tuple[float, ...]  # mean normalized accuracy per trial


def logged_sweeps(run_log: RunLog) -> list[Run]:
    """Every sweep and search of the run log (not their trials), newest first."""
    return [r for r in run_log.runs(top_level=True) if r.kind in SWEEP_KINDS]


def read_sweep(run_log: RunLog, run_id: int) -> LoggedSweep:
    run = run_log.get(run_id)
    if run.kind not in SWEEP_KINDS:
        raise ParameterError(f"run {run_id}", f"is a {run.kind} run, not a sweep", fix=f"pick one of {SWEEP_KINDS}")
    trials = sorted((trial_from_json(r.outputs) for r in run_log.runs(parent_id=run_id)), key=lambda t: t.index)
    return LoggedSweep(run, tuple(trials))


def trial_from_json(data: Mapping[str, Any]) -> TrialResult:
    return TrialResult(
        data["index"],
        data["params"],
        data["split"],
        data["accuracy"],
        data["normalized"],
        data["mean_accuracy"],
        data["mean_normalized"],
        data.get("worker", ""),
        data.get("seconds", 0.0),
    )


def objective(trial: TrialResult, name: str) -> float:
    if name == "mean":
        return trial.mean_accuracy
    if name == "worst":
        return min(trial.accuracy.values())
    if name not in trial.accuracy:
        raise ParameterError(f"objective {name!r}", "is no task of the sweep", fix=f"use a task or {SUMMARIES}")
    return trial.accuracy[name]


def objective_plane(sweep: LoggedSweep, x: str, y: str) -> ObjectivePlane:
    xs = tuple(objective(t, x) for t in sweep.trials)
    ys = tuple(objective(t, y) for t in sweep.trials)
    best = sweep.best
    position = None if best is None else [t.index for t in sweep.trials].index(best.index)
    indices = tuple(t.index for t in sweep.trials)
    return ObjectivePlane(x, y, xs, ys, indices, pareto_front(xs, ys), position)


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> tuple[int, ...]:
    """Positions of the non-dominated points (both objectives maximised), ordered by x."""
    order = sorted(range(len(xs)), key=lambda i: (-xs[i], -ys[i]))
    front, best_y = [], float("-inf")
    for i in order:  # by x descending: a point is on the front iff its y beats every point with a larger x
        if ys[i] > best_y:
            front.append(i)
            best_y = ys[i]
    return tuple(sorted(front, key=lambda i: xs[i]))


def coordinates(sweep: LoggedSweep) -> Coordinates:
    """Each varied parameter value as a coordinate: a per-task list as one name per task (`lam[digits]`)."""
    columns: dict[str, list[float]] = {}
    for trial in sweep.trials:
        for name, value in trial.params.items():
            values = [value] if isinstance(value, (int, float)) else list(value)
            labels = [name] if len(values) == 1 else [f"{name}[{t}]" for t in sweep.tasks]
            for label, v in zip(labels, values):
                columns.setdefault(label, []).append(float(v))
    varied = {k: v for k, v in columns.items() if len(set(v)) > 1}
    score = tuple(t.mean_normalized for t in sweep.trials)
    return Coordinates(tuple(varied), tuple(tuple(v) for v in varied.values()), score)
