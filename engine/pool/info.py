"""What a pool holds, from file headers and sidecars only (no tensor data read): `python -m engine pool show`.

Before converting or merging a pool of foreign checkpoints, a researcher checks what mergelab made of each
file: its format, the architecture detected from its shapes, QuickGELU, which towers it holds, whether
it is evaluated as a linearized model, and, for a LoRA adapter, its rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.data.suites import SuiteMatch, match_suite
from engine.io.checkpoints import LazyCheckpoint
from engine.pool.collection import Collection

FUSION_BENCH_OWNER = "models--tanganke--"  # FusionBench's per-task checkpoints in a Hugging Face hub cache
KNOTS_OWNER = "models--hoffman-lab--KnOTS-"  # KnOTS' per-task LoRA adapters in a Hugging Face hub cache
TASK_VECTORS_FORMATS = ("task_vectors", "tangent_linearized")


@dataclass(frozen=True)
class CheckpointInfo:
    task: str | None  # None for the pretrained model
    name: str  # the checkpoint's name in its task ("standard", "linearized", ...), or "pretrained"
    path: Path
    format: str  # "mergelab" (sidecar) or a foreign format ("task_vectors", "hf_clip", ...)
    architecture: str
    quick_gelu: bool
    tower: str  # "clip" (both towers) or "visual"
    variant: str
    lora_rank: int | None = None  # a LoRA adapter's rank (its largest, with rank_pattern); None for full weights

    @property
    def label(self) -> str:
        return self.name if self.task is None else f"{self.task}/{self.name}"


def pool_checkpoints(collection: Collection) -> tuple[CheckpointInfo, ...]:
    """The pretrained model first, then every checkpoint name of every task, in manifest order."""
    lender = collection.pretrained_lazy()
    rows = [_info(lender, task=None, name="pretrained")]
    for task in collection.task_names:
        for name in collection.variants(task):
            rows.append(_info(collection.finetuned_lazy(task, name, pretrained=lender), task=task, name=name))
    return tuple(rows)


def _info(checkpoint: LazyCheckpoint, *, task: str | None, name: str) -> CheckpointInfo:
    meta = checkpoint.meta
    return CheckpointInfo(
        task=task,
        name=name,
        path=checkpoint.path,
        format=checkpoint.format,
        architecture=meta.architecture,
        quick_gelu=meta.quick_gelu,
        tower=meta.tower,
        variant=meta.variant,
        lora_rank=meta.training.get("lora", {}).get("rank") if checkpoint.format == "peft_lora" else None,
    )


def pool_suite(collection: Collection) -> SuiteMatch | None:
    """The suite (TA8, TALL14, TALL20) the pool's tasks are, or most of; None when no task is a suite task."""
    return match_suite(collection.task_names)


def checkpoint_family(rows: tuple[CheckpointInfo, ...]) -> str:
    """Whose fine-tunes these are: FusionBench's Hugging Face checkpoints (`tanganke/clip-vit-*_<task>`), KnOTS'
    LoRA adapters (`hoffman-lab/KnOTS-*`), task_vectors' / TALL masks' pickled releases, or the researcher's own."""
    tuned = rows[1:]
    if tuned and all(FUSION_BENCH_OWNER in str(r.path) for r in tuned):
        return "FusionBench"
    if tuned and all(KNOTS_OWNER in str(r.path) for r in tuned):
        return "KnOTS"
    if tuned and all(r.format in TASK_VECTORS_FORMATS for r in tuned):
        return "task_vectors / TALL masks"
    return "own"
