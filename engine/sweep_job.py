"""A λ sweep as a background job: the dashboard's first long-running job, and a template for the
fine-tuning, τJp and DV-BASI jobs of later issues.

Every step merges and evaluates (real work), reports the curve so far, and checks for cancel after every
evaluation batch; at the end, or when cancelled, the curve so far is written to the run log, so nothing
computed is lost.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from engine.jobs import Cancelled, JobContext
from engine.merge.registry import ParamValue
from engine.runs import RunLog
from engine.workspace import Sweep, Workspace


def sweep_job(ctx: JobContext, *, workspace: Workspace, run_log: RunLog, tasks: Sequence[str], method: str,
              params: Mapping[str, ParamValue], param: str, values: Sequence[float], split: str) -> dict:
    """Evaluate the merge at each value of `param`; returns (and logs) the curve and the best value."""
    start = time.perf_counter()
    curve = {"values": [], "mean_accuracy": [], "mean_normalized": [], "per_task": {t: [] for t in tasks}}
    status = "done"
    try:
        for i, value in enumerate(values):
            ctx.check_cancelled()
            result = workspace.compare(tasks, method, {**params, param: value}, split=split,
                                       progress=lambda _f, _m: ctx.check_cancelled()).merged  # per batch
            curve["values"].append(value)
            curve["mean_accuracy"].append(result.mean_accuracy)
            curve["mean_normalized"].append(result.mean_normalized)
            for t in tasks:
                curve["per_task"][t].append(result.accuracy[t])
            ctx.report(i + 1, len(values), f"{param} = {value:g}: mean {result.mean_accuracy:.1%}",
                       metrics={"best_mean_accuracy": max(curve["mean_accuracy"])})
    except Cancelled:
        status = "cancelled"
        raise
    finally:
        outputs = _summary(curve, tasks)
        run_log.record("sweep", method=method, tasks=tasks, status=status, device=str(workspace.matrix.T.device),
                       duration_s=round(time.perf_counter() - start, 3),
                       inputs={"collection": str(workspace.collection.root), "pretrained_sha256":
                               workspace.pretrained.sha256, "params": dict(params), "param": param,
                               "values": list(values), "split": split},
                       outputs=outputs)
    return outputs


def _summary(curve: dict, tasks: Sequence[str]) -> dict:
    if not curve["values"]:
        return {"curve": curve, "best_value": None, "accuracy": {}}
    # the papers' rule, as Sweep.best_value: best mean normalized accuracy, the smaller value on ties
    best = max(range(len(curve["values"])), key=lambda i: (curve["mean_normalized"][i], -curve["values"][i]))
    return {"curve": curve, "best_value": curve["values"][best],
            "accuracy": {t: curve["per_task"][t][best] for t in tasks}}


def record_sweep(run_log: RunLog, sweep: Sweep, *, workspace: Workspace, method: str,
                 params: Mapping[str, ParamValue], device: str) -> int:
    """Log a sweep computed in the foreground (the merge page's "λ sweep" button)."""
    curve = {"values": list(sweep.values), "mean_accuracy": list(sweep.mean_accuracy),
             "mean_normalized": list(sweep.mean_normalized),
             "per_task": {t: list(v) for t, v in sweep.per_task.items()}}
    return run_log.record("sweep", method=method, tasks=tuple(sweep.per_task), device=device,
                          inputs={"collection": str(workspace.collection.root),
                                  "pretrained_sha256": workspace.pretrained.sha256, "params": dict(params),
                                  "param": sweep.param, "values": list(sweep.values), "split": sweep.split},
                          outputs=_summary(curve, tuple(sweep.per_task)))
