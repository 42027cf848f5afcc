"""A merge as a pipeline: a base method, then calibrators that read its merged update (and the task vectors).

A calibrator is declared like a method: its parameters (namespaced in a merge's parameters as `svc.alpha`, so
they never meet the base method's own α), which of them are cheap, whether it reads the task vectors, whether it
is linear in the update, its expensive part `prepare(D, T, spec, **expensive)` (kept in the merge session's
cache, keyed by the base merge's parts and every step before it) and `apply(prepared, D, s, spec, **params)`,
which returns the update for Δ = s·D. A linear step (LiNeS) returns its result unscaled with s kept apart, so a
later step still separates the base's scale: a λ move then rebuilds from cached factors (engine/merge/session.py).

Transforms of the task vectors before the base merge (LARV, 2602.09413: per-layer scales on each task vector) have
no module here: its per-layer scale rule could not be pinned down from the public abstract, and a guessed one
would not be LARV. `--transform` is therefore refused by name until one is declared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

from engine.errors import UnknownMethodError
from engine.merge.calibrators import lines, lines_depth_fraction, svc, svc_factors
from engine.merge.declaration import Param, ParamValue
from engine.merge.registry import METHODS, get_method
from engine.params import ParamSpec


@dataclass(frozen=True)
class Calibrator:
    name: str
    display_name: str
    paper_url: str
    params: tuple[Param, ...]
    prepare: Callable[..., Any]  # (D [P], T [K, P], spec, **expensive params) → cached parts
    apply: Callable[..., torch.Tensor]  # (parts, D [P], s, spec, **params) → update [P] (linear: of D alone)
    formula: str = ""
    cheap: tuple[str, ...] = ()  # moving these reuses `prepare`'s parts
    reads_tasks: bool = False  # reads the task vectors (the task store), not only the merged update
    linear: bool = False  # linear in the update: returns f(D) with the scale s kept apart
    grid: tuple[tuple[str, tuple[float, ...]], ...] = ()  # added to the base's Compare grid (others at default)

    @property
    def short_name(self) -> str:
        """`SVC`: the display name without its gloss."""
        return self.display_name.split(" (")[0]

    @property
    def expensive(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if p.name not in self.cheap)

    def resolve(self, given: Mapping[str, ParamValue]) -> dict[str, float]:
        """Defaults filled, names and ranges checked (errors name `svc.alpha`)."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise UnknownMethodError(
                f"{self.name}.{unknown[0]}", "is not a parameter of this calibrator", fix=f"use one of {sorted(known)}"
            )
        return {p.name: p.resolve(given.get(p.name, p.default), num_tasks=1, method=self.name) for p in self.params}


def _lines_prepare(direction: torch.Tensor, T: torch.Tensor, spec: ParamSpec) -> torch.Tensor:
    return lines_depth_fraction(spec).to(direction.device)  # [P]


def _lines_apply(
    fraction: torch.Tensor, direction: torch.Tensor, scale: float, spec: ParamSpec, *, alpha: float, beta: float
) -> torch.Tensor:
    return lines(direction, fraction, alpha=alpha, beta=beta)  # linear: the scale stays apart


def _svc_prepare(direction: torch.Tensor, T: torch.Tensor, spec: ParamSpec) -> Any:
    return svc_factors(direction, T, spec)


def _svc_apply(layers: Any, direction: torch.Tensor, scale: float, spec: ParamSpec, *, alpha: float) -> torch.Tensor:
    return svc(direction, layers, spec, scale=scale, alpha=alpha)


LINES = Calibrator(
    "lines",
    "LiNeS (layer-increasing scaling)",
    "https://arxiv.org/abs/2410.17146",
    (
        Param("alpha", 1.0, 0.0, 2.0, 0.05, "scale of the first layer's update", symbol="α"),
        Param("beta", 0.0, -1.0, 2.0, 0.05, "added scale at the last layer, linear in depth", symbol="β"),
    ),
    _lines_prepare,
    _lines_apply,
    formula="Δ(ℓ) ← (α + β(ℓ−1)/(L−1))·Δ(ℓ); embeddings and ln_pre at depth 1, ln_post and proj at depth L",
    cheap=("alpha", "beta"),
    linear=True,
    # our choice: α = 1, β = 0 is the base itself (val never picks worse); α = 0.5 keeps the shallow layers closer
    # to θ₀, the paper's point, with the deep ones at 0.5 to 1.5 of the base's update
    grid=(("alpha", (0.5, 1.0)), ("beta", (0.0, 0.5, 1.0))),
)
SVC = Calibrator(
    "svc",
    "SVC (singular value calibration)",
    "https://arxiv.org/abs/2602.05536",
    (Param("alpha", 1.0, 0.0, 5.0, 0.05, "floor α of each task's over-counting s_r^i", symbol="α"),),
    _svc_prepare,
    _svc_apply,
    formula="per layer Δ = U S Vᵀ; s_r ← γ_r s_r, γ_r = K / Σᵢ max(α, ⟨uᵣᵀΔ, uᵣᵀτᵢ⟩/‖uᵣᵀτᵢ‖²)",
    cheap=("alpha",),
    reads_tasks=True,
    grid=(("alpha", (0.5, 1.0, 2.0)),),  # our choice: around the paper's default floor α = 1
)
CALIBRATORS: Mapping[str, Calibrator] = MappingProxyType({c.name: c for c in (LINES, SVC)})
TRANSFORMS: Mapping[str, Any] = MappingProxyType({})  # none declared: see the module docstring (LARV)


def get_calibrator(name: str) -> Calibrator:
    try:
        return CALIBRATORS[name]
    except KeyError:
        raise UnknownMethodError(
            name, "is not a calibrator", fix=f"use one of {', '.join(sorted(CALIBRATORS))}"
        ) from None


def check_transforms(names: Sequence[str]) -> None:
    """Refuse any transform by name: none is declared yet (LARV's rule could not be pinned down)."""
    for name in names:
        if name not in TRANSFORMS:
            raise UnknownMethodError(
                name,
                "is not a declared transform (LARV's per-layer rule could not be pinned down from its paper)",
                fix="merge without --transform",
            )


def split_params(
    params: Mapping[str, ParamValue], calibrators: Sequence[str]
) -> tuple[dict[str, ParamValue], dict[str, dict[str, ParamValue]]]:
    """A merge's parameters → (the base method's, {calibrator: its own}): `svc.alpha` goes to SVC as `alpha`."""
    base: dict[str, ParamValue] = {}
    steps: dict[str, dict[str, ParamValue]] = {name: {} for name in calibrators}
    for key, value in params.items():
        prefix, dot, name = key.partition(".")
        if not dot:
            base[key] = value
        elif prefix in steps:
            steps[prefix][name] = value
        else:
            raise UnknownMethodError(
                key, f"names no calibrator of this merge ({', '.join(calibrators) or 'none'})", fix="add it or drop it"
            )
    return base, steps


PIPE = "+"  # a pipeline's name: the base method, then its calibrators in order (`tsv_m+svc`)


def pipeline_name(method: str, calibrate: Sequence[str] = ()) -> str:
    """The one name of a base method followed by calibrators, as a method is named in jobs, runs and links."""
    return PIPE.join((method, *calibrate))


def parse_pipeline(name: str) -> tuple[str, tuple[str, ...]]:
    """`tsv_m+svc` → ("tsv_m", ("svc",)); each calibrator checked (UnknownMethodError names it)."""
    base, *steps = name.split(PIPE)
    for step in steps:
        get_calibrator(step)
    return base, tuple(steps)


def pipeline_display(name: str) -> str:
    """A method's display name; a pipeline's short names in order (`TSV-M → SVC`)."""
    base, steps = parse_pipeline(name)
    shown = get_method(base).display_name
    return " → ".join((shown.split(" (")[0], *(CALIBRATORS[s].short_name for s in steps))) if steps else shown


def qualified_params(calibrate: Sequence[str]) -> tuple[tuple[str, Param], ...]:
    """Each calibrator's parameters under their namespaced names (`svc.alpha`), in order."""
    return tuple((f"{name}.{p.name}", p) for name in calibrate for p in get_calibrator(name).params)


def pipeline_grid(name: str, base_grid: Mapping[str, Sequence[float]]) -> dict[str, tuple[float, ...]]:
    """A pipeline's Compare grid: the base method's axes, then each calibrator's declared axes (`svc.alpha`)."""
    _, steps = parse_pipeline(name)
    qualified = {f"{s}.{axis}": values for s in steps for axis, values in get_calibrator(s).grid}
    return {**{k: tuple(v) for k, v in base_grid.items()}, **qualified}


def calibrated_pipelines() -> tuple[str, ...]:
    """Every single-model method with a Compare grid followed by one calibrator: what Compare offers as rows."""
    single = [name for name, m in METHODS.items() if m.grid.axes and not m.task_specific]
    return tuple(pipeline_name(m, (c,)) for m in single for c in CALIBRATORS)
