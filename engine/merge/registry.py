"""Name → merge method, with declared parameters from which pages build sliders and the CLI parses.

A method is a pure function `fn(theta0 [P], T [K, P], *, out=None, **params) -> [P]`: it never
modifies its inputs, and writes into `out` [P] when the caller passes a buffer to reuse. A method that
declares `importance="tau"` (or "theta") also receives `importance=` uint8 codes [K, P] of that kind of
STA map (engine/sta/codes.py); the Workspace supplies them. Adding one: write its
file, add one `MergeMethod(...)` line to `_ALL`, and add its test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch

from engine.errors import ParameterError, UnknownMethodError
from engine.merge.arithmetic import task_arithmetic
from engine.merge.sparse_methods import dare, dare_ties, magnitude, ties
from engine.merge.sta import sta

ParamValue = float | Sequence[float]


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


_LAM_TA = Param("lam", 0.3, -1.5, 1.5, 0.05, "scaling λ of each task vector", per_task=True, symbol="λ")
_LAM_TIES = Param("lam", 1.0, 0.0, 3.0, 0.05, "scaling λ of the merged vector τ_m", symbol="λ")
_DENSITY = Param("density", 0.2, 0.01, 1.0, 0.01, "fraction d of each task vector kept, by magnitude", symbol="d")
_DROP = Param("drop", 0.9, 0.0, 0.99, 0.01, "drop rate p; survivors are rescaled by 1/(1-p)", symbol="p")
_THRESHOLD = Param(
    "threshold", 0.05, 0.0, 1.0, 0.01, "keep entries whose importance, normalised per tensor, is ≥ κ", symbol="κ"
)
_SEED = Param("seed", 0.0, 0.0, 9999.0, 1.0, "random seed of the drop mask")

_ALL = (
    MergeMethod(
        "task_arithmetic",
        "Task arithmetic",
        "https://arxiv.org/abs/2212.04089",
        (_LAM_TA,),
        task_arithmetic,
        formula="θ = θ₀ + Σₜ λₜ τₜ",
    ),
    MergeMethod(
        "ties",
        "TIES",
        "https://arxiv.org/abs/2306.01708",
        (_DENSITY, _LAM_TIES),
        ties,
        formula="θ = θ₀ + λ τ_m: top-d per task, elected sign, mean of the agreeing entries",
    ),
    MergeMethod(
        "dare",
        "DARE + task arithmetic",
        "https://arxiv.org/abs/2311.03099",
        (_DROP, _LAM_TA, _SEED),
        dare,
        formula="θ = θ₀ + Σₜ λₜ (mₜ ⊙ τₜ)/(1 − p), mₜ ~ Bernoulli(1 − p)",
    ),
    MergeMethod(
        "dare_ties",
        "DARE + TIES",
        "https://arxiv.org/abs/2311.03099",
        (_DROP, _LAM_TIES, _SEED),
        dare_ties,
        formula="TIES's sign election and disjoint mean over DARE's rescaled vectors",
    ),
    MergeMethod(
        "magnitude",
        "Magnitude pruning + task arithmetic",
        "https://arxiv.org/abs/2306.01708",
        (_DENSITY, _LAM_TA),
        magnitude,
        formula="θ = θ₀ + Σₜ λₜ top_d(τₜ)",
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
    ),
)
METHODS: Mapping[str, MergeMethod] = MappingProxyType({m.name: m for m in _ALL})


def get_method(name: str) -> MergeMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownMethodError(
            name, "is not a registered merge method", fix=f"use one of {', '.join(sorted(METHODS))}"
        ) from None


def apply(
    name: str,
    theta0: torch.Tensor,
    T: torch.Tensor,
    params: Mapping[str, ParamValue] | None = None,
    *,
    out: torch.Tensor | None = None,
    importance: torch.Tensor | None = None,
) -> torch.Tensor:
    """Merge with method `name`: θ₀ [P], T [K, P] → θ [P] (new, or `out`; inputs untouched).

    `importance` (uint8 [K, P]) is required by, and only passed to, methods that declare a kind.
    """
    method = get_method(name)
    resolved = method.resolve(params or {}, num_tasks=T.shape[0])
    if method.importance is None:
        return method.fn(theta0, T, out=out, **resolved)
    check_importance(name, importance, T)
    return method.fn(theta0, T, out=out, importance=importance, **resolved)


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
