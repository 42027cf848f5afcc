"""The zoo's variants stage: linearized and τJp-regularised linearized fine-tunes of every task.

For each variant, every task is fine-tuned from the stored θ₀ (engine/train/finetune.py), saved in fp16 as
finetuned/<task>.<variant>.safetensors and named in collection.json; existing files are not touched.
Then the stored files are evaluated the way they are defined, as linearized models: fine-tuned accuracy,
the 8-task task-arithmetic merge over λ on val (through cached J·τ, exact for linearized models,
engine/taujp/preview.py) at λ = 1 and at the best λ, both on test, and the τJp matrix on val (shipped as
taujp.<variant>.json, so the Interference page shows the variants side by side).

Settings scaled to the zoo (the τJp paper fine-tunes ViTs for thousands of steps at lr 1e-5): 200 steps
of 128 images, as the zoo's CPU prototype (docs/zoo.md), at lr 1e-3 for both variants; the
strict schedule with 8 train images from each of the 7 other tasks per step. β = 0.3 was chosen on val
(the all-task merge at its best λ) among (β, lr) = (1.0, 4e-4), (0.3, 4e-4), (0.1, 4e-4), (0.3, 1e-3):
val 0.798 / 0.873 / 0.875 / 0.886. β = 1.0, the prototypes' pick, over-constrained this zoo's tasks
(fine-tuned test mean 0.77); β = 0.1 tied at 4e-4 but kept 1.7× more interference and peaked at λ = 0.8.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from engine.eval.evaluate import evaluate
from engine.eval.results import best_index
from engine.eval.suite import EvalSuite
from engine.io.checkpoints import Checkpoint, save_checkpoint
from engine.pool.collection import load_collection, open_suite, pretrained_vector
from engine.taujp.matrix import TauJpMatrix, save_taujp, taujp_matrix
from engine.taujp.preview import TangentPreview
from engine.train.finetune import FinetuneConfig, FinetuneResult, finetune
from engine.workspace import Workspace

Progress = Callable[[str, float, str], None]
VARIANTS: dict[str, FinetuneConfig] = {
    "linearized": FinetuneConfig(mode="linearized", steps=200, lr=1e-3),
    "tau_jp": FinetuneConfig(mode="tau_jp", steps=200, lr=1e-3, beta=0.3, penalty="strict", penalty_batch=8),
}
LAMBDAS = tuple(round(i / 20, 2) for i in range(21))


def variants_stage(
    work: Path,
    *,
    configs: Mapping[str, FinetuneConfig] = VARIANTS,
    lambdas: Sequence[float] = LAMBDAS,
    taujp_images: int | None = None,
    progress: Progress | None = None,
) -> dict:
    """Train, store and evaluate every variant in `configs`; returns what report.json records."""
    progress = progress or (lambda stage, fraction, message: None)
    for variant, config in configs.items():
        train_variant(work, variant, config, progress=progress)
    report = {"standard": _standard_summary(work)}
    for variant, config in configs.items():
        report[variant] = evaluate_variant(work, variant, lambdas=lambdas, taujp_images=taujp_images)
        report[variant]["training"] = asdict(config)
    return {"variants": report}


def train_variant(work: Path, variant: str, config: FinetuneConfig, *, progress: Progress) -> None:
    """Fine-tune every task in `config.mode` from the stored θ₀ and name the files in collection.json."""
    manifest = json.loads((work / "collection.json").read_text())
    for tuned in zoo_finetunes(work, config, label=variant, progress=progress, others=True):
        suite, task = tuned.suite, tuned.task
        relative = f"finetuned/{task}.{variant}.safetensors"
        save_checkpoint(
            work / relative,
            tuned.result.state_dict(suite.spec),
            dtype=torch.float16,
            architecture=tuned.pretrained.meta.architecture,
            task=task,
            variant=config.mode,
            class_names=suite.tasks[task].class_names,
            training={"kind": f"{variant} fine-tuning", **asdict(tuned.config)},
            source="mergelab zoo build",
            parent_sha256=tuned.pretrained.sha256,
        )
        manifest["tasks"][task]["checkpoints"][variant] = relative
    (work / "collection.json").write_text(json.dumps(manifest, indent=2) + "\n")


@dataclass(frozen=True)
class ZooFinetune:
    """One task's fine-tune in a zoo stage: what it was trained on and with, and what it gave."""

    suite: EvalSuite
    pretrained: Checkpoint
    task: str
    config: FinetuneConfig  # the stage's recipe with seed = the task's index
    result: FinetuneResult


def zoo_finetunes(
    work: Path, config: FinetuneConfig, *, label: str, progress: Progress, others: bool = False
) -> Iterator[ZooFinetune]:
    """Every task of the zoo in `work` fine-tuned by `config` from the stored θ₀, one at a time (seed = the task's
    index, progress named "<label> <task>"); `others`: the other tasks' train images go along (the τJp penalty)."""
    collection = load_collection(work)
    pretrained = collection.pretrained()
    suite = open_suite(collection, cache_dir=work / ".cache", pretrained=pretrained)
    theta0 = pretrained_vector(collection, suite.spec, pretrained=pretrained)  # [P] fp32 of the fp16 file
    for i, task in enumerate(suite.task_names):
        images = {t: suite.tasks[t].split("train").images for t in suite.task_names if t != task} if others else None
        cfg = replace(config, seed=i)
        result = finetune(
            suite.visual,
            suite.spec,
            theta0,
            suite.heads[task],
            suite.tasks[task].split("train"),
            suite.preprocess,
            cfg,
            others=images,
            on_step=lambda r, t=task: progress(f"{label} {t}", r.step / cfg.steps, f"loss {r.loss:.3f}"),
        )
        yield ZooFinetune(suite, pretrained, task, cfg, result)


def evaluate_variant(
    work: Path, variant: str, *, lambdas: Sequence[float] = LAMBDAS, taujp_images: int | None = None
) -> dict:
    """Fine-tuned accuracy, TA at λ = 1 and at the best λ on val, and the τJp matrix of one stored variant."""
    ws = Workspace.open(work, cache_dir=work / ".cache", variant=variant)
    m = ws.matrix
    splits = ("val", "test")
    finetuned = {s: dict(ws.finetuned(s)) for s in splits}
    curve = _ta_curve(ws, lambdas, reference=finetuned["val"])
    best = curve[best_index([c["mean_normalized"] for c in curve])]["lam"]  # λ ascending: the smaller on ties
    at = {
        lam: {s: evaluate(m.theta0 + lam * m.T.sum(dim=0), ws.suite, s).accuracy for s in splits}
        for lam in sorted({best, 1.0})
    }
    matrix = taujp_matrix(
        ws.suite, m.theta0, m.T, names=m.task_names, tasks=m.task_names, split="val", max_images=taujp_images
    )
    _ship_taujp(work, variant, matrix)
    return {
        "linearized": ws.linearized,
        "finetuned": finetuned,
        "task_arithmetic": {
            "selection": "best mean normalized accuracy on val",
            "val_curve": curve,
            "best_lambda": best,
            "at_best": at[best],
            "at_one": at[1.0],
        },
        "averages": {
            "finetuned_test": _mean(finetuned["test"]),
            "ta_best_test": _mean(at[best]["test"]),
            "ta_one_test": _mean(at[1.0]["test"]),
        },
        "taujp": taujp_summary(matrix),
    }


def taujp_summary(matrix: TauJpMatrix) -> dict:
    """Mean off-diagonal (interference) and diagonal (own signal) τJp of a square matrix."""
    values, k = matrix.values, len(matrix.tasks)
    diagonal = float(values.diagonal().mean())
    off = float((values.sum() - values.diagonal().sum()) / (k * k - k))
    return {
        "split": matrix.split,
        "images": dict(zip(matrix.tasks, matrix.images)),
        "mean_off_diagonal": round(off, 5),
        "mean_diagonal": round(diagonal, 5),
    }


def _ta_curve(ws: Workspace, lambdas: Sequence[float], *, reference: Mapping[str, float]) -> list[dict]:
    """Mean (normalized) val accuracy of θ₀ + λΣτ over `lambdas`: through cached J·τ when linearized
    (exact), else one evaluation per λ."""
    m = ws.matrix
    preview = (
        TangentPreview.build(ws.suite, m.theta0, m.T, vectors=m.task_names, split="val") if ws.linearized else None
    )
    curve = []
    for lam in lambdas:
        accuracy = (
            preview.accuracy([lam] * len(m.task_names))
            if preview is not None
            else evaluate(m.theta0 + lam * m.T.sum(dim=0), ws.suite, "val").accuracy
        )
        normalized = sum(accuracy[t] / reference[t] for t in accuracy) / len(accuracy)
        curve.append({"lam": lam, "mean_accuracy": round(_mean(accuracy), 4), "mean_normalized": round(normalized, 4)})
    return curve


def _standard_summary(work: Path) -> dict:
    """The standard checkpoints' numbers in the same shape, from report.json and taujp.json, plus λ = 1 on test."""
    from engine.taujp.matrix import load_taujp

    report = json.loads((work / "report.json").read_text())
    ws = Workspace.open(work, cache_dir=work / ".cache")
    at_one = {s: evaluate(ws.matrix.theta0 + ws.matrix.T.sum(dim=0), ws.suite, s).accuracy for s in ("val", "test")}
    ta = report["task_arithmetic"]
    return {
        "linearized": False,
        "finetuned": {s: report["finetuned"][s] for s in ("val", "test")},
        "task_arithmetic": {
            **{k: ta[k] for k in ("selection", "val_curve", "best_lambda")},
            "at_best": {s: ta["at_best"][s] for s in ("val", "test")},
            "at_one": at_one,
        },
        "averages": {
            "finetuned_test": _mean(report["finetuned"]["test"]),
            "ta_best_test": _mean(ta["at_best"]["test"]),
            "ta_one_test": _mean(at_one["test"]),
        },
        "taujp": taujp_summary(load_taujp(ws.collection.taujp_path())),
    }


def _ship_taujp(work: Path, variant: str, matrix: TauJpMatrix) -> None:
    relative = f"taujp.{variant}.json"
    save_taujp(work / relative, matrix)
    manifest = json.loads((work / "collection.json").read_text())
    manifest.setdefault("taujp_variants", {})[variant] = relative
    (work / "collection.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _mean(values: Mapping[str, float]) -> float:
    return round(sum(values.values()) / len(values), 4)
