"""Merge comparisons kept on disk for a page's first open on a fresh server.

The Merge page opens on one setting (every task, its method's opening parameters, the interactive split). On a
fresh server its first chart waits for the fine-tuned models' and the merged model's evaluations (~2 s of one
core on the zoo, behind the imports). `python -m engine warm` stores that comparison; a collection may ship it
(the demo zoo's `warm/results/`). `Workspace.compare` reads a stored one before evaluating. Only warming writes
entries: an ordinary evaluation stays in the process's cache, so the data home does not grow with slider moves.

An entry is one file of a `TensorStore` (engine/io/tensor_store.py), keyed by everything that decides the
numbers: θ₀ and the task vectors (the checkpoints' sha256), how the tasks are evaluated
(`Collection.suite_identity`, no path), the split, the tasks, the method and its resolved parameters. The numbers
are kept exactly: correct and total counts as int64, the baselines' accuracies as float64.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from engine.eval.evaluate import EvalResult
from engine.eval.results import MergeComparison


def comparison_key(
    *, vectors: str, suite: str, linearized: bool, split: str, tasks: Sequence[str], method: str, resolved: Any
) -> str:
    """The text naming one comparison's inputs (`resolved`: the method's parameters as a sorted tuple of pairs)."""
    facts = {
        "kind": "comparison",
        "vectors": vectors,
        "suite": suite,
        "linearized": linearized,
        "split": split,
        "tasks": list(tasks),
        "method": method,
        "params": resolved,
    }
    return json.dumps(facts, sort_keys=True)


def comparison_tensors(comparison: MergeComparison) -> dict[str, torch.Tensor]:
    """The comparison's numbers, each a [k] tensor in `comparison.tasks` order."""
    tasks, merged = comparison.tasks, comparison.merged

    def column(values: Mapping[str, float | int], dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([values[t] for t in tasks], dtype=dtype)  # [k]

    tensors = {
        "correct": column(merged.correct, torch.int64),
        "total": column(merged.total, torch.int64),
        "zero_shot": column(comparison.zero_shot, torch.float64),
        "finetuned": column(comparison.finetuned, torch.float64),
    }
    if merged.normalized is not None:
        tensors["normalized"] = column(merged.normalized, torch.float64)
    return tensors


def comparison_from(tensors: Mapping[str, torch.Tensor], *, split: str, tasks: Sequence[str]) -> MergeComparison:
    """The comparison stored as `comparison_tensors` gave it."""
    tasks = tuple(tasks)

    def mapping(name: str) -> dict[str, Any]:
        return dict(zip(tasks, tensors[name].tolist()))

    normalized = mapping("normalized") if "normalized" in tensors else None
    merged = EvalResult(split, mapping("correct"), mapping("total"), normalized)
    return MergeComparison(split, tasks, merged, mapping("zero_shot"), mapping("finetuned"))
