"""A workspace's STA importance maps (engine/sta/importance.py), one way in for merges, Forgetting and jobs.

Each task's map of a kind is read from where it is kept, first found: the collection's shipped map (standard
checkpoints only), the data home's cache, else computed at the task's weights now (a few gradient passes per
task) and cached there. The stacked [K, P] codes of a kind are kept in the workspace's ComputeCache.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.cache.memory import ComputeCache
from engine.eval.suite import EvalSuite
from engine.params import TaskMatrix
from engine.pool.collection import Collection
from engine.sta.importance import ImportanceConfig, ImportanceSource, importance_codes


@dataclass(frozen=True, eq=False)
class ImportanceStore:
    collection: Collection
    suite: EvalSuite
    matrix: TaskMatrix
    pretrained_sha256: str
    variants: Mapping[str, str]  # task → checkpoint name in T (else "standard")
    cache_dir: Path
    cache: ComputeCache
    fingerprint: str  # the workspace's: what decides every result

    def codes(self, kind: str) -> torch.Tensor:
        """STA importance codes uint8 [K, P] of every task, rows in T's order, on T's device.

        kinds: "tau" and "theta" at each fine-tuned model (merging), "grad0" the bare |∇L| of each task's loss at
        θ₀ (forgetting). Shipped, cached in the data home, or computed now (seconds on the demo zoo, minutes for
        ViT-B/32 on a CPU; `importance_job` computes them in the background)."""

        def stacked() -> torch.Tensor:
            rows = [self.task(task, kind) for task in self.matrix.task_names]
            return torch.stack(rows).to(self.matrix.T.device)  # [K, P]

        return self.cache.get_or_compute((self.fingerprint, "importance", kind), stacked)

    def task(self, task: str, kind: str) -> torch.Tensor:
        """One task's codes uint8 [P] (loaded, or computed at its weights and cached)."""
        m = self.matrix
        theta = m.theta0 if kind == "grad0" else m.theta0 + m.row(task)  # [P]
        return importance_codes(self.suite, theta, m.theta0, self.source(task, kind))

    def ready(self, kind: str) -> bool:
        """Whether every task's map of `kind` is shipped or cached (so `codes` only reads files)."""
        return all(self.source(t, kind).available for t in self.matrix.task_names)

    def source(self, task: str, kind: str) -> ImportanceSource:
        """Which checkpoint one task's map of `kind` belongs to, and where it is stored."""
        at_pretrained = kind == "grad0"
        variant = self.variants.get(task, "standard")
        sha = self.pretrained_sha256 if at_pretrained else self.collection.finetuned_sha256(task, variant)
        linearized = self.suite.linearized_at is not None and not at_pretrained  # at θ₀ both gradients agree
        config = ImportanceConfig(
            variant="grad" if at_pretrained else kind, model="linearized" if linearized else "network"
        )
        shipped = self.collection.importance_path(task, kind) if variant == "standard" else None
        return ImportanceSource(task, sha, config, self.cache_dir, shipped=shipped)
