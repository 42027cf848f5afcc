"""A merge session: every merge of one opened pool planned once and served from its caches.

Each call is planned once (`plan`: the method looked up, its parameters resolved, the scale s of its final
step found), then runs in two parts as the method declares them (engine/merge/declaration.py): the expensive
part (a keep mask, an election, factorizations, an optimisation: `scale_parts` gives it as (base, direction))
computed once per setting of the expensive parameters and kept in the process's `ComputeCache`, and the cheap
final step θ = base + s·direction, one pass over [P]. A masking method with per-task λ that differ merges again
from its cached keep mask (bool [k, P], kept while it fits `KEEP_MASK_SHARE` of the cache budget). Parts that
are slow to recompute (an iterative method, a large model's factorizations) are also kept in the data home,
keyed by the pool's fingerprint, so a restart reads them; `needs_job` tells a page to compute those in a
background job. Nothing here mutates a shared tensor: every merge allocates its own output.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import torch

from engine.cache.memory import ComputeCache
from engine.errors import ParameterError
from engine.io.tensor_store import TensorStore
from engine.merge.analysis import SparsityReport, masked_sparsity
from engine.merge.declaration import MergeMethod, ParamValue, read_rows
from engine.merge.pipeline import get_calibrator, split_params
from engine.merge.registry import apply_resolved, get_method, scale_parts_resolved
from engine.merge.subspace import LayerRank
from engine.merge.task_models import TaskParts
from engine.merge.wudi import StepProgress
from engine.params import TaskMatrix, take_rows

LARGE_MODEL_PARAMS = 5_000_000  # from here (ViT-B/32: 88 M) a per-layer method's first merge is a job, kept on disk
KEEP_MASK_SHARE = 0.5
"""A masking method's keep mask (bool [K, P], K·P bytes) is cached only while it takes at most this share of the
cache budget: at the default 2 GB, a ViT-B/32 mask of K = 8 tasks (0.70 GB) is kept, and the other half still
holds a few (base, direction) parts (0.35 GB each) and the evaluations; a bigger mask is recomputed per merge."""


@dataclass(frozen=True)
class MergePlan:
    """One merge call, planned once: the tasks, the method, its parameters resolved (defaults filled, ranges and
    arity checked: the kernels take them as they are), and `scale`, the s of θ = base + s·direction when the
    method separates its final step at these parameters (a per-task s only while every task's value is equal),
    else None."""

    tasks: tuple[str, ...]
    method: MergeMethod
    resolved: Mapping[str, Any]  # name → float, or float32 [k] for a per-task parameter
    scale: float | None

    @property
    def expensive(self) -> tuple[tuple[str, Any], ...]:
        """(name, value) of the parameters that define the expensive part (declared scalar)."""
        return tuple((n, self.resolved[n]) for n in self.method.expensive)


@dataclass(frozen=True, eq=False)
class MergeSession:
    """Merges of `matrix`'s task vectors, cached in `cache` under `fingerprint` (what decides every result) and,
    for slow parts, in `parts_store`; `importance(kind)` gives a kind's STA codes uint8 [K, P] in T's row order."""

    matrix: TaskMatrix
    cache: ComputeCache
    fingerprint: str
    parts_store: TensorStore
    importance: Callable[[str], torch.Tensor]
    # keep per-layer factorizations in `cache` for later moves (Iso-CTS's share, the keep panel's ranks); a
    # one-shot run (the merge command) does not: they would fill the cache budget, growing with K
    keep_factors: bool = field(default=True, kw_only=True)

    def plan(self, tasks: Sequence[str], method: str | MergeMethod, params: Mapping[str, ParamValue]) -> MergePlan:
        method = get_method(method)
        resolved = method.resolve(params, num_tasks=len(tasks))
        return MergePlan(tuple(tasks), method, MappingProxyType(resolved), method.common_scale(resolved))

    def merge(
        self,
        tasks: Sequence[str],
        method: str | MergeMethod,
        params: Mapping[str, ParamValue],
        *,
        progress: StepProgress | None = None,
        calibrate: Sequence[str] = (),
    ) -> torch.Tensor:
        """θ [P] merged from the chosen tasks' vectors: from the cached parts when the method separates its
        scale at these parameters (a move of s costs one pass over [P]; `progress` follows an iterative method's
        first computation), else by the method's kernel, from the cached keep mask when it fits. `calibrate`
        names calibrators run in order on the merged update (engine/merge/pipeline.py), their parameters
        namespaced in `params` (`svc.alpha`)."""
        base_params, step_params = split_params(params, calibrate)
        plan = self.plan(tasks, method, base_params)
        if calibrate:
            return self._calibrated(plan, tuple(calibrate), step_params, progress)
        return self._merged(plan, progress)

    def _merged(self, plan: MergePlan, progress: StepProgress | None) -> torch.Tensor:
        if plan.scale is not None:
            base, direction = self._parts(plan, progress)  # [P] each
            return torch.add(base, direction, alpha=plan.scale)  # [P]
        cached_mask = plan.method.keep_mask is not None and self.mask_fits(plan.tasks)
        return apply_resolved(
            plan.method,
            self.matrix.theta0,
            self.matrix.rows(plan.tasks),
            plan.resolved,
            importance=self.method_importance(plan.method, plan.tasks),
            spec=self.matrix.spec,
            keep=self._kept(plan) if cached_mask else None,
        )

    def _calibrated(
        self,
        plan: MergePlan,
        calibrate: tuple[str, ...],
        step_params: Mapping[str, Mapping[str, ParamValue]],
        progress: StepProgress | None,
    ) -> torch.Tensor:
        """θ₀ + the base merge's update after each calibrator. The update is carried as s·D with s the base's
        scale while the steps are linear, so a calibrator's expensive part (SVC's SVDs), cached under the base's
        parts key and the steps before it, is reused when s or a cheap calibrator parameter moves."""
        if plan.method.task_specific:
            raise ParameterError(
                plan.method.name, "serves each task its own model", fix="calibrate a single-model merge"
            )
        direction, scale, key = self._update(plan, progress)
        rows, spec, done = self.matrix.rows(plan.tasks), self.matrix.spec, []
        for name in calibrate:
            step = get_calibrator(name)
            resolved = step.resolve(step_params.get(name, {}))
            expensive = {n: resolved[n] for n in step.expensive}
            prepared = self.cache.get_or_compute(
                (self.fingerprint, "calibrator", key, tuple(done), name, tuple(sorted(expensive.items()))),
                lambda step=step, direction=direction, expensive=expensive: step.prepare(
                    direction, rows, spec, **expensive
                ),
            )
            done.append((name, tuple(sorted(resolved.items()))))
            direction = step.apply(prepared, direction, scale, spec, **resolved)  # [P]
            if not step.linear:
                done.append(("scale", scale))
                scale = 1.0
        return torch.add(self.matrix.theta0, direction, alpha=scale)  # [P]

    def _update(self, plan: MergePlan, progress: StepProgress | None) -> tuple[torch.Tensor, float, Hashable]:
        """(D [P], s, key): the base merge's update θ − θ₀ = s·D, with s its scale where its parts give
        (θ₀, D), and a key naming D."""
        theta0 = self.matrix.theta0
        if plan.scale is not None:
            base, direction = self._parts(plan, progress)
            if base is theta0:
                return direction, plan.scale, self.parts_key(plan)
            update = torch.sub(base, theta0).add_(direction, alpha=plan.scale)
            return update, 1.0, (self.parts_key(plan), plan.scale)
        unit, scale = _at_unit_scale(plan) if plan.method.linear_scale else (plan, 1.0)
        update = self._merged(unit, progress).sub_(theta0)
        return update, scale, (plan.tasks, plan.method.name, _frozen(unit.resolved))

    def task_model(
        self, tasks: Sequence[str], method: str | MergeMethod, params: Mapping[str, ParamValue], task: str
    ) -> torch.Tensor:
        """θ_t [P]: the model a task-specific `method` serves `task` (one of `tasks`) with, built from the cached
        shared vector and task `task`'s bit mask and rescaler; a single-model method's merge for every task."""
        if task not in tasks:
            raise ParameterError(f"task {task!r}", "is not one of the merged tasks", fix=f"use one of {list(tasks)}")
        plan = self.plan(tasks, method, params)
        if not plan.method.task_specific:
            return self.merge(tasks, plan.method, params)
        return self.task_parts(plan).model(self.matrix.theta0, plan.tasks.index(task))

    def task_parts(self, plan: MergePlan) -> TaskParts:
        """A task-specific method's shared vector, packed masks and rescalers at `plan`'s parameters (all of them:
        TALL's masks read its α), computed once and kept in the cache (4P + K·P/8 bytes, not K models)."""
        key = (self.fingerprint, "task_parts", plan.tasks, plan.method.name, _frozen(plan.resolved))

        def compute() -> TaskParts:
            extra = {"spec": self.matrix.spec} if plan.method.per_layer else {}
            with read_rows(plan.method, self.matrix.rows(plan.tasks)) as rows:  # [k, P]
                return plan.method.task_parts(self.matrix.theta0, rows, **plan.resolved, **extra)

        return self.cache.get_or_compute(key, compute)

    def kept(
        self, tasks: Sequence[str], method: str | MergeMethod, params: Mapping[str, ParamValue]
    ) -> torch.Tensor | None:
        """The bool [k, P] mask of what a masking `method` keeps of `tasks`' vectors at `params` (None: every
        entry, or a method that masks nothing); cached while it fits `KEEP_MASK_SHARE` of the cache budget, under
        its mask function and expensive parameters (TIES and magnitude at one density share it, as DARE and
        DARE-TIES at one drop rate and seed do)."""
        return self._kept(self.plan(tasks, method, params))

    def _kept(self, plan: MergePlan) -> torch.Tensor | None:
        method, tasks = plan.method, plan.tasks
        if method.keep_mask is None:
            return None

        def compute() -> torch.Tensor | None:
            rows, importance = self.matrix.rows(tasks), self.method_importance(method, tasks)
            return method.kept_resolved(rows, plan.resolved, importance=importance)

        if not self.mask_fits(tasks):
            return compute()
        return self.cache.get_or_compute(self._keep_key(plan), compute)

    def mask_fits(self, tasks: Sequence[str]) -> bool:
        """Whether a keep mask of `tasks` (bool [k, P]) is small enough to cache (`KEEP_MASK_SHARE`)."""
        return len(tasks) * self.matrix.spec.numel <= KEEP_MASK_SHARE * self.cache.budget_bytes

    def _keep_key(self, plan: MergePlan) -> tuple:
        method = plan.method
        return (self.fingerprint, "keep", plan.tasks, method.keep_mask, method.importance, plan.expensive)

    def parts(
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
        return self._parts(self.plan(tasks, method, params), progress)

    def _parts(self, plan: MergePlan, progress: StepProgress | None) -> tuple[torch.Tensor, torch.Tensor]:
        key, theta0 = self.parts_key(plan), self.matrix.theta0
        base, direction = self.cache.get_or_compute(
            (self.fingerprint, "scale_parts", key),
            lambda: _without_theta0(self._computed_parts(plan, key, progress), theta0),
        )
        return (theta0 if base is None else base), direction

    def parts_ready(self, tasks: Sequence[str], method: str | MergeMethod, params: Mapping[str, ParamValue]) -> bool:
        """Whether `parts` only reads (the cache or the data home) for this setting."""
        return self._parts_ready(self.plan(tasks, method, params))

    def _parts_ready(self, plan: MergePlan) -> bool:
        key = self.parts_key(plan)
        return (self.fingerprint, "scale_parts", key) in self.cache or self.parts_store.has(key)

    def needs_job(self, tasks: Sequence[str], method: str | MergeMethod, params: Mapping[str, ParamValue]) -> bool:
        """Whether a page should compute this merge in a background job: an iterative method, or a large
        model's first factorization, whose parts are not ready yet."""
        plan = self.plan(tasks, method, params)
        return plan.method.scale_parts is not None and self.slow(plan.method) and not self._parts_ready(plan)

    def slow(self, method: MergeMethod) -> bool:
        """Iterative, or factorizing a large model: minutes to recompute."""
        return method.iterative or (method.per_layer and self.matrix.spec.numel >= LARGE_MODEL_PARAMS)

    def parts_key(self, plan: MergePlan) -> str:
        """The parts' key in the cache and the data home: the pool, the tasks, the method, its expensive values."""
        if plan.method.scale_parts is None:
            raise ParameterError(plan.method.name, "has no separable final scale", fix="merge it with merge()")
        expensive = {n: float(v) for n, v in plan.expensive}  # scalar parameters only (declared so)
        return json.dumps(
            {"workspace": self.fingerprint, "tasks": list(plan.tasks), "method": plan.method.name, **expensive}
        )

    def _computed_parts(
        self, plan: MergePlan, key: str, progress: StepProgress | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        method, tasks = plan.method, plan.tasks
        persist, theta0 = self.slow(method), self.matrix.theta0
        stored = self.parts_store.get(key, device=theta0.device) if persist else None
        if stored is not None:
            return stored.get("base", theta0), stored["direction"]

        def memo(name: Hashable, compute: Callable[[], Any]) -> Any:
            if not self.keep_factors:
                return compute()
            return self.cache.get_or_compute((self.fingerprint, "factors", tasks, name), compute)

        base, direction = scale_parts_resolved(
            method,
            theta0,
            self.matrix.rows(tasks),
            plan.resolved,
            spec=self.matrix.spec,
            progress=progress,
            memo=memo,
            importance=self.method_importance(method, tasks),
            keep=None if method.keep_mask is None else self.cache.get(self._keep_key(plan)),
        )  # [P] each; the keep mask only where cached already (a λ move never reads one it would make)
        if persist:
            self.parts_store.put(key, {"direction": direction} | ({} if base is theta0 else {"base": base}))
        return base, direction

    def method_importance(self, method: str | MergeMethod, tasks: Sequence[str]) -> torch.Tensor | None:
        """The importance rows of `tasks` when `method` needs them, else None."""
        kind = get_method(method).importance
        if kind is None:
            return None
        return take_rows(self.importance(kind), [self.matrix.task_names.index(t) for t in tasks])  # [k, P] uint8

    def ranks(
        self, tasks: Sequence[str], method: str | MergeMethod, params: Mapping[str, ParamValue]
    ) -> tuple[LayerRank, ...]:
        """What a low-rank method keeps per layer (rank and energy share), for the merge page's panel."""
        return get_method(method).ranks(self.matrix.rows(tasks), self.matrix.spec, params)

    def sparsity(
        self, tasks: Sequence[str], method: str | MergeMethod, params: Mapping[str, ParamValue]
    ) -> SparsityReport:
        """What the method keeps and where the kept entries disagree, from the mask a per-task merge shares."""
        mask = self.kept(tasks, method, params)  # bool [k, P] or None
        return masked_sparsity(self.matrix.rows(tasks), mask, tasks=tasks, spec=self.matrix.spec)


def _at_unit_scale(plan: MergePlan) -> tuple[MergePlan, float]:
    """(the plan at s = 1, s) for a method linear in its scale with one value for all tasks; else (plan, 1)."""
    name = plan.method.scale.name
    value = plan.resolved[name]
    if isinstance(value, torch.Tensor):
        if not bool((value == value[0]).all()):
            return plan, 1.0
        scale, unit = float(value[0]), torch.ones_like(value)
    else:
        scale, unit = float(value), 1.0
    return replace(plan, resolved=MappingProxyType({**plan.resolved, name: unit})), scale


def _frozen(resolved: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Resolved parameters as a cache key: a per-task tensor as its tuple of floats."""
    return tuple((n, tuple(v.tolist()) if isinstance(v, torch.Tensor) else v) for n, v in sorted(resolved.items()))


def _without_theta0(
    parts: tuple[torch.Tensor, torch.Tensor], theta0: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(None, direction) where the base is θ₀ itself, which the session holds anyway: the cache counts only
    what the parts add."""
    base, direction = parts
    return (None if base is theta0 else base), direction
