"""Name → merge method, with declared parameters from which pages build sliders and the CLI parses.

A method is a pure function `fn(theta0 [P], T [K, P], *, out=None, **params) -> [P]`: it never
modifies its inputs, and writes into `out` [P] when the caller passes a buffer to reuse. A method that
declares `importance="tau"` (or "theta") also receives `importance=` uint8 codes [K, P] of that kind of
STA map (engine/sta/codes.py); the Workspace supplies them.

Each entry also declares what the method does, as fields rather than as code that matches its name
(mergekit's generalized task arithmetic describes its methods the same way):
- `selection`: which entries of each task vector it keeps: "none", "magnitude" (top-d), "random_drop"
  (DARE) or "importance" (STA); a masking method gives `keep_mask`, the bool [K, P] mask it applies,
  which the merge page's "what the method keeps" panel and the sign-conflict analysis read; or
  "low_rank" (the subspace methods), which give `keep_rank`: the rank kept per layer and its energy;
- `per_layer`: the method reads T's rows as per-layer matrices, so it is called with `spec=`;
- `sign_election`: "none", or "mass" (TIES: the sign of the summed kept entries wins);
- `cheap`: the parameters that only scale the final step (λ): moving them needs no new mask or
  election; every other parameter (density, drop rate and seed, threshold) defines the expensive part;
- `scale_parts`: the expensive part as (base, direction) [P], the merge being base + s·direction at the
  one cheap parameter s, so the Workspace caches them and a move of s is one pass over [P]. A per-task
  s (DARE's, magnitude's λ) separates only while every task's value is equal (`common_scale`); with
  unequal ones a masking method merges again from its cached mask (`apply(..., keep=)`);
- `iterative`: the expensive part is an optimisation (WUDI's Adam steps): pages run it as a background
  job with progress, and `scale_parts` passes it a `progress(step, steps, loss)` callback.
Adding a method: write its file, add one `MergeMethod(...)` line to `_ALL`, and add its test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, get_args

import torch

from engine.errors import ParameterError, UnknownMethodError
from engine.merge.arithmetic import task_arithmetic
from engine.merge.sparse_methods import (
    dare,
    dare_parts,
    dare_ties,
    dare_ties_parts,
    drop_keep,
    magnitude,
    magnitude_keep,
    magnitude_parts,
    ties,
    ties_parts,
)
from engine.merge.sta import importance_keep, sta, sta_parts
from engine.merge.subspace import (
    LayerRank,
    Memo,
    cart,
    cart_parts,
    cart_ranks,
    iso_c,
    iso_c_parts,
    iso_c_ranks,
    iso_cts,
    iso_cts_parts,
    iso_cts_ranks,
    tsv_m,
    tsv_parts,
    tsv_ranks,
)
from engine.merge.wudi import StepProgress, wudi, wudi_parts
from engine.params import ParamSpec

ParamValue = float | Sequence[float]
Selection = Literal["none", "magnitude", "random_drop", "importance", "low_rank"]
MASKING = ("magnitude", "random_drop", "importance")
SignElection = Literal["none", "mass"]
KeepMask = Callable[[torch.Tensor, Mapping[str, Any], torch.Tensor | None], torch.Tensor | None]
"""(T [K, P], resolved params, importance codes [K, P] or None) → bool [K, P] mask, or None (keeps all)."""
ScaleParts = Callable[..., tuple[torch.Tensor, torch.Tensor]]
"""(θ₀, T, [spec=], [importance=], [keep=], **expensive params) → (base [P], direction [P]) with the merge =
base + s·direction; base is θ₀ itself (not a copy) where the method adds to θ₀."""
KeepRank = Callable[[torch.Tensor, ParamSpec, Mapping[str, Any]], "tuple[LayerRank, ...]"]
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
        if self.iterative and self.scale_parts is None:
            raise ParameterError(subject, "is iterative without scale_parts", fix="separate its final scale")
        unknown = sorted(set(self.cheap) - known)
        if unknown:
            raise ParameterError(f"{self.name}.{unknown[0]}", "is declared cheap but is no parameter", fix="fix cheap")
        if self.scale_parts is not None and len(self.cheap) != 1:
            raise ParameterError(subject, "has scale_parts but not one cheap parameter", fix="declare its scale")

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
        if self.keep_mask is None:
            return None  # keeps every entry (low-rank methods keep directions: `ranks`)
        if self.importance is not None:
            check_importance(self.name, importance, T)
        return self.keep_mask(T, self.resolve(params, num_tasks=T.shape[0]), importance)

    def ranks(self, T: torch.Tensor, spec: ParamSpec, params: Mapping[str, ParamValue]) -> tuple[LayerRank, ...]:
        """Per layer, the rank this low-rank method keeps with `params` and the energy share it carries."""
        if self.keep_rank is None:
            raise ParameterError(self.name, "keeps entries, not ranks", fix="read its kept fraction instead")
        return self.keep_rank(T, spec, self.resolve(params, num_tasks=T.shape[0]))


_LAM_TA = Param("lam", 0.3, -1.5, 1.5, 0.05, "scaling λ of each task vector", per_task=True, symbol="λ")
_LAM_TIES = Param("lam", 1.0, 0.0, 3.0, 0.05, "scaling λ of the merged vector τ_m", symbol="λ")
_DENSITY = Param("density", 0.2, 0.01, 1.0, 0.01, "fraction d of each task vector kept, by magnitude", symbol="d")
_DROP = Param("drop", 0.9, 0.0, 0.99, 0.01, "drop rate p; survivors are rescaled by 1/(1-p)", symbol="p")
_THRESHOLD = Param(
    "threshold", 0.05, 0.0, 1.0, 0.01, "keep entries whose importance, normalised per tensor, is ≥ κ", symbol="κ"
)
_SEED = Param("seed", 0.0, 0.0, 9999.0, 1.0, "random seed of the drop mask")
_ALPHA = Param("alpha", 1.0, 0.0, 3.0, 0.05, "scaling α of the merged task matrices Δ: θ = θ₀ + α·Δ", symbol="α")
_SHARE = Param("share", 0.8, 0.01, 1.0, 0.01, "share f of each layer's directions in the common subspace", symbol="f")
_LAM_CART = Param("lam", 2.0, 0.0, 4.0, 0.05, "scaling λ of the low-rank centred vectors", symbol="λ")
_STEPS = Param("steps", 300.0, 0.0, 1000.0, 10.0, "Adam steps on each layer's interference loss", symbol="n")
_RANK = Param(
    "rank_share", 0.12, 0.01, 1.0, 0.01, "rank kept of each centred vector, as a share ρ of min(out, in)", symbol="ρ"
)

_ALL = (
    MergeMethod(
        "task_arithmetic",
        "Task arithmetic",
        "https://arxiv.org/abs/2212.04089",
        (_LAM_TA,),
        task_arithmetic,
        formula="θ = θ₀ + Σₜ λₜ τₜ",
        cheap=("lam",),
    ),
    MergeMethod(
        "ties",
        "TIES",
        "https://arxiv.org/abs/2306.01708",
        (_DENSITY, _LAM_TIES),
        ties,
        formula="θ = θ₀ + λ τ_m: top-d per task, elected sign, mean of the agreeing entries",
        selection="magnitude",
        sign_election="mass",
        cheap=("lam",),
        keep_mask=magnitude_keep,
        scale_parts=ties_parts,
    ),
    MergeMethod(
        "dare",
        "DARE + task arithmetic",
        "https://arxiv.org/abs/2311.03099",
        (_DROP, _LAM_TA, _SEED),
        dare,
        formula="θ = θ₀ + Σₜ λₜ (mₜ ⊙ τₜ)/(1 − p), mₜ ~ Bernoulli(1 − p)",
        selection="random_drop",
        cheap=("lam",),
        keep_mask=drop_keep,
        scale_parts=dare_parts,
    ),
    MergeMethod(
        "dare_ties",
        "DARE + TIES",
        "https://arxiv.org/abs/2311.03099",
        (_DROP, _LAM_TIES, _SEED),
        dare_ties,
        formula="TIES's sign election and disjoint mean over DARE's rescaled vectors",
        selection="random_drop",
        sign_election="mass",
        cheap=("lam",),
        keep_mask=drop_keep,
        scale_parts=dare_ties_parts,
    ),
    MergeMethod(
        "magnitude",
        "Magnitude pruning + task arithmetic",
        "https://arxiv.org/abs/2306.01708",
        (_DENSITY, _LAM_TA),
        magnitude,
        formula="θ = θ₀ + Σₜ λₜ top_d(τₜ)",
        selection="magnitude",
        cheap=("lam",),
        keep_mask=magnitude_keep,
        scale_parts=magnitude_parts,
    ),
    MergeMethod(
        "sta",
        "STA, |τ ⊙ ∇L| importance",
        "https://arxiv.org/abs/2411.16139",
        (_THRESHOLD, _LAM_TIES),
        sta,
        formula="θ = θ₀ + λ Σₜ [Ĩₜ ≥ κ] ⊙ τₜ, Ĩₜ = |τₜ ⊙ ∇L| normalised per tensor",
        importance="tau",
        provisional=True,
        selection="importance",
        cheap=("lam",),
        keep_mask=importance_keep,
        scale_parts=sta_parts,
    ),
    MergeMethod(
        "sta_theta",
        "STA, |θ ⊙ ∇L| importance",
        "https://arxiv.org/abs/2411.16139",
        (_THRESHOLD, _LAM_TIES),
        sta,
        formula="θ = θ₀ + λ Σₜ [Ĩₜ ≥ κ] ⊙ τₜ, Ĩₜ = |θₜ ⊙ ∇L| normalised per tensor",
        importance="theta",
        provisional=True,
        selection="importance",
        cheap=("lam",),
        keep_mask=importance_keep,
        scale_parts=sta_parts,
    ),
    MergeMethod(
        "tsv_m",
        "TSV-M (task singular vectors)",
        "https://arxiv.org/abs/2412.00081",
        (_ALPHA,),
        tsv_m,
        formula="per layer: top 1/K singular triplets of each τₜ, bases orthogonalised: Δ = U⊥ Ŝ V⊥ᵀ; θ = θ₀ + α Δ",
        selection="low_rank",
        cheap=("alpha",),
        keep_rank=tsv_ranks,
        per_layer=True,
        scale_parts=tsv_parts,
    ),
    MergeMethod(
        "iso_c",
        "Iso-C (isotropic merging)",
        "https://arxiv.org/abs/2502.04959",
        (_ALPHA,),
        iso_c,
        formula="per layer: Σₜ τₜ = U S Vᵀ with every singular value set to their mean: Δ = s̄ U Vᵀ; θ = θ₀ + α Δ",
        selection="low_rank",
        cheap=("alpha",),
        keep_rank=iso_c_ranks,
        per_layer=True,
        scale_parts=iso_c_parts,
    ),
    MergeMethod(
        "iso_cts",
        "Iso-CTS (common and task-specific subspaces)",
        "https://arxiv.org/abs/2502.04959",
        (_ALPHA, _SHARE),
        iso_cts,
        formula="per layer: top directions of Σₜ τₜ + each task's own outside them, orthogonalised, isotropic",
        selection="low_rank",
        cheap=("alpha",),
        keep_rank=iso_cts_ranks,
        per_layer=True,
        scale_parts=iso_cts_parts,
    ),
    MergeMethod(
        "cart",
        "CART (centred low-rank task vectors)",
        "https://arxiv.org/abs/2412.12153",
        (_LAM_CART, _RANK),
        cart,
        formula="θ = θ̄ + λ Σₜ LR_r(θₜ − θ̄), θ̄ the mean of the fine-tuned models",
        selection="low_rank",
        cheap=("lam",),
        keep_rank=cart_ranks,
        per_layer=True,
        scale_parts=cart_parts,
    ),
    MergeMethod(
        "wudi",
        "WUDI (interference minimised per layer)",
        "https://arxiv.org/abs/2503.08099",
        (_ALPHA, _STEPS),
        wudi,
        formula="per layer: τ_m = argmin Σₜ ‖(τ_m − τₜ) τₜᵀ‖² / ‖τₜ‖², n Adam steps from Σₜ τₜ; θ = θ₀ + α τ_m",
        cheap=("alpha",),
        per_layer=True,
        scale_parts=wudi_parts,
        iterative=True,
    ),
)
METHODS: Mapping[str, MergeMethod] = MappingProxyType({m.name: m for m in _ALL})


def get_method(name: str | MergeMethod) -> MergeMethod:
    """The registered method of that name (a `MergeMethod` given instead is returned as it is)."""
    if isinstance(name, MergeMethod):
        return name
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownMethodError(
            name, "is not a registered merge method", fix=f"use one of {', '.join(sorted(METHODS))}"
        ) from None


def apply(
    name: str | MergeMethod,
    theta0: torch.Tensor,
    T: torch.Tensor,
    params: Mapping[str, ParamValue] | None = None,
    *,
    out: torch.Tensor | None = None,
    importance: torch.Tensor | None = None,
    spec: ParamSpec | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Merge with method `name`: θ₀ [P], T [K, P] → θ [P] (new, or `out`; inputs untouched).

    `importance` (uint8 [K, P]) is required by, and only passed to, methods that declare a kind;
    `spec` likewise for per-layer methods (which read T's rows as matrices). `keep`, only for a masking
    method, is its mask `method.kept(T, params)` computed before (a cache's): the merge then skips
    computing it (and needs no importance).
    """
    method = get_method(name)
    resolved = method.resolve(params or {}, num_tasks=T.shape[0])
    if method.per_layer:
        if spec is None or spec.numel != T.shape[1]:
            raise ParameterError(
                f"{method.name}.spec",
                "needs the ParamSpec of T's columns (it merges layer by layer)",
                fix="pass spec=, or merge through a Workspace",
            )
        resolved["spec"] = spec
    return method.fn(theta0, T, out=out, **resolved, **_mask_inputs(method, T, importance, keep))


def _mask_inputs(
    method: MergeMethod, T: torch.Tensor, importance: torch.Tensor | None, keep: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The `keep=` mask when given (checked), else the `importance=` codes a method that selects by them needs."""
    if keep is not None:
        check_keep(method, keep, T)
        return {"keep": keep}
    if method.importance is None:
        return {}
    check_importance(method.name, importance, T)
    return {"importance": importance}


def scale_parts(
    name: str | MergeMethod,
    theta0: torch.Tensor,
    T: torch.Tensor,
    params: Mapping[str, ParamValue] | None = None,
    *,
    spec: ParamSpec | None = None,
    progress: StepProgress | None = None,
    memo: Memo | None = None,
    importance: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(base, direction) [P] of a method with `scale_parts`: the merge at its cheap scale s is base + s·direction
    (for a per-task s, with every task at s). An iterative method reports each step to `progress` (which may
    raise to cancel); others ignore it. A per-layer method keeps the factorizations its parameters do not
    change in `memo` when given. `importance` and `keep` are as for `apply`."""
    method = get_method(name)
    if method.scale_parts is None:
        raise ParameterError(method.name, "has no separable final scale", fix="merge it with apply()")
    resolved = method.resolve(params or {}, num_tasks=T.shape[0])
    for cheap in method.cheap:
        resolved.pop(cheap)
    if method.per_layer:
        resolved["spec"] = spec
        if memo is not None:
            resolved["memo"] = memo
    if method.iterative and progress is not None:
        resolved["progress"] = progress
    return method.scale_parts(theta0, T, **resolved, **_mask_inputs(method, T, importance, keep))


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
