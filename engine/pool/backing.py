"""A pool's task vectors opened with the backing its memory plan picks (engine/store/plan.py).

A Workspace holds a `TaskMatrix`: in memory, or a built store's own mapping (`BuiltStore.matrix`), float32 or
bfloat16, whose pages are the file's, released by the kernels as they stream it, rather than the process's
anonymous memory. On a bfloat16 store the methods that declare it (`MergeMethod.streams`) read the mapping as they
stream it; the others get it widened to float32 in memory for the call, when that fits (engine/merge/declaration.py:
`rows_as_read`). Out of core is a CPU affair (a GPU pool opens in memory). `factored` (asked for, or the plan's
pick for a pool of adapters that does not fit in memory) keeps LoRA adapters as their factors and full checkpoints
read lazily (engine/store/factored.py), T being `StoredRows`: the methods that stream read it a block or layer at
a time, the others get it whole for the call (`engine.store.reader.in_memory`), as do τJp and aTLAS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from engine.cache.memory import DEFAULT_BUDGET_BYTES
from engine.errors import ParameterError
from engine.io.checkpoints import Checkpoint
from engine.params import ParamSpec, TaskMatrix
from engine.pool.collection import CheckpointProgress, Collection, built_task_store, lazy_task_store, task_matrix
from engine.store.plan import MemoryFacts, StorePlan, disk_free, plan_store
from engine.store.reader import StoredRows


def plan_for(
    collection: Collection,
    *,
    tasks: Sequence[str] | None = None,
    variants: Mapping[str, str] | None = None,
    folder: Path,
    choice: str = "auto",
    cache_budget: int = DEFAULT_BUDGET_BYTES,
    jobs: int = 1,
    device: torch.device | str = "cpu",
) -> StorePlan:
    """The plan for `tasks` (default all; `variants[task]`, else "standard", each) of `collection`, from the
    pretrained model's header (P, architecture), this machine's memory now and, for a pool that does not fit in
    memory, its checkpoints' formats (located, not read: every one a LoRA adapter?); `folder` is where a built
    store would go (its free disk counts)."""
    lender = collection.pretrained_lazy()
    spec = ParamSpec.from_shapes({k: (v.shape, v.dtype) for k, v in lender.visual.items()})
    names = tuple(tasks or collection.task_names)
    inputs = {
        "num_tasks": len(names),
        "numel": spec.numel,
        "facts": MemoryFacts.read(),
        "cache_budget": cache_budget,
        "disk_free": disk_free(folder),
        "jobs": jobs,
        "choice": choice,
        "architecture": lender.meta.architecture,
        "device": str(torch.device(device)),
    }
    plan = plan_store(**inputs)
    if plan.asked or plan.backing == "memory":
        return plan
    chosen = {t: (variants or {}).get(t, "standard") for t in names}
    formats = {collection.finetuned_lazy(t, chosen[t], pretrained=lender).format for t in names}
    return plan_store(**inputs, adapters=formats == {"peft_lora"})


def open_task_matrix(
    collection: Collection,
    plan: StorePlan,
    *,
    folder: Path,
    tasks: Sequence[str] | None = None,
    variants: Mapping[str, str] | None = None,
    device: torch.device | str = "cpu",
    pretrained: Checkpoint | None = None,
    on_checkpoint: CheckpointProgress | None = None,
) -> TaskMatrix:
    """θ₀ and T of `tasks` as `plan` says: read into memory, or mapped from a float32 store built in `folder`."""
    if plan.backing == "memory":
        return task_matrix(
            collection,
            tasks=tasks,
            variants=variants,
            device=device,
            pretrained=pretrained,
            on_checkpoint=on_checkpoint,
        )
    if torch.device(device).type != "cpu":
        raise ParameterError(
            f"store {plan.backing}",
            f"is read on the CPU, not {device}",
            fix="open a GPU pool in memory (--store memory)",
        )
    if plan.backing == "factored":
        store = lazy_task_store(collection, tasks=tasks, variants=variants, factored=True)
        return TaskMatrix(store.theta0, StoredRows(store), store.spec, store.task_names)
    dtype = "bfloat16" if plan.backing == "built-bf16" else "float32"
    return built_task_store(collection, folder, tasks=tasks, variants=variants, dtype=dtype).matrix()
