"""Run a merge recipe end to end: merge → export (safetensors + sidecar + recipe) → evaluate → run log.

The CLI (`python -m engine run`) and the dashboard's "save run" both come through here, so a run
made either way leaves the same artifacts and the same run-log row.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from engine.errors import CheckpointError, ParameterError
from engine.eval.evaluate import EvalResult, evaluate, evaluate_per_task
from engine.eval.suite import Progress
from engine.home import DataHome, PathPolicy
from engine.io.checkpoints import Checkpoint
from engine.merge import get_method
from engine.merge.pipeline import split_params
from engine.pool.access import open_for_user
from engine.pool.backing import plan_for
from engine.pool.collection import Collection
from engine.runs.export import export_merged
from engine.runs.log import RunLog
from engine.runs.recipes import MergeRecipe
from engine.store.plan import StorePlan
from engine.workspace import Workspace


@dataclass(frozen=True)
class RecipeOutcome:
    recipe: MergeRecipe  # with pretrained_sha256 and tasks filled in
    merged: torch.Tensor  # θ [P]
    checkpoint: Checkpoint
    result: EvalResult | None
    run_id: int
    skipped: tuple[str, ...] = ()  # pool entries left out by consent (skip_unreadable), also in the run log


def run_recipe(
    recipe: MergeRecipe,
    *,
    home: DataHome,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    workspace: Workspace | None = None,
    policy: PathPolicy | None = None,
    out: Path | None = None,
    skip_unreadable: bool = False,
    store: str | None = None,
    on_plan: Callable[[StorePlan], None] | None = None,
) -> RecipeOutcome:
    """Open the recipe's collection and checkpoints, or use `workspace` (the dashboard's, already open on
    them: reading a ViT-B/32 pool again would hold it in memory twice), then merge, export, evaluate, log.

    `policy` reads the recipe's paths (default: the dashboard's, confined to the allowed roots; the command
    line passes the shell's). `out` is the export's file (default `<home>/exports/<output>.safetensors`).
    `skip_unreadable` goes on without a discovered pool's unreadable entries (refused otherwise); the ones
    left out are in the outcome and the run log's inputs. `store` is how the task vectors open (default:
    config.json's "store", else the memory plan's pick); `on_plan` hears the plan before anything is read (the
    command line prints its summary)."""
    start = time.perf_counter()
    policy = policy or home.dashboard_policy()
    ws = workspace or _open_workspace(
        recipe, home=home, device=device, policy=policy, skip=skip_unreadable, store=store, on_plan=on_plan
    )
    skipped = tuple(str(s) for s in ws.collection.skipped)
    tasks = tuple(recipe.tasks or ws.task_names)
    _check_matches(recipe, ws, tasks)
    get_method(recipe.method).resolve(split_params(recipe.params, recipe.calibrate)[0], num_tasks=len(tasks))
    one_shot = replace(ws.merges, keep_factors=False)  # merged once: no factorization kept for later moves
    merged = one_shot.merge(tasks, recipe.method, recipe.params, calibrate=recipe.calibrate)  # [P]
    filled = recipe.model_copy(update={"pretrained_sha256": ws.pretrained.tensors_sha256, "tasks": tasks})
    out = out or home.exports / f"{recipe.output or _default_name(filled)}.safetensors"
    checkpoint = export_merged(out, merged, ws.matrix.spec, pretrained=ws.pretrained, recipe=filled)
    result = _evaluated(ws, recipe, tasks, merged, progress) if recipe.evaluate else None
    log = RunLog(home.runs / "runs.sqlite3")
    run_id = _record(log, filled, ws, checkpoint=checkpoint, result=result, skipped=skipped, device=device, start=start)
    return RecipeOutcome(filled, merged, checkpoint, result, run_id, skipped)


def _record(
    log: RunLog,
    recipe: MergeRecipe,
    ws: Workspace,
    *,
    checkpoint: Checkpoint,
    result: EvalResult | None,
    skipped: tuple[str, ...],
    device: torch.device | str,
    start: float,
) -> int:
    """The recipe's row in the run log: the filled recipe, the checkpoints' sha256, the export and accuracy."""
    return log.record(
        "recipe",
        method=recipe.method,
        tasks=recipe.tasks,
        device=str(device),
        inputs={
            "recipe": recipe.model_dump(mode="json"),
            "checkpoints": {t: ws.collection.finetuned_sha256(t, ws.variant_of(t)) for t in recipe.tasks},
            "skipped": list(skipped),
        },
        outputs={
            "artifact": str(checkpoint.path),
            "sha256": checkpoint.sha256,
            "split": recipe.evaluate,
            "accuracy": result.accuracy if result else None,
        },
        duration_s=round(time.perf_counter() - start, 3),
    )


@dataclass(frozen=True)
class RecipeSelection:
    """What a recipe picks in its collection: the tasks it merges and the checkpoint of every task
    (the recipe's for its tasks; for the others its `variant` where they have one, else standard)."""

    tasks: tuple[str, ...]
    variants: dict[str, str]


def select(recipe: MergeRecipe, collection: Collection) -> RecipeSelection:
    """Check the recipe against its collection before anything is read: its tasks exist, each has the
    checkpoint the recipe names, the parameters fit the number of tasks. The command line and the
    dashboard's "Apply recipe" both check here, so they refuse the same recipes with the same message."""
    tasks = tuple(recipe.tasks or collection.task_names)
    names = ", ".join(collection.task_names)
    for task in [*tasks, *recipe.variants]:
        if task not in collection.task_names:
            raise ParameterError(
                f"recipe task {task!r}",
                f"is not a task of {collection.root}{collection.why_left_out(task)}",
                fix=f"use one of {names}",
            )
    for task in tasks:
        variant = recipe.variants.get(task, recipe.variant)
        if variant not in collection.variants(task):
            raise CheckpointError(
                f"{task}/{variant}",
                "no such fine-tuned checkpoint in the collection",
                fix=f"choose one of {sorted(collection.variants(task))} for {task}",
            )
    get_method(recipe.method).resolve(split_params(recipe.params, recipe.calibrate)[0], num_tasks=len(tasks))
    fallback = {
        t: recipe.variant if recipe.variant in collection.variants(t) else "standard" for t in collection.task_names
    }
    return RecipeSelection(tasks, {**fallback, **{t: recipe.variants.get(t, recipe.variant) for t in tasks}})


def _open_workspace(
    recipe: MergeRecipe,
    *,
    home: DataHome,
    device: torch.device | str,
    policy: PathPolicy,
    skip: bool,
    store: str | None = None,
    on_plan: Callable[[StorePlan], None] | None = None,
) -> Workspace:
    collection = open_for_user(recipe.collection, home=home, policy=policy, skip_unreadable=skip)
    select(recipe, collection)  # fail early, before any checkpoint is read
    choice = store or home.store_choice()
    budget = home.cache_budget_bytes()
    tasks = recipe.tasks or collection.task_names
    plan = plan_for(
        collection,
        tasks=tasks,
        variants={t: (recipe.variants or {}).get(t, recipe.variant) for t in tasks},
        folder=home.stores,
        choice=choice,
        cache_budget=budget,
        device=device,
    )
    if on_plan is not None:
        on_plan(plan)
    return Workspace.from_collection(
        collection,
        cache_dir=home.cache,
        device=device,
        variant=recipe.variant,
        variants=recipe.variants,
        tasks=recipe.tasks or None,
        store=plan,
    )


def _check_matches(recipe: MergeRecipe, ws: Workspace, tasks: tuple[str, ...]) -> None:
    """The workspace holds the recipe's pretrained model and, for every task, the checkpoint it names."""
    if recipe.pretrained_sha256 not in (None, ws.pretrained.tensors_sha256):
        raise CheckpointError(
            ws.collection.path(ws.collection.manifest.pretrained),
            "is not the pretrained model this recipe was made with",
            fix="point the recipe at the original collection, or drop pretrained_sha256",
        )
    wrong = [t for t in tasks if t not in ws.task_names or ws.variant_of(t) != recipe.variants.get(t, recipe.variant)]
    if wrong:
        raise ParameterError(
            f"recipe.tasks[{wrong[0]!r}]",
            "is not open with the checkpoint the recipe names",
            fix="open the recipe's collection and checkpoints, or run it from the command line",
        )


def save_merge_run(
    run_log: RunLog,
    comparison,
    recipe: MergeRecipe,
    *,
    pretrained_sha256: str,
    device: str,
    skipped: Sequence[str] = (),
) -> int:
    """Log a merge the user chose to keep (the dashboard's "save run"); slider moves are not logged. `skipped`:
    the pool entries the user confirmed to go on without."""
    filled = recipe.model_copy(update={"pretrained_sha256": pretrained_sha256, "tasks": comparison.tasks})
    return run_log.record(
        "merge",
        method=recipe.method,
        tasks=comparison.tasks,
        device=device,
        inputs={"recipe": filled.model_dump(mode="json"), "skipped": list(skipped)},
        outputs={
            "split": comparison.split,
            "accuracy": dict(comparison.merged.accuracy),
            "normalized": dict(comparison.merged.normalized or {}),
            "zero_shot": dict(comparison.zero_shot),
            "finetuned": dict(comparison.finetuned),
        },
    )


def _default_name(recipe: MergeRecipe) -> str:
    return f"{recipe.method}-{len(recipe.tasks)}tasks-{recipe.created.replace(':', '').replace('-', '')[:15]}"


def _evaluated(
    ws: Workspace, recipe: MergeRecipe, tasks: tuple[str, ...], merged: torch.Tensor, progress: Progress | None
) -> EvalResult:
    """The merge's accuracy on the recipe's split; a task-specific method scores each task with its own model."""
    if recipe.calibrate or not get_method(recipe.method).task_specific:
        return evaluate(merged, ws.suite, recipe.evaluate, tasks=tasks, progress=progress)
    model_of = functools.partial(ws.task_model, tasks, recipe.method, recipe.params)
    return evaluate_per_task(model_of, ws.suite, recipe.evaluate, tasks=tasks, progress=progress)
