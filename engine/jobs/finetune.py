"""Fine-tuning one task as a background job: live loss, penalty and val accuracy; the checkpoint at the end.

The new checkpoint goes to the data home (`DataHome.finetunes`, by pretrained sha256 and task), never
into the collection; `Collection.with_finetunes` lists it beside the shipped ones on every page. Its
sidecar records the mode (as the variant, so linearized fine-tunes are evaluated as such) and the whole
recipe. Cancelling stops between steps and writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from engine.data.tasks import LabelledImages
from engine.errors import DatasetError
from engine.eval.evaluate import accuracy_on
from engine.eval.suite import EvalSuite
from engine.io.checkpoints import save_checkpoint
from engine.io.formats.peft_export import export_lora_adapter
from engine.jobs.runner import JobContext
from engine.pool.collection import finetune_folder
from engine.runs.log import RunLog
from engine.train.finetune import FinetuneConfig, FinetuneResult, FinetuneStep, finetune
from engine.workspace import Workspace

SOURCE = "mergelab fine-tune"  # the metadata's source of every fine-tune this job writes


@dataclass(frozen=True)
class FinetuneCurves:
    """Loss and τJp penalty per step, val accuracy at its evaluation steps (step 0: the pretrained model)."""

    step: tuple[int, ...] = ()
    loss: tuple[float, ...] = ()
    penalty: tuple[float | None, ...] = ()
    val_step: tuple[int, ...] = ()
    val_accuracy: tuple[float, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FinetuneCurves:
        """From the JSON a job reports as progress or the run log keeps (missing series are empty)."""
        return cls(**{f.name: tuple(data.get(f.name, ())) for f in fields(cls)})

    def appended(self, record: FinetuneStep) -> FinetuneCurves:
        val = record.val_accuracy is not None
        return FinetuneCurves(
            (*self.step, record.step),
            (*self.loss, round(record.loss, 5)),
            (*self.penalty, None if record.penalty is None else round(record.penalty, 5)),
            (*self.val_step, record.step) if val else self.val_step,
            (*self.val_accuracy, record.val_accuracy) if val else self.val_accuracy,
        )


@dataclass(frozen=True)
class FinetuneOutcome:
    """A finished fine-tune: the checkpoint's name (its variant in the sidebar) and file, and its curves."""

    checkpoint: str
    path: str
    val_accuracy: float
    zero_shot_val_accuracy: float
    curves: FinetuneCurves

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def checkpoint_name(config: FinetuneConfig, *, now: datetime | None = None) -> str:
    """A file stem that says what the run was: mode, β (τJp) or rank (LoRA), steps and when."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    setting = {"tau_jp": f"-b{config.beta:g}", "lora": f"-r{config.lora_rank}"}.get(config.mode, "")
    return f"{config.mode}{setting}-s{config.steps}-{stamp}"


def finetune_job(
    ctx: JobContext,
    *,
    workspace: Workspace,
    task: str,
    config: FinetuneConfig,
    out_root: Path,
    run_log: RunLog | None = None,
    val_images: int = 512,
) -> FinetuneOutcome:
    """Fine-tune `task` of the workspace's collection from θ₀; returns the checkpoint's name, path and curves."""
    start = time.perf_counter()
    ctx.starting(f"{task}: the zero-shot val accuracy and the training set-up", total=config.steps)
    suite, theta0 = workspace.suite, workspace.matrix.theta0  # [P]
    others = _other_tasks_images(suite, task, config)
    val_suite = suite.linearized(theta0) if config.linearized else suite.network()
    curves = FinetuneCurves(val_step=(0,), val_accuracy=(_val_accuracy(val_suite, theta0, task, val_images),))

    def validate(theta: torch.Tensor) -> float:
        ctx.check_cancelled()
        return _val_accuracy(val_suite, theta, task, val_images)

    def on_step(record: FinetuneStep) -> None:
        nonlocal curves
        curves = curves.appended(record)  # a new snapshot: the one reported last never changes
        penalty = "" if record.penalty is None else f" · penalty {record.penalty:.3f}"
        message = f"loss {record.loss:.3f}{penalty} · val {curves.val_accuracy[-1]:.1%}"
        ctx.report(record.step, config.steps, message, metrics=asdict(curves))
        ctx.check_cancelled()

    result = finetune(
        suite.visual,
        suite.spec,
        theta0,
        suite.heads[task],
        suite.tasks[task].split("train"),
        suite.preprocess,
        config,
        others=others,
        validate=validate,
        on_step=on_step,
        lock=suite.lock,
    )
    folder = finetune_folder(out_root, workspace.pretrained.tensors_sha256, task)
    path = _save(workspace, task, config, result, curves, folder=folder)
    outcome = FinetuneOutcome(path.stem, str(path), curves.val_accuracy[-1], curves.val_accuracy[0], curves)
    if run_log is not None:
        _record(run_log, ctx, task, config, outcome, device=str(theta0.device), seconds=time.perf_counter() - start)
    return outcome


def _other_tasks_images(suite: EvalSuite, task: str, config: FinetuneConfig) -> dict[str, torch.Tensor]:
    """The other tasks' train images (the τJp penalty's), once `task` is known and `config` checked against them."""
    if task not in suite.tasks:
        raise DatasetError(task, "is not a task of this collection", fix=f"choose one of {list(suite.tasks)}")
    others = {t: suite.tasks[t].split("train").images for t in suite.task_names if t != task}
    config.check(other_tasks=len(others))
    return others


def _record(
    run_log: RunLog,
    ctx: JobContext,
    task: str,
    config: FinetuneConfig,
    outcome: FinetuneOutcome,
    *,
    device: str,
    seconds: float,
) -> None:
    """The fine-tune's row in the run log: its recipe, outcome and val accuracy."""
    run_log.record(
        "finetune",
        job_id=ctx.job_id,
        method=config.mode,
        tasks=(task,),
        device=device,
        inputs=asdict(config),
        outputs={**outcome.to_json(), "accuracy": {task: outcome.val_accuracy}},
        duration_s=round(seconds, 3),
    )


def _save(
    workspace: Workspace,
    task: str,
    config: FinetuneConfig,
    result: FinetuneResult,
    curves: FinetuneCurves,
    *,
    folder: Path,
) -> Path:
    """Write the fine-tune under `folder`: a checkpoint with its sidecar, or for LoRA a PEFT adapter folder (Hugging
    Face CLIP module names, the recipe in its notes); returns its path, named by `checkpoint_name`."""
    pretrained, name = workspace.pretrained, checkpoint_name(config)
    class_names = workspace.suite.tasks[task].class_names
    training = {
        "kind": f"{config.mode} fine-tuning",
        **asdict(config),
        "collection": str(workspace.collection.root),
        "val_accuracy": curves.val_accuracy[-1],
    }
    if result.lora is not None:
        notes = {"source": SOURCE, "class_names": list(class_names), "training": training}
        exported = export_lora_adapter(result.lora, folder / name, base_model=pretrained.architecture, notes=notes)
        return exported.folder
    checkpoint = save_checkpoint(
        folder / f"{name}.safetensors",
        result.state_dict(workspace.suite.spec),
        architecture=pretrained.architecture,
        quick_gelu=pretrained.quick_gelu,
        task=task,
        variant=config.mode,
        class_names=class_names,
        source=SOURCE,
        training=training,
        parent_sha256=pretrained.tensors_sha256,
    )
    return checkpoint.path


def _val_accuracy(suite: EvalSuite, theta: torch.Tensor, task: str, limit: int) -> float:
    """Accuracy on the first `limit` val images of `task` (the suite says f or f_lin)."""
    part = suite.tasks[task].split("val")
    return accuracy_on(theta, suite, {task: LabelledImages(part.images[:limit], part.labels[:limit])})[task]
