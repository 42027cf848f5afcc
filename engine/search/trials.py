"""One trial is one merge at a setting and one evaluation of it: what a sweep or a search asks of its
workers. Requests and results are small frozen values (a setting, per-task accuracies), so they cross a
process or machine boundary cheaply; the workspace they run on never does.

A `TrialEvaluator` runs a batch of requests and yields each result as it finishes, in whatever order its
workers finish; callers that need an order sort by `index`. `cancel()` returns only once no further trial
of the batch can start. `LocalEvaluator` runs them one after the other on an open workspace (what every
job did before Ray); engine/search/ray_trials.py runs them on Ray actors.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.merge.declaration import ParamValue
from engine.workspace import Workspace

Stop = Callable[[], bool]


@dataclass(frozen=True)
class TrialRequest:
    index: int  # its place in the sweep or search: results are ordered and recorded by it
    method: str
    tasks: tuple[str, ...]
    params: Mapping[str, ParamValue]  # the whole setting
    split: str = "val"


@dataclass(frozen=True)
class TrialResult:
    index: int
    params: Mapping[str, ParamValue]
    split: str
    accuracy: Mapping[str, float]
    normalized: Mapping[str, float]  # merged / fine-tuned accuracy per task, on the same split
    mean_accuracy: float
    mean_normalized: float
    # where and how fast: not part of what a trial found, so equal trials compare equal wherever they ran
    worker: str = field(default="", compare=False)  # host:pid of the process that evaluated it
    seconds: float = field(default=0.0, compare=False)  # the merge and the evaluation, as the worker timed them

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "params": _plain(self.params),
            "split": self.split,
            "accuracy": dict(self.accuracy),
            "normalized": dict(self.normalized),
            "mean_accuracy": self.mean_accuracy,
            "mean_normalized": self.mean_normalized,
            "worker": self.worker,
            "seconds": self.seconds,
        }


class TrialEvaluator(Protocol):
    workers: int
    retried: int  # trials run again after their worker died

    def run(self, requests: Sequence[TrialRequest], *, stop: Stop = ...) -> Iterator[TrialResult]: ...
    def cancel(self) -> None: ...
    def starts(self) -> tuple[float, ...]: ...  # when each trial started (epoch s), also after close
    def close(self) -> None: ...


class TrialStopped(Exception):
    """A trial abandoned between two evaluation batches because its sweep was stopped or cancelled."""


def evaluate_trial(workspace: Workspace, request: TrialRequest, *, stop: Stop = lambda: False) -> TrialResult:
    """Merge and evaluate one setting: mean normalized accuracy is the papers' selection objective
    (per task merged / fine-tuned accuracy, Ilharco et al., ICLR 2023). `stop` is asked between evaluation
    batches: TrialStopped once it says so (a cancel does not wait for a whole evaluation)."""
    start = time.perf_counter()

    def check(_fraction: float, _message: str) -> None:
        if stop():
            raise TrialStopped(f"trial {request.index}")

    comparison = workspace.compare(request.tasks, request.method, request.params, split=request.split, progress=check)
    merged = comparison.merged
    return TrialResult(
        request.index,
        _plain(request.params),
        request.split,
        dict(merged.accuracy),
        dict(merged.normalized or {}),
        merged.mean_accuracy,
        comparison.mean_normalized,
        worker_name(),
        round(time.perf_counter() - start, 6),
    )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class LocalEvaluator:
    """Trials in this process, one after the other, on one open workspace."""

    workers, retried = 1, 0

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._cancelled = threading.Event()
        self._starts: list[float] = []

    def run(self, requests: Sequence[TrialRequest], *, stop: Stop = lambda: False) -> Iterator[TrialResult]:
        stopped = lambda: stop() or self._cancelled.is_set()  # noqa: E731
        for request in requests:
            if stopped():
                return
            self._starts.append(time.time())
            try:
                result = evaluate_trial(self.workspace, request, stop=stopped)
            except TrialStopped:  # abandoned mid-evaluation, as a Ray cancel abandons a running trial
                return
            yield result

    def cancel(self) -> None:
        self._cancelled.set()

    def starts(self) -> tuple[float, ...]:
        return tuple(self._starts)

    def close(self) -> None:
        """Nothing to release: the workspace belongs to the caller."""


def _plain(params: Mapping[str, ParamValue]) -> dict[str, Any]:
    """A setting as JSON values: per-task values as lists."""
    return {k: v if isinstance(v, (int, float)) else [float(x) for x in v] for k, v in params.items()}
