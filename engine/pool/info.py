"""What a pool holds, from file headers and sidecars only (no tensor data read): `python -m engine pool show`.

Before converting or merging a pool of foreign checkpoints, a researcher checks what mergelab made of each
file: its format, the architecture detected from its shapes, QuickGELU, which towers it holds, whether
it is evaluated as a linearized model, and, for a LoRA adapter, its rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.io.checkpoints import LazyCheckpoint
from engine.pool.collection import Collection


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
