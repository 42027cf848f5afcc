"""aTLAS and DV-BASI as background jobs: live per-epoch curves, cancel keeps the best point, run log, export.

A DV-BASI job starts from aTLAS (learned first, in the same job), a task-arithmetic merge at a given λ,
or a merged checkpoint (e.g. one exported from the run log). Progress `metrics` carry the whole history
so far, so a page draws live curves; when cancelled, the best completed point so far is still logged
and exported. Test accuracy is computed once at the end, for reporting only: every choice uses the
selection part of val.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from engine.eval.evaluate import evaluate
from engine.io.checkpoints import save_checkpoint
from engine.jobs.runner import Cancelled, JobContext
from engine.learn.atlas import atlas
from engine.learn.coefficients import EpochRecord, LearnConfig, ValSplit
from engine.learn.dvbasi import DvBasiConfig, Iteration, dv_basi
from engine.params import unflatten
from engine.runs.log import RunLog
from engine.store.reader import in_memory
from engine.workspace import Workspace


@dataclass(frozen=True)
class EpochPoint:
    stage: str  # "atlas" or "dv-basi"
    iteration: int  # 0 for aTLAS, else the DV-BASI iteration
    epoch: int
    loss: float
    selection: float  # mean selection accuracy after the epoch


@dataclass(frozen=True)
class IterationPoint:
    iteration: int
    delta_norm: float
    selection: Mapping[str, float]  # task → selection accuracy after the move
    scales: tuple[float, ...]  # λ per block (one when isotropic)


@dataclass(frozen=True)
class LearnCurves:
    """Every epoch of every stage end to end, and one point per DV-BASI iteration."""

    epochs: tuple[EpochPoint, ...] = ()
    iterations: tuple[IterationPoint, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LearnCurves:
        """From the JSON a job reports as progress or the run log keeps."""
        return cls(
            tuple(EpochPoint(**e) for e in data.get("epochs", ())),
            tuple(IterationPoint(**{**i, "scales": tuple(i["scales"])}) for i in data.get("iterations", ())),
        )


@dataclass(frozen=True)
class LearnedPoint:
    """A merged point on test: its label, per-task accuracy and mean."""

    point: str
    accuracy: Mapping[str, float]
    mean_accuracy: float


@dataclass(frozen=True)
class LearnOutcome:
    """A finished (or cancelled: `partial`) learning run, judged on `split` (test) for reporting only."""

    point: str
    accuracy: Mapping[str, float]
    mean_accuracy: float
    mean_normalized: float | None
    split: str
    curves: LearnCurves
    artifact: str | None = None  # the exported merged checkpoint
    start: LearnedPoint | None = None  # where DV-BASI started (aTLAS or task arithmetic)
    partial: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Progress:
    """What a learning run has reached: its curves and its best point so far."""

    def __init__(self, ctx: JobContext, iterations: int) -> None:
        self.ctx, self.iterations = ctx, iterations
        self.curves = LearnCurves()
        self.best: tuple[torch.Tensor, str] | None = None  # θ [P] and its label
        self.origin: tuple[torch.Tensor, str] | None = None  # where DV-BASI started

    def report(self, message: str) -> None:
        self.ctx.report(len(self.curves.iterations), self.iterations, message, metrics=asdict(self.curves))

    def on_epoch(self, stage: str, iteration: int, record: EpochRecord) -> None:
        point = EpochPoint(stage, iteration, record.epoch, record.loss, record.mean_selection)
        self.curves = replace(self.curves, epochs=(*self.curves.epochs, point))
        self.report(f"{stage} · epoch {record.epoch} · selection {record.mean_selection:.1%}")
        self.ctx.check_cancelled()

    def on_iteration(self, it: Iteration) -> None:
        point = IterationPoint(it.index, it.delta_norm, dict(it.selection), tuple(it.scales.tolist()))
        self.curves = replace(self.curves, iterations=(*self.curves.iterations, point))
        self.report(f"iteration {it.index}: ‖δ‖ {it.delta_norm:.3g} · selection {it.mean_selection:.1%}")


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
) -> LearnOutcome:
    """start: "atlas" | "task_arithmetic" (at `lam`); `config` None runs aTLAS alone."""
    began = time.perf_counter()
    if start not in ("atlas", "task_arithmetic"):
        raise ValueError(f"start must be 'atlas' or 'task_arithmetic', not {start!r}")
    ctx.starting("splitting val into fit and selection halves and building the heads")
    data = ValSplit.of(workspace.suite, seed=atlas_config.seed)
    progress = _Progress(ctx, config.iterations if config else 0)

    def log_run(status: str, outputs: dict) -> None:
        """The learned run's row (done, or cancelled with what it reached)."""
        if run_log is not None:
            run_log.record(
                "learned",
                job_id=ctx.job_id,
                method="dv_basi" if config else "atlas",
                tasks=workspace.task_names,
                device=str(workspace.matrix.T.device),
                status=status,
                duration_s=round(time.perf_counter() - began, 3),
                inputs=_inputs(start, lam, atlas_config, config),
                outputs=outputs,
            )

    status = "done"
    try:
        _learn(workspace, progress, data, start=start, lam=lam, atlas_config=atlas_config, config=config)
    except Cancelled:
        status = "cancelled"
        if progress.best is None:  # cancelled in aTLAS's first epochs: only the curves so far to keep
            log_run(status, {"partial": True, "point": None, "curves": asdict(progress.curves), **_reached(progress)})
            raise
    outcome = _finish(workspace, *progress.best, progress.curves, out_dir=out_dir, partial=status == "cancelled")
    if config is not None:
        outcome = _with_start_on_test(workspace, outcome, progress)
    log_run(status, {**outcome.to_json(), **(_reached(progress) if status == "cancelled" else {})})
    if status == "cancelled":
        raise Cancelled()
    return outcome


def _with_start_on_test(workspace: Workspace, outcome: LearnOutcome, progress: _Progress) -> LearnOutcome:
    """DV-BASI's outcome with the point it started from evaluated on test, beside the point it reached."""
    theta, name = progress.origin  # θ [P] and what it is (aTLAS's point, or task arithmetic at λ)
    start_test = evaluate(theta, workspace.suite, "test")
    return replace(outcome, start=LearnedPoint(name, dict(start_test.accuracy), start_test.mean_accuracy))


def _learn(
    workspace: Workspace,
    progress: _Progress,
    data: ValSplit,
    *,
    start: str,
    lam: float,
    atlas_config: LearnConfig,
    config: DvBasiConfig | None,
) -> None:
    """The start (aTLAS, or task arithmetic at λ), then DV-BASI from it; `progress` holds the best so far (what
    a cancel keeps)."""
    m, suite = workspace.matrix, workspace.suite
    rows = in_memory(m.T, purpose="learned coefficients")  # [K, P]: aTLAS reads the rows whole
    if start == "atlas":
        learned = atlas(
            suite,
            m.theta0,
            rows,
            m.spec,
            data=data,
            config=atlas_config,
            on_epoch=lambda r: progress.on_epoch("atlas", 0, r),
        )
        theta, label = learned.theta, "aTLAS"
    else:
        theta, label = m.theta0 + lam * rows.sum(dim=0), f"task arithmetic λ={lam:g}"  # [P]
    progress.best = progress.origin = (theta, label)
    if config is None:
        return
    result = dv_basi(
        suite,
        m.theta0,
        theta,
        m.spec,
        data=data,
        config=config,
        on_epoch=lambda j, r: progress.on_epoch("dv-basi", j, r),
        on_iteration=progress.on_iteration,
    )
    progress.best = (result.theta, f"{label} + DV-BASI (iteration {result.best_iteration})")


def _inputs(start: str, lam: float, atlas_config: LearnConfig, config: DvBasiConfig | None) -> dict[str, Any]:
    return {
        "start": start,
        "lam": lam,
        "atlas": asdict(atlas_config),
        "dv_basi": None if config is None else asdict(config),
    }


def _reached(progress: _Progress) -> dict[str, Any]:
    """How far a cancelled run got: epochs over all stages, DV-BASI iterations of those asked for."""
    return {
        "epochs": len(progress.curves.epochs),
        "step": len(progress.curves.iterations),
        "total": progress.iterations,
    }


def _finish(
    workspace: Workspace,
    theta: torch.Tensor,
    label: str,
    curves: LearnCurves,
    *,
    out_dir: Path | None,
    partial: bool,
) -> LearnOutcome:
    test = evaluate(theta, workspace.suite, "test", reference=workspace.finetuned("test"))
    artifact = None
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
        artifact = str(checkpoint.path)
    return LearnOutcome(
        label,
        dict(test.accuracy),
        test.mean_accuracy,
        test.mean_normalized,
        "test",
        curves,
        artifact=artifact,
        partial=partial,
    )
