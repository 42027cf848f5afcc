"""What a merge method declares: its parameters, what it selects and elects, what is cheap to move, its cached
parts, what the keep panel shows, and its Compare grid. One module per method in `engine/merge/methods/`
exports one `MergeMethod` as `METHOD`; `engine/merge/registry.py` collects them.

A method is a pure function `fn(theta0 [P], T [K, P], *, out=None, **params) -> [P]`: it never
modifies its inputs, and writes into `out` [P] when the caller passes a buffer to reuse. A method that
declares `importance="tau"` (or "theta") also receives `importance=` uint8 codes [K, P] of that kind of
STA map (engine/sta/codes.py); the Workspace supplies them.

Each method also declares what it does, as fields rather than as code that matches its name
(mergekit's generalized task arithmetic describes its methods the same way):
- `selection`: which entries of each task vector it keeps: "none", "magnitude" (top-d), "random_drop"
  (DARE), "importance" (STA) or "consensus" (the entries at least k tasks use); a masking method gives
  `keep_mask`, the bool [K, P] mask it applies, which the merge page's "what the method keeps" panel and the
  sign-conflict analysis read; or "low_rank" (the subspace methods), which give `keep_rank`: the rank kept
  per layer and its energy;
- `per_layer`: the method reads T's rows as per-layer matrices, so it is called with `spec=`;
- `sign_election`: "none", or "mass" (TIES: the sign of the summed kept entries wins);
- `cheap`: the parameters that only scale the final step (λ): moving them needs no new mask or
  election; every other parameter (density, drop rate and seed, threshold) defines the expensive part;
- `scale_parts`: the expensive part as (base, direction) [P], the merge being base + s·direction at the
  one cheap parameter s, so the Workspace caches them and a move of s is one pass over [P]. A per-task
  s (DARE's, magnitude's λ) separates only while every task's value is equal (`common_scale`); with
  unequal ones a masking method merges again from its cached mask (`apply(..., keep=)`);
- `iterative`: the expensive part is an optimisation (WUDI's Adam steps): pages run it as a background
  job with progress, and `scale_parts` passes it a `progress(step, steps, loss)` callback;
- `grid` (required): the settings Compare searches on val, or no axes and the reason the method stays out
  of Compare (a method is never left out silently);
- `order`: where pages, the CLI and Compare list it (then by name);
- `task_parts`: a task-specific method (TALL masks, EMR) serves task t with its own model, built on the fly from
  a shared vector, task t's bit mask and rescaler (engine/merge/task_models.py): `task_parts(θ₀, T, **params)`
  gives them; evaluation then scores task t with task t's model ("needs the task id at inference"), and `fn`
  gives the shared model alone;
- `storage`: what it stores to serve all K tasks (`Storage.bytes_per_task`): a single model 4P/K per task,
  TALL masks 4P/K + P/8, EMR 4P/K + P/8 + 4.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

import torch

from engine.errors import ParameterError, UnknownMethodError
from engine.merge.subspace import LayerRank
from engine.merge.task_models import SINGLE_MODEL, Storage, TaskParts
from engine.params import ParamSpec
from engine.store.plan import MemoryFacts
from engine.store.reader import Reader, Rows, in_memory

ParamValue = float | Sequence[float]
Selection = Literal["none", "magnitude", "random_drop", "importance", "consensus", "low_rank"]
MASKING = ("magnitude", "random_drop", "importance", "consensus")
SignElection = Literal["none", "mass"]
KeepMask = Callable[[torch.Tensor, Mapping[str, Any], torch.Tensor | None], torch.Tensor | None]
"""(T [K, P], resolved params, importance codes [K, P] or None) → bool [K, P] mask, or None (keeps all)."""
ScaleParts = Callable[..., tuple[torch.Tensor, torch.Tensor]]
"""(θ₀, T, [spec=], [importance=], [keep=], **expensive params) → (base [P], direction [P]) with the merge =
base + s·direction; base is θ₀ itself (not a copy) where the method adds to θ₀."""
TaskPartsOf = Callable[..., TaskParts]
"""(θ₀, T, **resolved params) → the shared vector, packed masks and rescalers a task-specific method stores."""
KeepRank = Callable[[torch.Tensor, ParamSpec, Mapping[str, Any]], tuple[LayerRank, ...]]
"""(T [K, P], spec, resolved params) → per layer, the rank a low-rank method keeps and its energy share."""


@dataclass(frozen=True)
class Param:
    """A declared method parameter. `per_task` ones accept one float (broadcast) or K floats."""

    name: str
    default: float
    low: float
    high: float
    step: float
    help: str
    per_task: bool = False
    symbol: str = ""  # how pages label it, e.g. "λ"

    @property
    def label(self) -> str:
        return f"{self.symbol} ({self.name})" if self.symbol else self.name

    def resolve(self, value: ParamValue, *, num_tasks: int, method: str) -> torch.Tensor | float:
        values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
        bad = [v for v in values if not self.low <= v <= self.high]
        if bad:
            raise ParameterError(
                f"{method}.{self.name}",
                f"value {bad[0]} outside [{self.low}, {self.high}]",
                fix="move it into the declared range",
            )
        if not self.per_task:
            if len(values) != 1:
                raise ParameterError(f"{method}.{self.name}", "takes one value", fix="pass a single number")
            return values[0]
        if len(values) not in (1, num_tasks):
            raise ParameterError(
                f"{method}.{self.name}",
                f"got {len(values)} values for {num_tasks} tasks",
                fix="pass one value, or one per task",
            )
        return torch.tensor(values * num_tasks if len(values) == 1 else values, dtype=torch.float32)


def steps(low: float, high: float, step: float) -> tuple[float, ...]:
    """low, low + step, …, high (rounded to 6 decimals): one axis of a grid."""
    return tuple(round(low + i * step, 6) for i in range(round((high - low) / step) + 1))


@dataclass(frozen=True)
class CompareGrid:
    """The settings Compare searches for a method on val, each axis a parameter and its values (the last axis
    varying fastest); or no axes and the `reason` the method stays out of Compare."""

    axes: tuple[tuple[str, tuple[float, ...]], ...]
    reason: str = ""

    def __post_init__(self) -> None:
        if bool(self.axes) == bool(self.reason):
            raise ParameterError(
                "grid", "needs either axes or the reason it has none", fix="use CompareGrid.over or CompareGrid.none"
            )

    @classmethod
    def over(cls, **axes: Sequence[float]) -> CompareGrid:
        """A grid of these axes, in the order given: `CompareGrid.over(density=(0.1, 0.2), lam=steps(0, 1, 0.1))`."""
        return cls(tuple((name, tuple(float(v) for v in values)) for name, values in axes.items()))

    @classmethod
    def none(cls, reason: str) -> CompareGrid:
        """No grid: the method is not compared, for `reason` (which pages and the CLI can show)."""
        return cls((), reason)

    def as_mapping(self) -> dict[str, tuple[float, ...]]:
        return dict(self.axes)


@dataclass(frozen=True)
class MergeMethod:
    name: str
    display_name: str
    paper_url: str
    params: tuple[Param, ...]
    fn: Callable[..., torch.Tensor]
    formula: str = ""  # one line for pages, e.g. "θ = θ₀ + Σₜ λₜ τₜ"
    importance: str | None = None  # kind of STA importance map the method needs, if any
    provisional: bool = False  # its definition is ours where the paper is unavailable (UI says so)
    selection: Selection = "none"
    sign_election: SignElection = "none"
    cheap: tuple[str, ...] = ()  # parameters that only scale the final step
    keep_mask: KeepMask | None = None  # required when `selection` masks entries
    keep_rank: KeepRank | None = None  # required when `selection` is "low_rank"
    per_layer: bool = False  # called with spec= (its ParamSpec) to view T's rows as matrices
    scale_parts: ScaleParts | None = None  # θ = base + s·direction, s its one cheap parameter (per-task: equal)
    iterative: bool = False  # its expensive part is an optimisation that reports progress (a background job)
    grid: CompareGrid = field(kw_only=True)  # what Compare searches, or why it does not compare this method
    order: int = field(default=1000, kw_only=True)  # where listings put it (then by name); unsaid: last
    task_parts: TaskPartsOf | None = field(default=None, kw_only=True)  # task-specific: task t's model per task
    storage: Storage = field(default=SINGLE_MODEL, kw_only=True)  # what serving all K tasks stores
    # θ − θ₀ = s·f(T) with s its scale (one value for all tasks) though it caches no parts: a calibrator after it
    # keeps s apart, so a λ move reuses the calibrator's parts (engine/merge/session.py)
    linear_scale: bool = field(default=False, kw_only=True)
    # streams T: reads it only through engine/store/reader.py's Reader, chunk by chunk or layer by layer, so it
    # takes a bfloat16 T (a bf16 store's mapping; what it reads is widened and computed in float32) and a store's
    # rows (`StoredRows`, e.g. LoRA factors densified a block at a time), with the same result as on T in memory
    # as float32; other methods get such a T made whole in memory for the call (`rows_as_read`), or refuse it
    # when that does not fit
    streams: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        subject, known = f"method {self.name}", {p.name for p in self.params}
        if self.selection not in get_args(Selection):
            raise ParameterError(subject, f"selection {self.selection!r} is unknown", fix=f"use {get_args(Selection)}")
        if self.sign_election not in get_args(SignElection):
            raise ParameterError(
                subject, f"sign_election {self.sign_election!r} is unknown", fix=f"use {get_args(SignElection)}"
            )
        if (self.selection in MASKING) == (self.keep_mask is None):
            raise ParameterError(
                subject,
                f"selection {self.selection!r} with{'out' if self.keep_mask is None else ''} a keep_mask",
                fix="a method that masks entries declares the mask it applies, and only such a method",
            )
        if (self.selection == "low_rank") != (self.keep_rank is not None and self.per_layer):
            raise ParameterError(
                subject,
                f"selection {self.selection!r} with keep_rank={self.keep_rank is not None}, per_layer={self.per_layer}",
                fix="a low-rank method is per-layer and declares the rank it keeps, and only such a method",
            )
        if (self.selection == "importance") != (self.importance is not None):
            raise ParameterError(subject, "selects by importance iff it names an importance kind", fix="set both")
        if (self.task_parts is not None) != (self.storage.bits > 0 or self.storage.vectors > 0):
            raise ParameterError(
                subject,
                f"task_parts={self.task_parts is not None} with storage {self.storage}",
                fix="a task-specific method declares what it stores per task, and only such a method",
            )
        if self.iterative and self.scale_parts is None:
            raise ParameterError(subject, "is iterative without scale_parts", fix="separate its final scale")
        unknown = sorted(set(self.cheap) - known)
        if unknown:
            raise ParameterError(f"{self.name}.{unknown[0]}", "is declared cheap but is no parameter", fix="fix cheap")
        if self.scale_parts is not None and len(self.cheap) != 1:
            raise ParameterError(subject, "has scale_parts but not one cheap parameter", fix="declare its scale")
        self._check_grid()

    def _check_grid(self) -> None:
        """Every axis of the Compare grid is a declared parameter, every value in its range."""
        known = {p.name: p for p in self.params}
        for name, values in self.grid.axes:
            if name not in known:
                raise ParameterError(f"{self.name}.{name}", "is a grid axis but no parameter", fix="fix the grid")
            if not values:
                raise ParameterError(f"{self.name}.{name}", "has no grid values", fix="give at least one value")
            for value in values:
                known[name].resolve(value, num_tasks=1, method=self.name)

    @property
    def task_specific(self) -> bool:
        """Whether each task is served by its own model (the task id is needed at inference)."""
        return self.task_parts is not None

    @property
    def keep_panel(self) -> Literal["entries", "ranks"]:
        """What the merge page's "what the method keeps" panel shows: per layer, the rank kept and its energy
        (a low-rank method); else each task's kept share of entries and where the kept signs conflict."""
        return "ranks" if self.keep_rank is not None else "entries"

    @property
    def scale(self) -> Param:
        """The parameter of the final scaled step (λ or α): what a sweep of this method moves."""
        return next(p for p in self.params if p.name == self.cheap[0])

    def sweep_values(self, count: int) -> tuple[float, ...]:
        """`count` values of `scale` evenly over its declared range (from 0 when the range allows negatives)."""
        low, high = max(0.0, self.scale.low), self.scale.high
        return tuple(round(low + (high - low) * i / (count - 1), 6) for i in range(count))

    def common_scale(self, resolved: Mapping[str, Any]) -> float | None:
        """The one value s of the scale in `resolved` params, where `scale_parts` gives the merge (base +
        s·direction): a scalar scale, or a per-task one whose tasks all have the same value; else None."""
        if self.scale_parts is None:
            return None
        value = resolved[self.scale.name]
        if not isinstance(value, torch.Tensor):
            return float(value)
        return float(value[0]) if bool((value == value[0]).all()) else None

    @property
    def expensive(self) -> tuple[str, ...]:
        """The parameters that define the mask, election or drop: changing one recomputes them."""
        return tuple(p.name for p in self.params if p.name not in self.cheap)

    def with_defaults(self, defaults: Mapping[str, float]) -> MergeMethod:
        """The same method with some parameters' defaults replaced (where a page opens it: a collection's chosen
        setting, engine/jobs/warm.py); unknown names are refused."""
        unknown = set(defaults) - {p.name for p in self.params}
        if unknown:
            raise ParameterError(self.name, f"has no parameter {sorted(unknown)}", fix="use its declared names")
        params = tuple(replace(p, default=float(defaults.get(p.name, p.default))) for p in self.params)
        return replace(self, params=params)

    def resolve(self, given: Mapping[str, ParamValue], *, num_tasks: int) -> dict[str, torch.Tensor | float]:
        """Fill defaults, reject unknown names, check ranges and arity."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise UnknownMethodError(
                f"{self.name}.{unknown[0]}", "is not a parameter of this method", fix=f"use one of {sorted(known)}"
            )
        return {
            p.name: p.resolve(given.get(p.name, p.default), num_tasks=num_tasks, method=self.name) for p in self.params
        }

    def kept(
        self, T: torch.Tensor, params: Mapping[str, ParamValue], *, importance: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """The bool [K, P] mask of the entries this method keeps with `params`; None when it keeps them all."""
        return self.kept_resolved(T, self.resolve(params, num_tasks=T.shape[0]), importance=importance)

    def kept_resolved(
        self, T: torch.Tensor, resolved: Mapping[str, Any], *, importance: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """`kept` with the parameters `resolve` gave already (a merge session's plan)."""
        if self.keep_mask is None:
            return None  # keeps every entry (low-rank methods keep directions: `ranks`)
        if self.importance is not None:
            check_importance(self.name, importance, T)
        with read_rows(self, T) as rows:
            return self.keep_mask(rows, resolved, importance)

    def ranks(self, T: torch.Tensor, spec: ParamSpec, params: Mapping[str, ParamValue]) -> tuple[LayerRank, ...]:
        """Per layer, the rank this low-rank method keeps with `params` and the energy share it carries."""
        if self.keep_rank is None:
            raise ParameterError(self.name, "keeps entries, not ranks", fix="read its kept fraction instead")
        return self.keep_rank(T, spec, self.resolve(params, num_tasks=T.shape[0]))


@contextlib.contextmanager
def read_rows(method: MergeMethod, T: Rows) -> Iterator[Rows]:
    """T as `method` reads it (`rows_as_read`) for one call; a T mapped from a built store gives back the pages
    the call left resident when it ends (engine/store/pages.py)."""
    try:
        yield rows_as_read(method, T)
    finally:
        Reader.of(T).release_all()


def rows_as_read(method: MergeMethod, T: Rows, *, facts: MemoryFacts | None = None) -> Rows:
    """T as `method` reads it: T itself, when it is float32 in memory or mapped, or the method `streams`; else
    (a bf16 store's mapping, a store's rows) T as float32 in memory for the call, when that fits `COMFORT` of
    the machine's room (`facts`, default read now), else ParameterError saying what it would need."""
    return T if method.streams else in_memory(T, purpose=f"method {method.name}", facts=facts)


def check_keep(method: MergeMethod, keep: torch.Tensor, T: torch.Tensor) -> None:
    if method.keep_mask is None:
        raise ParameterError(f"{method.name}.keep", "is no masking method", fix="pass keep= only to masking methods")
    if keep.dtype != torch.bool or keep.shape != T.shape:
        raise ParameterError(
            f"{method.name}.keep",
            f"got {keep.dtype} {tuple(keep.shape)}, expected bool {tuple(T.shape)}",
            fix="pass the method's own mask of these task vectors (MergeMethod.kept)",
        )


def check_importance(name: str, importance: torch.Tensor | None, T: torch.Tensor) -> None:
    if importance is None:
        raise ParameterError(
            f"{name}.importance", "needs importance maps", fix="merge through a Workspace, which loads or computes them"
        )
    if importance.dtype != torch.uint8 or importance.shape != T.shape:
        raise ParameterError(
            f"{name}.importance",
            f"got {importance.dtype} {tuple(importance.shape)}, expected uint8 {tuple(T.shape)}",
            fix="pass one code row per task vector",
        )
