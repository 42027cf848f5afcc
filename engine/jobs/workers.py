"""A page job's trials (Compare's grids, the landscape's points, a sweep's values, the benchmark's searches)
submitted to the one trial engine (engine/search/): in this process on the open workspace, or on Ray workers
when a `ray` setting is given (an address, `local` or `auto`; else `MERGELAB_RAY`), so a job with hundreds of
full evaluations spreads over a cluster's GPUs. Each trial is one merge and one evaluation
(`engine.search.trials.evaluate_trial`), so the numbers are the same wherever it runs. The runner's cancel
reaches the evaluator directly: no trial starts once it has returned (in process, the running one stops at
its next evaluation batch), and the job then stops with `Cancelled` (logged partial by the runner).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from engine.jobs.runner import JobContext
from engine.search.backend import Source, ray_setting, trial_evaluator
from engine.search.outcome import OnTrial, run_batch
from engine.search.trials import TrialRequest, TrialResult

RunTrials = Callable[[Sequence[TrialRequest], OnTrial], list[TrialResult]]


@contextmanager
def job_trials(ctx: JobContext, source: Source, *, ray: str | None, workers: int | None) -> Iterator[RunTrials]:
    """Yield `run(requests, on_trial)`: every request's result in index order, on one evaluator (Ray workers
    open the collection once for all the batches of the job); Cancelled once the job is cancelled."""
    setting = ray_setting(ray)
    if setting:
        ctx.starting("Ray workers opening the collection")
    evaluator = trial_evaluator(source, ray=setting or None, workers=workers)
    ctx.on_cancel(evaluator.cancel)

    def run(requests: Sequence[TrialRequest], on_trial: OnTrial) -> list[TrialResult]:
        results = run_batch(evaluator, requests, on_trial=on_trial, stop=lambda: ctx.cancelled)
        ctx.check_cancelled()
        return results

    try:
        yield run
    finally:
        evaluator.close()
