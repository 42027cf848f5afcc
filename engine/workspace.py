"""A workspace: one collection opened for interactive use, the object the dashboard caches per process.

It holds the evaluation suite and the task matrix on the chosen device, and answers the questions a
page asks in one call each: "what does this merge do to every task?" (`compare`) and "how does
accuracy move with λ?" (`sweep`). Results carry the zero-shot and fine-tuned baselines of the same
split, so a figure needs nothing else. Nothing here mutates a shared tensor: every merge allocates
its own output, so sessions sharing a workspace cannot disturb each other.
T holds one fine-tuned checkpoint per task (`variants`, default "standard"). Linearized checkpoints
(sidecar variant "linearized" or "tau_jp") are evaluated as the linearized model around θ₀ everywhere
(eval, merges, sweeps, pair drops: the suite's `linearized_at`); one workspace never mixes the two kinds.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.cache.memory import ComputeCache
from engine.errors import CheckpointError, ParameterError
from engine.eval.evaluate import EvalResult, evaluate
from engine.eval.suite import EvalSuite, Progress
from engine.io.checkpoints import CheckpointMeta
from engine.io.tensor_store import TensorStore
from engine.merge import MergeMethod, apply, get_method
from engine.merge.analysis import SparsityReport, masked_sparsity
from engine.merge.registry import ParamValue, scale_parts
from engine.merge.spectra import SubspaceStats, subspace_stats
from engine.merge.wudi import StepProgress
from engine.params import TaskMatrix, take_rows
from engine.pool.backing import open_task_matrix, plan_for
from engine.pool.collection import CheckpointProgress, Collection, load_collection, open_suite
from engine.sta.importance import ImportanceConfig, ImportanceSource, importance_codes
from engine.store.plan import StorePlan
from engine.taujp.jvp_cache import JvpStore
from engine.taujp.matrix import TauJpMatrix, layer_breakdown, load_taujp, pair_drops, save_taujp, taujp_matrix
from engine.taujp.preview import TangentPreview, tangent_pair_drops

TAUJP_IMAGES = 64  # val images per task for matrices computed on demand (the zoo ships whole-split ones)
LARGE_MODEL_PARAMS = 5_000_000  # from here (ViT-B/32: 88 M) a per-layer method's first merge is a job, kept on disk
KEEP_MASK_SHARE = 0.5
"""A masking method's keep mask (bool [K, P], K·P bytes) is cached only while it takes at most this share of the
cache budget: at the default 2 GB, a ViT-B/32 mask of K = 8 tasks (0.70 GB) is kept, and the other half still
holds a few (base, direction) parts (0.35 GB each) and the evaluations; a bigger mask is recomputed per merge."""


@dataclass(frozen=True)
class MergeComparison:
    """Merged vs zero-shot vs fine-tuned accuracy per task, on one split."""

    split: str
    tasks: tuple[str, ...]
    merged: EvalResult
    zero_shot: Mapping[str, float]
    finetuned: Mapping[str, float]

    @property
    def mean_merged(self) -> float:
        return self.merged.mean_accuracy

    @property
    def mean_normalized(self) -> float:
        return self.merged.mean_normalized or 0.0


@dataclass(frozen=True)
class Sweep:
    """Accuracy over a grid of one parameter (λ), with the best value by mean normalized accuracy."""

    split: str
    param: str
    values: tuple[float, ...]
    mean_accuracy: tuple[float, ...]
    mean_normalized: tuple[float, ...]
    per_task: Mapping[str, tuple[float, ...]]

    @classmethod
    def from_results(
        cls, split: str, param: str, values: Sequence[float], results: Sequence[EvalResult], tasks: Sequence[str]
    ) -> Sweep:
        """One EvalResult per value (a job's partial sweep may have fewer results than planned values)."""
        return cls(
            split,
            param,
            tuple(values[: len(results)]),
            tuple(r.mean_accuracy for r in results),
            tuple(r.mean_normalized for r in results),
            {t: tuple(r.accuracy[t] for r in results) for t in tasks},
        )

    @property
    def best_value(self) -> float | None:
        """The papers' rule: best mean normalized accuracy, the smaller value on ties (None if empty)."""
        if not self.values:
            return None
        best = max(range(len(self.values)), key=lambda i: (self.mean_normalized[i], -self.values[i]))
        return self.values[best]


def _memoized(method: Callable) -> Callable:
    """Results kept in the workspace's `ComputeCache` under (fingerprint, method, arguments): bounded by the
    cache's budget, shared by workspaces of the same checkpoints, computed once when threads race."""

    @functools.wraps(method)
    def cached(self: Workspace, *args: Any, **kwargs: Any) -> Any:
        key = (self.fingerprint, method.__name__, _frozen(args), _frozen(sorted(kwargs.items())))
        return self.cache.get_or_compute(key, lambda: method(self, *args, **kwargs))

    return cached


def _frozen(value: Any) -> Any:
    """A hashable stand-in for arguments: lists and dicts become tuples."""
    if isinstance(value, Mapping):
        return tuple((k, _frozen(v)) for k, v in sorted(value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


@dataclass(frozen=True, eq=False)
class Workspace:
    collection: Collection
    pretrained: CheckpointMeta  # its sidecar facts; the weights live in θ₀ (the text tower only built the heads)
    suite: EvalSuite
    matrix: TaskMatrix
    cache_dir: Path
    variants: Mapping[str, str] = field(default_factory=dict)  # task → checkpoint name in T (else "standard")
    cache: ComputeCache = field(default_factory=ComputeCache, repr=False)  # the dashboard passes one per process
    store_plan: StorePlan | None = None  # how T was opened (in memory or out of core) and why: its summary()

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        cache_dir: Path,
        device: torch.device | str = "cpu",
        variant: str = "standard",
        tasks: Sequence[str] | None = None,
    ) -> Workspace:
        return cls.from_collection(
            load_collection(path), cache_dir=cache_dir, device=device, variant=variant, tasks=tasks
        )

    @classmethod
    def from_collection(
        cls,
        collection: Collection,
        *,
        cache_dir: Path,
        device: torch.device | str = "cpu",
        variant: str = "standard",
        variants: Mapping[str, str] | None = None,
        tasks: Sequence[str] | None = None,
        on_checkpoint: CheckpointProgress | None = None,
        cache: ComputeCache | None = None,
        store: str | StorePlan = "auto",
    ) -> Workspace:
        """Open `tasks` (default all) of an already loaded collection, `variants[task]` (else `variant`) each;
        `on_checkpoint(done, total, task)` follows the reading of the fine-tuned checkpoints (in memory). `store`
        is the task store's backing, "auto" for the memory plan's pick, or a plan made before (engine/store/plan.py;
        a built store goes to `cache_dir`/stores)."""
        pretrained = collection.pretrained()  # its weights are dropped once θ₀ and the heads are built
        names = tuple(tasks or collection.task_names)
        chosen = {t: (variants or {}).get(t, variant) for t in names}
        linearized = _linearized(collection, chosen)
        suite = open_suite(collection, cache_dir=cache_dir, tasks=names, device=device, pretrained=pretrained)
        cache = cache or ComputeCache()
        folder = Path(cache_dir) / "stores"
        plan = (
            store
            if isinstance(store, StorePlan)
            else plan_for(
                collection, tasks=names, folder=folder, choice=store, cache_budget=cache.budget_bytes, device=device
            )
        )
        matrix = open_task_matrix(
            collection,
            plan,
            folder=folder,
            tasks=names,
            variants=chosen,
            device=device,
            pretrained=pretrained,
            on_checkpoint=on_checkpoint,
        )
        if linearized:
            suite = suite.linearized(matrix.theta0)
        return cls(collection, pretrained.meta, suite, matrix, Path(cache_dir), chosen, cache, plan)

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of what decides every result: the collection, the pretrained and each fine-tuned checkpoint
        (by tensors_sha256, in T's row order), how they are evaluated, and the device."""
        facts = {
            "collection": str(self.collection.root),
            "pretrained": self.pretrained.tensors_sha256,
            "tasks": [
                (t, self.variant_of(t), self.collection.finetuned_sha256(t, self.variant_of(t)))
                for t in self.task_names
            ],
            "linearized": self.linearized,
            "device": str(self.matrix.T.device),
        }
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.matrix.task_names

    def variant_of(self, task: str) -> str:
        return self.variants.get(task, "standard")

    @property
    def linearized(self) -> bool:
        """Whether T holds linearized checkpoints (evaluated as f₀ + J f(x; θ₀)·(θ − θ₀))."""
        return self.suite.linearized_at is not None

    @_memoized
    def zero_shot(self, split: str) -> Mapping[str, float]:
        return evaluate(self.matrix.theta0, self.suite, split).accuracy

    @_memoized
    def finetuned(self, split: str) -> Mapping[str, float]:
        """Each task's own fine-tuned accuracy: the denominator of normalized accuracy."""
        m = self.matrix
        return {
            t: evaluate(m.theta0 + m.T[k], self.suite, split, tasks=[t]).accuracy[t] for k, t in enumerate(m.task_names)
        }

    @_memoized
    def importance(self, kind: str) -> torch.Tensor:
        """STA importance codes uint8 [K, P] of every task, rows in `task_names` order, on the device.

        kinds: "tau" and "theta" at each fine-tuned model (merging), "grad0" the bare |∇L| of each
        task's loss at θ₀ (forgetting). Shipped with the collection, cached in the data home, or
        computed now (a few gradient passes per task: seconds on the demo zoo, minutes for ViT-B/32
        on a CPU; `importance_job` computes them in the background)."""
        rows = [self.task_importance(task, kind) for task in self.task_names]
        return torch.stack(rows).to(self.matrix.T.device)  # [K, P]

    def task_importance(self, task: str, kind: str) -> torch.Tensor:
        """One task's codes uint8 [P] (loaded, or computed at its weights and cached)."""
        m = self.matrix
        theta = m.theta0 if kind == "grad0" else m.theta0 + m.T[self.task_names.index(task)]  # [P]
        return importance_codes(self.suite, theta, m.theta0, self.importance_source(task, kind))

    def importance_ready(self, kind: str) -> bool:
        """Whether every task's map of `kind` is shipped or cached (so `importance` only reads files)."""
        return all(self.importance_source(t, kind).available for t in self.task_names)

    def importance_source(self, task: str, kind: str) -> ImportanceSource:
        """Which checkpoint one task's map of `kind` belongs to, and where it is stored."""
        at_pretrained = kind == "grad0"
        sha = (
            self.pretrained.tensors_sha256
            if at_pretrained
            else self.collection.finetuned_sha256(task, self.variant_of(task))
        )
        linearized = self.suite.linearized_at is not None and not at_pretrained  # at θ₀ both gradients agree
        config = ImportanceConfig(
            variant="grad" if at_pretrained else kind, model="linearized" if linearized else "network"
        )
        return ImportanceSource(
            task,
            sha,
            config,
            self.cache_dir,
            shipped=self.collection.importance_path(task, kind) if self.variant_of(task) == "standard" else None,
        )

    def taujp(self, *, progress: Progress | None = None) -> TauJpMatrix:
        """τJp of every task vector on every task's inputs: the collection's stored matrix when it ships
        one, else the data-home cache, else computed now on val (first `TAUJP_IMAGES` per task) and
        cached by the checkpoints' sha256; `taujp_job` does the computing in the background."""
        source = self._taujp_file()
        if source.is_file():
            return load_taujp(source)
        m = self.matrix
        matrix = taujp_matrix(
            self.suite,
            m.theta0,
            m.T,
            names=m.task_names,
            tasks=m.task_names,
            split="val",
            max_images=TAUJP_IMAGES,
            progress=progress,
        )
        save_taujp(source, matrix)
        return matrix

    @_memoized
    def stored_taujp(self) -> dict[str, TauJpMatrix]:
        """The τJp matrices the collection ships, per variant (e.g. standard, linearized, tau_jp)."""
        variants = ("standard", *self.collection.manifest.taujp_variants)
        paths = {v: self.collection.taujp_path(v) for v in variants}
        return {v: load_taujp(p) for v, p in paths.items() if p is not None and p.is_file()}

    def taujp_ready(self) -> bool:
        """Whether `taujp` only reads a file (shipped or cached)."""
        return self._taujp_file().is_file()

    def _taujp_file(self) -> Path:
        uniform = self._uniform_variant()
        stored = self.collection.taujp_path(uniform) if uniform else None
        if stored is not None and set(self.task_names) == set(self.collection.task_names):
            return stored
        shas = [
            self.pretrained.tensors_sha256,
            *(self.collection.finetuned_sha256(t, self.variant_of(t)) for t in self.task_names),
        ]
        key = hashlib.sha256(json.dumps({"shas": shas, "split": "val", "images": TAUJP_IMAGES}).encode()).hexdigest()
        return self.cache_dir / "taujp" / f"{key[:24]}.json"

    def _uniform_variant(self) -> str | None:
        """The one checkpoint name every task uses, if they all use the same."""
        names = {self.variant_of(t) for t in self.task_names}
        return names.pop() if len(names) == 1 else None

    @_memoized
    def pair_drops(self, lam: float, *, split: str = "val") -> dict[tuple[str, str], float]:
        """drop_b(a) for every ordered pair a ≠ b at coefficient λ (engine/taujp/matrix.py)."""
        m = self.matrix
        return pair_drops(self.suite, m.theta0, m.T, names=m.task_names, lam=lam, split=split)

    @_memoized
    def tangent_pair_drops(self, lam: float, *, split: str = "interactive") -> dict[tuple[str, str], float]:
        """drop_b(a) for every ordered pair from the λ-independent J f(x; θ₀)·τ of `tangent_preview` (computed once,
        kept in the data home): exact for linearized checkpoints, the first-order estimate for standard ones;
        a new λ evaluates no network (engine/taujp/preview.py)."""
        return tangent_pair_drops(self.tangent_preview(split), lam=lam)

    @_memoized
    def taujp_layers(self, vector: str, task: str) -> dict[str, float]:
        """τJp of one task vector on one task's inputs, per layer block (same split and images as `taujp`)."""
        m, shown = self.matrix, self.taujp()
        return layer_breakdown(
            self.suite,
            m.theta0,
            m.T[self.task_names.index(vector)],
            m.spec,
            task=task,
            split=shown.split,
            max_images=min(min(shown.images), 64),
        )

    @_memoized
    def tangent_preview(self, split: str = "interactive") -> TangentPreview:
        """f(x; θ₀) and J f(x; θ₀)·τₜ of every task's `split` images (engine/taujp/preview.py): read from the data
        home's JVP cache where stored (engine/taujp/jvp_cache.py), else computed once and stored."""
        store = JvpStore(
            self.cache_dir / "jvp",
            self.pretrained.tensors_sha256,
            tuple(self.collection.finetuned_sha256(t, self.variant_of(t)) for t in self.task_names),
        )
        return TangentPreview.build(
            self.suite, self.matrix.theta0, self.matrix.T, vectors=self.task_names, store=store, split=split
        )

    def preview(
        self, tasks: Sequence[str], params: Mapping[str, ParamValue], *, split: str = "interactive"
    ) -> dict[str, float]:
        """Tangent-space accuracy of a task-arithmetic merge of `tasks` (other vectors at λ = 0)."""
        lam = get_method("task_arithmetic").resolve(params, num_tasks=len(tasks))["lam"]  # [k]
        full = torch.zeros(len(self.task_names))  # [K]
        full[[self.task_names.index(t) for t in tasks]] = lam
        accuracy = self.tangent_preview(split).accuracy(full)
        return {t: accuracy[t] for t in tasks}

    def method_importance(self, method: str | MergeMethod, tasks: Sequence[str]) -> torch.Tensor | None:
        """The importance rows of `tasks` when `method` needs them, else None."""
        kind = get_method(method).importance
        if kind is None:
            return None
        return take_rows(self.importance(kind), [self.matrix.task_names.index(t) for t in tasks])  # [k, P] uint8

    def merge(
        self,
        tasks: Sequence[str],
        method: str | MergeMethod,
        params: Mapping[str, ParamValue],
        *,
        progress: StepProgress | None = None,
    ) -> torch.Tensor:
        """θ [P] merged from the chosen tasks' vectors. A method that separates its final scale s
        (`scale_parts`: θ = base + s·direction) merges from its cached parts (`merge_parts`), so moving s
        (α, λ) costs one pass over [P]; `progress` follows an iterative method's first computation. A
        masking method with per-task λ that differ merges again, from its cached mask (`kept`) when the
        mask fits the cache: one pass over [K, P], no mask, election or drop recomputed."""
        method = get_method(method)
        scale = method.common_scale(method.resolve(params, num_tasks=len(tasks)))
        if scale is not None:
            base, direction = self.merge_parts(tasks, method, params, progress=progress)  # [P] each
            return torch.add(base, direction, alpha=scale)  # [P]
        cached_mask = method.keep_mask is not None and self.mask_fits(tasks)
        return apply(
            method,
            self.matrix.theta0,
            self.matrix.rows(tasks),
            params,
            importance=self.method_importance(method, tasks),
            spec=self.matrix.spec,
            keep=self.kept(tasks, method, params) if cached_mask else None,
        )

    def kept(
        self, tasks: Sequence[str], method: str | MergeMethod, params: Mapping[str, ParamValue]
    ) -> torch.Tensor | None:
        """The bool [k, P] mask of what a masking `method` keeps of `tasks`' vectors at `params` (None: every
        entry, or a method that masks nothing); cached while it fits `KEEP_MASK_SHARE` of the cache budget, under
        its mask function and expensive parameters (TIES and magnitude at one density share it, as DARE and
        DARE-TIES at one drop rate and seed do)."""
        method = get_method(method)
        if method.keep_mask is None:
            return None

        def compute() -> torch.Tensor | None:
            return method.kept(self.matrix.rows(tasks), params, importance=self.method_importance(method, tasks))

        if not self.mask_fits(tasks):
            return compute()
        return self.cache.get_or_compute(self._keep_key(tasks, method, params), compute)

    def mask_fits(self, tasks: Sequence[str]) -> bool:
        """Whether a keep mask of `tasks` (bool [k, P]) is small enough to cache (`KEEP_MASK_SHARE`)."""
        return len(tasks) * self.matrix.spec.numel <= KEEP_MASK_SHARE * self.cache.budget_bytes

    def _keep_key(self, tasks: Sequence[str], method: MergeMethod, params: Mapping[str, ParamValue]) -> tuple:
        resolved = method.resolve(params, num_tasks=len(tasks))
        expensive = tuple((n, _frozen(resolved[n])) for n in method.expensive)
        return (self.fingerprint, "keep", tuple(tasks), method.keep_mask, method.importance, expensive)

    def merge_parts(
        self,
        tasks: Sequence[str],
        method: str | MergeMethod,
        params: Mapping[str, ParamValue],
        *,
        progress: StepProgress | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(base, direction) [P] of a `scale_parts` method at the setting of its expensive parameters in
        `params` (its scale is ignored): computed once per setting and kept in the cache; a method whose
        parts are slow to recompute (iterative, or a large model's factorizations) also keeps them in the
        data home by the checkpoints' sha256 (`parts_store`), so a restart reads them in seconds. A base that is
        θ₀ itself is not kept again: a setting of a sparse method costs the cache one [P]."""
        method = get_method(method)
        key, theta0 = self._parts_key(tasks, method, params), self.matrix.theta0
        base, direction = self.cache.get_or_compute(
            (self.fingerprint, "scale_parts", key),
            lambda: _without_theta0(self._parts(tasks, method, params, key, progress), theta0),
        )
        return (theta0 if base is None else base), direction

    def parts_ready(self, tasks: Sequence[str], method: str | MergeMethod, params: Mapping[str, ParamValue]) -> bool:
        """Whether `merge_parts` only reads (the cache or the data home) for this setting."""
        method = get_method(method)
        key = self._parts_key(tasks, method, params)
        return (self.fingerprint, "scale_parts", key) in self.cache or self.parts_store.path(key).is_file()

    def needs_job(self, tasks: Sequence[str], method: str | MergeMethod, params: Mapping[str, ParamValue]) -> bool:
        """Whether a page should compute this merge in a background job: an iterative method, or a large
        model's first factorization, whose parts are not ready yet."""
        method = get_method(method)
        return method.scale_parts is not None and self._slow(method) and not self.parts_ready(tasks, method, params)

    def _slow(self, method: MergeMethod) -> bool:
        """Iterative, or factorizing a large model: minutes to recompute."""
        return method.iterative or (method.per_layer and self.matrix.spec.numel >= LARGE_MODEL_PARAMS)

    @property
    def parts_store(self) -> TensorStore:
        return TensorStore(self.cache_dir / "merge_parts")

    def _parts_key(self, tasks: Sequence[str], method: MergeMethod, params: Mapping[str, ParamValue]) -> str:
        if method.scale_parts is None:
            raise ParameterError(method.name, "has no separable final scale", fix="merge it with merge()")
        resolved = method.resolve(params, num_tasks=len(tasks))
        expensive = {n: float(resolved[n]) for n in method.expensive}  # scalar parameters only (declared so)
        return json.dumps({"workspace": self.fingerprint, "tasks": list(tasks), "method": method.name, **expensive})

    def _parts(
        self, tasks: Sequence[str], method: MergeMethod, params: Mapping[str, ParamValue], key: str, progress
    ) -> tuple[torch.Tensor, torch.Tensor]:
        persist = self._slow(method)
        theta0 = self.matrix.theta0
        stored = self.parts_store.get(key, device=theta0.device) if persist else None
        if stored is not None:
            return stored.get("base", theta0), stored["direction"]
        resolved = {n: v for n, v in params.items() if n not in method.cheap}

        def memo(name: Hashable, compute: Callable[[], Any]) -> Any:
            return self.cache.get_or_compute((self.fingerprint, "factors", tuple(tasks), name), compute)

        base, direction = scale_parts(
            method,
            theta0,
            self.matrix.rows(tasks),
            resolved,
            spec=self.matrix.spec,
            progress=progress,
            memo=memo,
            importance=self.method_importance(method, tasks),
            keep=self._cached_mask(tasks, method, params),
        )  # [P] each; factorizations shared by other settings (a rank, a share, a step count) stay cached
        if persist:
            self.parts_store.put(key, {"direction": direction} | ({} if base is theta0 else {"base": base}))
        return base, direction

    def _cached_mask(self, tasks: Sequence[str], method: MergeMethod, params: Mapping[str, ParamValue]):
        """The keep mask when the cache already holds it (the keep panel or a per-task merge computed it), else
        None: parts computed from scratch do not cache a [K, P] mask that a λ move would never read."""
        return None if method.keep_mask is None else self.cache.get(self._keep_key(tasks, method, params))

    def ranks(self, tasks: Sequence[str], method: str | MergeMethod, params: Mapping[str, ParamValue]):
        """What a low-rank method keeps per layer (rank and energy share), for the merge page's panel."""
        return get_method(method).ranks(self.matrix.rows(tasks), self.matrix.spec, params)

    @_memoized
    def subspace_stats(self) -> SubspaceStats:
        """Spectra, top-k energy, effective rank and top-k alignment of every task's layer matrices."""
        return subspace_stats(self.matrix.T, self.matrix.spec, self.task_names)

    def sparsity(
        self, tasks: Sequence[str], method: str | MergeMethod, params: Mapping[str, ParamValue]
    ) -> SparsityReport:
        """What the method keeps and where the kept entries disagree, from the mask a per-task merge shares."""
        mask = self.kept(tasks, method, params)  # bool [k, P] or None
        return masked_sparsity(self.matrix.rows(tasks), mask, tasks=tasks, spec=self.matrix.spec)

    def compare(
        self,
        tasks: Sequence[str],
        method: str | MergeMethod,
        params: Mapping[str, ParamValue],
        *,
        split: str = "interactive",
        progress: Progress | None = None,
    ) -> MergeComparison:
        """Merged vs zero-shot vs fine-tuned accuracy of one setting, kept in the cache: a page rendering the
        same setting again (a rerun, another session) evaluates nothing. `progress` follows a computation."""
        tasks, method = tuple(tasks), get_method(method)
        key = (self.fingerprint, "compare", tasks, method, _frozen(params), split)
        return self.cache.get_or_compute(key, lambda: self._compare(tasks, method, params, split, progress))

    def _compare(
        self,
        tasks: tuple[str, ...],
        method: MergeMethod,
        params: Mapping[str, ParamValue],
        split: str,
        progress: Progress | None,
    ) -> MergeComparison:
        finetuned = self.finetuned(split)
        merged = evaluate(
            self.merge(tasks, method, params), self.suite, split, tasks=tasks, reference=finetuned, progress=progress
        )
        zero_shot = self.zero_shot(split)
        return MergeComparison(split, tasks, merged, {t: zero_shot[t] for t in tasks}, {t: finetuned[t] for t in tasks})

    def sweep(
        self,
        tasks: Sequence[str],
        method: str,
        params: Mapping[str, ParamValue],
        *,
        param: str,
        values: Sequence[float],
        split: str = "interactive",
        progress: Progress | None = None,
    ) -> Sweep:
        """Evaluate the merge at each value of `param` (the others fixed)."""
        tasks, results = tuple(tasks), []
        for i, value in enumerate(values):
            results.append(self.compare(tasks, method, {**params, param: value}, split=split).merged)
            if progress is not None:
                progress((i + 1) / len(values), f"{param} = {value:g}")
        return Sweep.from_results(split, param, values, results, tasks)


def _without_theta0(
    parts: tuple[torch.Tensor, torch.Tensor], theta0: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(None, direction) where the base is θ₀ itself, which the workspace holds anyway: the cache counts only
    what the parts add."""
    base, direction = parts
    return (None if base is theta0 else base), direction


def linearized_tasks(collection: Collection, chosen: Mapping[str, str]) -> tuple[str, ...]:
    """The tasks whose chosen checkpoint is a linearized one (sidecar variant linearized or tau_jp)."""
    return tuple(t for t, v in chosen.items() if collection.checkpoint_meta(t, v).linearized)


def _linearized(collection: Collection, chosen: Mapping[str, str]) -> bool:
    """Whether the chosen checkpoints are linearized ones; CheckpointError when they mix both kinds."""
    kinds = {t: collection.checkpoint_meta(t, v).linearized for t, v in chosen.items()}
    if len(set(kinds.values())) > 1:
        linear = sorted(t for t, k in kinds.items() if k)
        raise CheckpointError(
            ", ".join(f"{t}/{chosen[t]}" for t in linear),
            "are linearized checkpoints; the other tasks' are standard, and one merge cannot evaluate both ways",
            fix="choose linearized (or standard) checkpoints for every task",
        )
    return any(kinds.values())
