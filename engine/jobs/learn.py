"""aTLAS and DV-BASI as background jobs: live per-epoch curves, cancel keeps the best point, run log, export.

A DV-BASI job starts from aTLAS (learned first, in the same job), a task-arithmetic merge at a given λ,
or a merged checkpoint (e.g. one exported from the run log). Progress `metrics` carry the whole history
so far, so a page draws live curves; when cancelled, the best completed point so far is still logged
and exported. Test accuracy is computed once at the end, for reporting only: every choice uses the
selection part of val.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import torch

from engine.eval.evaluate import evaluate
from engine.io.checkpoints import save_checkpoint
from engine.jobs.runner import Cancelled, JobContext
from engine.learn.atlas import atlas
from engine.learn.coefficients import EpochRecord, LearnConfig, ValSplit
from engine.learn.dvbasi import DvBasiConfig, Iteration, dv_basi
from engine.params import unflatten
from engine.runs.log import RunLog
from engine.workspace import Workspace


def learn_job(
    ctx: JobContext,
    *,
    workspace: Workspace,
    start: str = "atlas",
    lam: float = 0.3,
    atlas_config: LearnConfig = LearnConfig(),
    config: DvBasiConfig | None = DvBasiConfig(),
    out_dir: Path | None = None,
    run_log: RunLog | None = None,
) -> dict:
    """start: "atlas" | "task_arithmetic" (at `lam`); `config` None runs aTLAS alone."""
    began, m, suite = time.perf_counter(), workspace.matrix, workspace.suite
    if start not in ("atlas", "task_arithmetic"):
        raise ValueError(f"start must be 'atlas' or 'task_arithmetic', not {start!r}")
    if config is not None:
        config.check()
    data = ValSplit.of(suite, seed=atlas_config.seed)
    curves = {"epochs": [], "iterations": []}
    best = {"theta": None, "label": start}
    origin = {"theta": None, "label": None}  # where DV-BASI started (the aTLAS or TA point)

    def report(message: str) -> None:
        ctx.report(
            len(curves["iterations"]),
            (config.iterations if config else 0),
            message,
            metrics={k: list(v) for k, v in curves.items()},
        )

    def on_epoch(stage: str, iteration: int, record: EpochRecord) -> None:
        curves["epochs"].append(
            {
                "stage": stage,
                "iteration": iteration,
                "epoch": record.epoch,
                "loss": record.loss,
                "selection": record.mean_selection,
            }
        )
        report(f"{stage} · epoch {record.epoch} · selection {record.mean_selection:.1%}")
        ctx.check_cancelled()

    status = "done"
    try:
        if start == "atlas":
            learned = atlas(
                suite, m.theta0, m.T, m.spec, data=data, config=atlas_config, on_epoch=lambda r: on_epoch("atlas", 0, r)
            )
            theta, label = learned.theta, "aTLAS"
        else:
            theta, label = m.theta0 + lam * m.T.sum(dim=0), f"task arithmetic λ={lam:g}"
        best.update(theta=theta, label=label)
        origin.update(theta=theta, label=label)
        if config is not None:

            def on_iteration(it: Iteration) -> None:
                curves["iterations"].append(
                    {
                        "iteration": it.index,
                        "delta_norm": it.delta_norm,
                        "selection": dict(it.selection),
                        "scales": it.scales.tolist(),
                    }
                )
                report(f"iteration {it.index}: selection {it.mean_selection:.1%}")

            result = dv_basi(
                suite,
                m.theta0,
                theta,
                m.spec,
                data=data,
                config=config,
                on_epoch=lambda j, r: on_epoch("dv-basi", j, r),
                on_iteration=on_iteration,
            )
            best.update(theta=result.theta, label=f"{label} + DV-BASI (iteration {result.best_iteration})")
    except Cancelled:
        status = "cancelled"
        if best["theta"] is None:
            raise
    outputs = _finish(workspace, best["theta"], best["label"], curves, out_dir=out_dir)
    if config is not None:
        start_test = evaluate(origin["theta"], workspace.suite, "test")
        outputs["start"] = {
            "point": origin["label"],
            "accuracy": dict(start_test.accuracy),
            "mean_accuracy": start_test.mean_accuracy,
        }
    if status == "cancelled":
        outputs["partial"] = True  # the best point reached before the cancel
    if run_log is not None:
        run_log.record(
            "learned",
            job_id=ctx.job_id,
            method="dv_basi" if config else "atlas",
            tasks=workspace.task_names,
            device=str(m.T.device),
            status=status,
            duration_s=round(time.perf_counter() - began, 3),
            inputs={
                "start": start,
                "lam": lam,
                "atlas": asdict(atlas_config),
                "dv_basi": None if config is None else asdict(config),
            },
            outputs=outputs,
        )
    if status == "cancelled":
        raise Cancelled()
    return outputs


def _finish(workspace: Workspace, theta: torch.Tensor, label: str, curves: dict, *, out_dir: Path | None) -> dict:
    test = evaluate(theta, workspace.suite, "test", reference=workspace.finetuned("test"))
    outputs = {
        "point": label,
        "accuracy": dict(test.accuracy),
        "mean_accuracy": test.mean_accuracy,
        "mean_normalized": test.mean_normalized,
        "split": "test",
        "curves": curves,
    }
    if out_dir is not None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        path = Path(out_dir) / f"learned-{stamp}.safetensors"
        meta = workspace.pretrained
        checkpoint = save_checkpoint(
            path,
            unflatten(theta.detach().cpu(), workspace.matrix.spec),
            architecture=meta.architecture,
            quick_gelu=meta.quick_gelu,
            variant="merged",
            training={"kind": "learned coefficients", "point": label, "checkpoints": dict(workspace.variants)},
            source="mergelab aTLAS / DV-BASI",
            parent_sha256=workspace.pretrained.tensors_sha256,
        )
        outputs["artifact"] = str(checkpoint.path)
    return outputs
