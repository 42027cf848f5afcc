"""Run a merge recipe end to end: merge → export (safetensors + sidecar + recipe) → evaluate → run log.

The CLI (`python -m engine run`) and the dashboard's "save run" both come through here, so a run
made either way leaves the same artifacts and the same run-log row.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from engine.checkpoints import Checkpoint
from engine.collection import load_collection
from engine.errors import CheckpointError
from engine.evaluate import EvalResult, Progress, evaluate
from engine.export import export_merged
from engine.home import DataHome
from engine.merge import get_method
from engine.recipes import MergeRecipe
from engine.runs import RunLog
from engine.workspace import Workspace


@dataclass(frozen=True)
class RecipeOutcome:
    recipe: MergeRecipe            # with pretrained_sha256 and tasks filled in
    merged: torch.Tensor           # θ [P]
    checkpoint: Checkpoint
    result: EvalResult | None
    run_id: int


def run_recipe(recipe: MergeRecipe, *, home: DataHome, device: torch.device | str = "cpu",
               progress: Progress | None = None) -> RecipeOutcome:
    start = time.perf_counter()
    collection = load_collection(home.resolve_user_path(recipe.collection)).with_finetunes(home.finetunes)
    pretrained = collection.pretrained()
    if recipe.pretrained_sha256 not in (None, pretrained.sha256):
        raise CheckpointError(pretrained.path, "is not the pretrained model this recipe was made with",
                              fix="point the recipe at the original collection, or drop pretrained_sha256")
    get_method(recipe.method).resolve(recipe.params, num_tasks=len(recipe.tasks or collection.task_names))
    ws = Workspace.from_collection(collection, cache_dir=home.cache, device=device, variant=recipe.variant,
                                   variants=recipe.variants, tasks=recipe.tasks or None, pretrained=pretrained)
    tm = ws.matrix
    merged = ws.merge(tm.task_names, recipe.method, recipe.params)  # [P]; STA methods get their importance
    filled = recipe.model_copy(update={"pretrained_sha256": pretrained.sha256, "tasks": tm.task_names})
    out = home.exports / f"{recipe.output or _default_name(filled)}.safetensors"
    checkpoint = export_merged(out, merged, tm.spec, pretrained=pretrained, recipe=filled)
    result = None
    if recipe.evaluate:
        result = evaluate(merged, ws.suite, recipe.evaluate, progress=progress)
    run_id = RunLog(home.runs / "runs.sqlite3").record(
        "recipe", method=recipe.method, tasks=tm.task_names, device=str(device),
        inputs={"recipe": filled.model_dump(mode="json"), "checkpoints": {t: collection.finetuned_sha256(t, ws.variant_of(t))
                                                                 for t in tm.task_names}},
        outputs={"artifact": str(checkpoint.path), "sha256": checkpoint.sha256,
                 "split": recipe.evaluate, "accuracy": result.accuracy if result else None},
        duration_s=round(time.perf_counter() - start, 3))
    return RecipeOutcome(filled, merged, checkpoint, result, run_id)


def save_merge_run(run_log: RunLog, comparison, recipe: MergeRecipe, *, pretrained_sha256: str,
                   device: str) -> int:
    """Log a merge the user chose to keep (the dashboard's "save run"); slider moves are not logged."""
    filled = recipe.model_copy(update={"pretrained_sha256": pretrained_sha256, "tasks": comparison.tasks})
    return run_log.record("merge", method=recipe.method, tasks=comparison.tasks, device=device,
                          inputs={"recipe": filled.model_dump(mode="json")},
                          outputs={"split": comparison.split, "accuracy": dict(comparison.merged.accuracy),
                                   "normalized": dict(comparison.merged.normalized or {}),
                                   "zero_shot": dict(comparison.zero_shot), "finetuned": dict(comparison.finetuned)})


def _default_name(recipe: MergeRecipe) -> str:
    return f"{recipe.method}-{len(recipe.tasks)}tasks-{recipe.created.replace(':', '').replace('-', '')[:15]}"
