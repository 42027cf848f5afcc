"""A workspace: one collection opened for interactive use, the object the dashboard caches per process.

It holds the evaluation suite and the task matrix on the chosen device, and answers the questions a
page asks in one call each: "what does this merge do to every task?" (`compare`) and "how does
accuracy move with λ?" (`sweep`). Results carry the zero-shot and fine-tuned baselines of the same
split, so a figure needs nothing else. Merges are planned and cached by its `merges` session
(engine/merge/session.py); the merge methods here delegate to it. Nothing here mutates a shared tensor:
every merge allocates its own output, so sessions sharing a workspace cannot disturb each other.
T holds one fine-tuned checkpoint per task (`variants`, default "standard"). Linearized checkpoints
(sidecar variant "linearized" or "tau_jp") are evaluated as the linearized model around θ₀ everywhere
(eval, merges, sweeps, pair drops: the suite's `linearized_at`); one workspace never mixes the two kinds.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.cache.memory import ComputeCache
from engine.errors import CheckpointError
from engine.eval.evaluate import evaluate, evaluate_per_task
from engine.eval.results import MergeComparison, Sweep
from engine.eval.stored import comparison_from, comparison_key, comparison_tensors
from engine.eval.suite import EvalSuite, Progress
from engine.io.checkpoints import CheckpointMeta
from engine.io.tensor_store import TensorStore
from engine.merge import MergeMethod, get_method
from engine.merge.declaration import ParamValue
from engine.merge.pipeline import PIPE, parse_pipeline
from engine.merge.session import MergeSession
from engine.merge.spectra import SubspaceStats, subspace_stats
from engine.merge.wudi import StepProgress
from engine.params import TaskMatrix
from engine.pool.backing import open_task_matrix, plan_for
from engine.pool.collection import CheckpointProgress, Collection, load_collection, open_suite
from engine.sta.store import ImportanceStore
from engine.store.plan import StorePlan
from engine.taujp.store import TauJpStore


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
            else plan_for(collection, **_plan_inputs(chosen, folder, cache, store, device))
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

    @functools.cached_property
    def _vectors_fingerprint(self) -> str:
        """sha256 of what decides a merge: θ₀ and each task vector (checkpoints by tensors_sha256, in T's row
        order) and the device, not where the collection lies, so a merge's parts shipped with a collection
        (engine/jobs/warm.py) are found wherever it is unpacked."""
        facts = {
            "pretrained": self.pretrained.tensors_sha256,
            "tasks": [(t, self.collection.finetuned_sha256(t, self.variant_of(t))) for t in self.task_names],
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
        return {t: evaluate(m.theta0 + m.row(t), self.suite, split, tasks=[t]).accuracy[t] for t in m.task_names}

    @functools.cached_property
    def importance(self) -> ImportanceStore:
        """The tasks' STA importance maps (engine/sta/store.py): `codes(kind)` [K, P], `ready(kind)`, ..."""
        return ImportanceStore(*self._store_fields())

    @functools.cached_property
    def taujp(self) -> TauJpStore:
        """τJp and the tangent features (engine/taujp/store.py): `matrix()`, `pair_drops(λ)`, `preview(...)`, ..."""
        return TauJpStore(*self._store_fields())

    def _store_fields(self) -> tuple:
        """What the importance and τJp stores read, in their fields' order."""
        sha = self.pretrained.tensors_sha256
        return (
            self.collection,
            self.suite,
            self.matrix,
            sha,
            self.variants,
            self.cache_dir,
            self.cache,
            self.fingerprint,
        )

    @functools.cached_property
    def merges(self) -> MergeSession:
        """The merge session of this workspace's task vectors: plans each merge, owns its caches."""
        parts = TensorStore(self.cache_dir / "merge_parts", shipped=self.collection.warm_dir("merge_parts"))
        return MergeSession(self.matrix, self.cache, self._vectors_fingerprint, parts, self.importance.codes)

    def merge(
        self,
        tasks: Sequence[str],
        method: str | MergeMethod,
        params: Mapping[str, ParamValue],
        *,
        progress: StepProgress | None = None,
        calibrate: Sequence[str] = (),
    ) -> torch.Tensor:
        """θ [P] merged from the chosen tasks' vectors (`MergeSession.merge`: from cached parts where it can),
        then `calibrate`'s calibrators on its update (their parameters namespaced in `params`: `svc.alpha`)."""
        return self.merges.merge(tasks, method, params, progress=progress, calibrate=calibrate)

    @_memoized
    def subspace_stats(self) -> SubspaceStats:
        """Spectra, top-k energy, effective rank and top-k alignment of every task's layer matrices."""
        return subspace_stats(self.matrix.T, self.matrix.spec, self.task_names)

    def compare(
        self,
        tasks: Sequence[str],
        method: str | MergeMethod,
        params: Mapping[str, ParamValue],
        *,
        split: str = "interactive",
        progress: Progress | None = None,
        calibrate: Sequence[str] = (),
        store: bool = False,
    ) -> MergeComparison:
        """Merged vs zero-shot vs fine-tuned accuracy of one setting, kept in the cache: a page rendering the
        same setting again (a rerun, another session) evaluates nothing. `progress` follows a computation.
        `calibrate` names calibrators after the base merge (`merge`); a pipeline's name (`tsv_m+svc`) names them
        too, so jobs and runs that carry one method name carry the pipeline. A comparison stored on disk
        (engine/eval/stored.py: by `engine warm`, or shipped with the collection) is read, not evaluated;
        `store` stores this one there unless it is (what warming does)."""
        method, calibrate = _pipeline(method, calibrate)
        tasks, method = tuple(tasks), get_method(method)
        key = (self.fingerprint, "compare", tasks, method, _frozen(params), split, calibrate)
        stored = lambda: None if calibrate else self._stored_key(tasks, method, params, split)
        comparison = self.cache.get_or_compute(  # the stored key is made on a miss only: a hit stats no file
            key,
            lambda: (
                self._read_stored(stored(), split, tasks)
                or self._compare(tasks, method, params, split, progress, calibrate)
            ),
        )
        if store and (name := stored()) is not None and not self._results.has(name):
            self._results.put(name, comparison_tensors(comparison))
        return comparison

    @functools.cached_property
    def _results(self) -> TensorStore:
        return TensorStore(self.cache_dir / "results", shipped=self.collection.warm_dir("results"))

    def _stored_key(
        self, tasks: tuple[str, ...], method: MergeMethod, params: Mapping[str, ParamValue], split: str
    ) -> str:
        resolved = self.merges.plan(tasks, method, params).resolved
        return comparison_key(
            vectors=self._vectors_fingerprint,
            suite=self.collection.suite_identity(tasks),
            linearized=self.linearized,
            split=split,
            tasks=tasks,
            method=method.name,
            resolved=[(n, v.tolist() if isinstance(v, torch.Tensor) else v) for n, v in sorted(resolved.items())],
        )

    def _read_stored(self, key: str | None, split: str, tasks: tuple[str, ...]) -> MergeComparison | None:
        tensors = None if key is None else self._results.get(key)
        return None if tensors is None else comparison_from(tensors, split=split, tasks=tasks)

    def _compare(
        self,
        tasks: tuple[str, ...],
        method: MergeMethod,
        params: Mapping[str, ParamValue],
        split: str,
        progress: Progress | None,
        calibrate: tuple[str, ...] = (),
    ) -> MergeComparison:
        finetuned = self.finetuned(split)
        if method.task_specific and not calibrate:  # task t scored with task t's own model, built on the fly
            merged = evaluate_per_task(
                lambda task: self.merges.task_model(tasks, method, params, task),
                self.suite,
                split,
                tasks=tasks,
                reference=finetuned,
                progress=progress,
            )
        else:
            merged = evaluate(
                self.merge(tasks, method, params, calibrate=calibrate),
                self.suite,
                split,
                tasks=tasks,
                reference=finetuned,
                progress=progress,
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
        calibrate: Sequence[str] = (),
    ) -> Sweep:
        """Evaluate the merge (then `calibrate`'s calibrators) at each value of `param` (the others fixed)."""
        tasks, results = tuple(tasks), []
        for i, value in enumerate(values):
            setting = {**params, param: value}
            results.append(self.compare(tasks, method, setting, split=split, calibrate=calibrate).merged)
            if progress is not None:
                progress((i + 1) / len(values), f"{param} = {value:g}")
        return Sweep.from_results(split, param, values, results, tasks)


def _pipeline(method: str | MergeMethod, calibrate: Sequence[str]) -> tuple[str | MergeMethod, tuple[str, ...]]:
    """(base method, calibrators) of a method, a pipeline's name (`tsv_m+svc`) or a method with `calibrate`."""
    if isinstance(method, str) and PIPE in method:
        base, steps = parse_pipeline(method)
        return base, (*steps, *calibrate)
    return method, tuple(calibrate)


def _plan_inputs(
    chosen: Mapping[str, str], folder: Path, cache: ComputeCache, store: str, device: torch.device | str
) -> dict[str, Any]:
    """`plan_for`'s arguments for the tasks and variants `chosen` (task → variant)."""
    return {
        "tasks": tuple(chosen),
        "variants": chosen,
        "folder": folder,
        "choice": store,
        "cache_budget": cache.budget_bytes,
        "device": device,
    }


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
