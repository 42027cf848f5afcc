"""A page job's independent trials (Compare's grids, the landscape's points) on the search engine's evaluator
(engine/search/): Ray workers when a `ray` setting is given (an address, `local` or `auto`; else
`MERGELAB_RAY`), so a job with hundreds of full evaluations spreads over a cluster's GPUs. Each trial is one
merge and one evaluation (`engine.search.trials.evaluate_trial`, `Workspace.compare` on the worker), so the
numbers are those of the job's in-process loop. The runner's cancel reaches the evaluator directly: no trial
starts once it has returned, and the job then stops with `Cancelled` (logged partial by the runner).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from engine.jobs.runner import JobContext
from engine.search.backend import Source, trial_evaluator
from engine.search.outcome import OnTrial, run_batch
from engine.search.trials import TrialRequest, TrialResult

RunTrials = Callable[[Sequence[TrialRequest], OnTrial], list[TrialResult]]


@contextmanager
def trials_on_workers(ctx: JobContext, source: Source, *, ray: str, workers: int | None) -> Iterator[RunTrials]:
    """Yield `run(requests, on_trial)`: every request's result in index order, on one evaluator (its workers
    open the collection once for all the batches of the job); Cancelled once the job is cancelled."""
    ctx.starting("Ray workers opening the collection")
    evaluator = trial_evaluator(source, ray=ray, workers=workers)
    ctx.on_cancel(evaluator.cancel)

    def run(requests: Sequence[TrialRequest], on_trial: OnTrial) -> list[TrialResult]:
        results = run_batch(evaluator, requests, on_trial=on_trial, stop=lambda: ctx.cancelled)
        ctx.check_cancelled()
        return results

    try:
        yield run
    finally:
        evaluator.close()
