"""A workspace's τJp analyses (Interference, the Tour, the λ landscape's preview), one way in.

τJp of every task vector on every task's inputs (engine/taujp/matrix.py) is read from the collection's stored
matrix, else the data home's cache, else computed on val and cached by the checkpoints' sha256. The tangent
features f(x; θ₀) and J f(x; θ₀)·τₜ (engine/taujp/preview.py) are read from the data home's JVP cache or the
collection's warm folder, else computed once and stored. Small results (pair drops, layer breakdowns) are kept
in the workspace's ComputeCache under its fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.cache.memory import ComputeCache
from engine.eval.suite import EvalSuite, Progress
from engine.merge import get_method
from engine.merge.declaration import ParamValue
from engine.params import TaskMatrix
from engine.pool.collection import Collection
from engine.store.reader import in_memory
from engine.taujp.jvp_cache import JvpStore
from engine.taujp.matrix import TauJpMatrix, layer_breakdown, load_taujp, pair_drops, save_taujp, taujp_matrix
from engine.taujp.preview import TangentPreview, tangent_pair_drops

TAUJP_IMAGES = 64  # val images per task for matrices computed on demand (the zoo ships whole-split ones)


@dataclass(frozen=True, eq=False)
class TauJpStore:
    collection: Collection
    suite: EvalSuite
    task_vectors: TaskMatrix  # θ₀ and T
    pretrained_sha256: str
    variants: Mapping[str, str]  # task → checkpoint name in T (else "standard")
    cache_dir: Path
    cache: ComputeCache
    fingerprint: str  # the workspace's: what decides every result

    def matrix(self, *, progress: Progress | None = None) -> TauJpMatrix:
        """τJp of every task vector on every task's inputs: stored, cached, or computed now on val (first
        `TAUJP_IMAGES` per task) and cached; `taujp_job` does the computing in the background."""
        source = self._file()
        if source.is_file():
            return load_taujp(source)
        m = self.task_vectors
        names = m.task_names
        matrix = taujp_matrix(
            self.suite,
            m.theta0,
            self._rows(),
            names=names,
            tasks=names,
            split="val",
            max_images=TAUJP_IMAGES,
            progress=progress,
        )
        save_taujp(source, matrix)
        return matrix

    def ready(self) -> bool:
        """Whether `matrix` only reads a file (shipped or cached)."""
        return self._file().is_file()

    def stored(self) -> dict[str, TauJpMatrix]:
        """The τJp matrices the collection ships, per variant (e.g. standard, linearized, tau_jp)."""

        def load() -> dict[str, TauJpMatrix]:
            variants = ("standard", *self.collection.manifest.taujp_variants)
            paths = {v: self.collection.taujp_path(v) for v in variants}
            return {v: load_taujp(p) for v, p in paths.items() if p is not None and p.is_file()}

        return self._kept(("stored_taujp",), load)

    def pair_drops(self, lam: float, *, split: str = "val") -> dict[tuple[str, str], float]:
        """drop_b(a) for every ordered pair a ≠ b at coefficient λ, the network evaluated (engine/taujp/matrix.py)."""
        m = self.task_vectors
        return self._kept(
            ("pair_drops", lam, split),
            lambda: pair_drops(self.suite, m.theta0, self._rows(), names=m.task_names, lam=lam, split=split),
        )

    def tangent_pair_drops(self, lam: float, *, split: str = "interactive") -> dict[tuple[str, str], float]:
        """drop_b(a) for every ordered pair from the λ-independent J f(x; θ₀)·τ of `tangent_preview`: exact for
        linearized checkpoints, the first-order estimate for standard ones; a new λ evaluates no network."""
        return self._kept(
            ("tangent_pair_drops", lam, split), lambda: tangent_pair_drops(self.tangent_preview(split), lam=lam)
        )

    def layers(self, vector: str, task: str) -> dict[str, float]:
        """τJp of one task vector on one task's inputs, per layer block (same split and images as the matrix)."""
        m = self.task_vectors

        def breakdown() -> dict[str, float]:
            shown = self.matrix()
            row = m.row(vector)  # [P]
            images = min(min(shown.images), 64)
            return layer_breakdown(self.suite, m.theta0, row, m.spec, task=task, split=shown.split, max_images=images)

        return self._kept(("taujp_layers", vector, task), breakdown)

    def tangent_preview(self, split: str = "interactive") -> TangentPreview:
        """f(x; θ₀) and J f(x; θ₀)·τₜ of every task's `split` images: read where stored, else computed once and
        stored in the data home's JVP cache (engine/taujp/jvp_cache.py)."""
        m = self.task_vectors

        def build() -> TangentPreview:
            store = JvpStore(
                self.cache_dir / "jvp",
                self.pretrained_sha256,
                self._checkpoint_shas(),
                shipped=self.collection.warm_dir("jvp"),
            )
            rows = self._rows()  # [K, P]
            return TangentPreview.build(self.suite, m.theta0, rows, vectors=m.task_names, store=store, split=split)

        return self._kept(("tangent_preview", split), build)

    def preview(
        self, tasks: Sequence[str], params: Mapping[str, ParamValue], *, split: str = "interactive"
    ) -> dict[str, float]:
        """Tangent-space accuracy of a task-arithmetic merge of `tasks` (other vectors at λ = 0)."""
        names = self.task_vectors.task_names
        lam = get_method("task_arithmetic").resolve(params, num_tasks=len(tasks))["lam"]  # [k]
        full = torch.zeros(len(names))  # [K]
        full[[names.index(t) for t in tasks]] = lam
        accuracy = self.tangent_preview(split).accuracy(full)
        return {t: accuracy[t] for t in tasks}

    def _rows(self) -> torch.Tensor:
        """T [K, P] in memory: τJp's JVPs and evaluations read whole rows (a store's rows made whole, when they fit)."""
        return in_memory(self.task_vectors.T, purpose="τJp")

    def _kept(self, key: tuple[Hashable, ...], compute: Callable[[], Any]) -> Any:
        return self.cache.get_or_compute((self.fingerprint, *key), compute)

    def _checkpoint_shas(self) -> tuple[str, ...]:
        return tuple(
            self.collection.finetuned_sha256(t, self.variants.get(t, "standard")) for t in self.task_vectors.task_names
        )

    def _file(self) -> Path:
        names = {self.variants.get(t, "standard") for t in self.task_vectors.task_names}
        uniform = names.pop() if len(names) == 1 else None
        stored = self.collection.taujp_path(uniform) if uniform else None
        if stored is not None and set(self.task_vectors.task_names) == set(self.collection.task_names):
            return stored
        shas = [self.pretrained_sha256, *self._checkpoint_shas()]
        key = hashlib.sha256(json.dumps({"shas": shas, "split": "val", "images": TAUJP_IMAGES}).encode()).hexdigest()
        return self.cache_dir / "taujp" / f"{key[:24]}.json"
