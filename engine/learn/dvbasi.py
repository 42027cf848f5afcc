"""DV-BASI: learn a per-block scale of the difference vector δ = θ_cur − θ₀, move, repeat
(Wang, Gao, Zhang, Xie, AAAI-26, Alg. 1 and Eq. 2-5).

Each outer iteration j learns λⱼ [n_blocks] (init 0, so it starts exactly at θ_cur; their code starts
at 0.1) with θ = θ_cur + λⱼ ⊙ δⱼ, stops when the objective on the fit part stagnates (patience), as
their code does (the paper says val accuracy; on the zoo, an inner loop judged by selection accuracy
never left an aTLAS start that was itself chosen on that accuracy), then θ_cur ← θ_cur + λⱼ* ⊙ δⱼ. Hence δⱼ₊₁ = (1
+ λⱼ) ⊙ δⱼ and after M iterations θ_M = θ₀ + D ⊙ δ₀ with D_b = Πⱼ (1 + λⱼ⁽ᵇ⁾) (unrolling Alg. 1): no new
expressivity, only optimisation dynamics. The best iteration is chosen on the selection part of val,
never on test (their code scores iterations on test).
Ablations: `scaling="isotropic"` learns one scalar per iteration (a line search along δ₀);
`direction="random"` learns the same per-block scales along a random Gaussian direction rescaled to
‖δⱼ‖ (our reading of the paper's "random perturbation of the same norm" control, Table 1), which
shows whether δ's direction is what helps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch

from engine.errors import ParameterError
from engine.eval.suite import EvalSuite
from engine.learn.coefficients import (
    EpochRecord,
    LearnConfig,
    ValSplit,
    block_sizes,
    combine,
    learn_coefficients,
    selection_accuracy,
)
from engine.params import ParamSpec


@dataclass(frozen=True)
class DvBasiConfig:
    iterations: int = 4
    scaling: Literal["blockwise", "isotropic"] = "blockwise"
    direction: Literal["difference", "random"] = "difference"
    learn: LearnConfig = field(default_factory=lambda: LearnConfig(patience=5, select_by="fit_loss"))

    def __post_init__(self) -> None:
        self.check()  # a config that exists is valid

    def check(self) -> None:
        if self.iterations < 1:
            raise ParameterError("iterations", f"invalid setting {self.iterations!r}", fix="run at least 1 iteration")
        if self.scaling not in ("blockwise", "isotropic") or self.direction not in ("difference", "random"):
            raise ParameterError(
                "scaling/direction",
                f"invalid setting {self.scaling!r}/{self.direction!r}",
                fix="scaling: blockwise or isotropic; direction: difference or random",
            )
        self.learn.check()


@dataclass(frozen=True)
class Iteration:
    index: int  # 1-based
    delta_norm: float  # ‖δⱼ‖ (of the direction actually scaled)
    scales: torch.Tensor  # λⱼ* [n_blocks]
    selection: Mapping[str, float]  # per-task selection accuracy after the move
    epochs: tuple[EpochRecord, ...]

    @property
    def mean_selection(self) -> float:
        return sum(self.selection.values()) / len(self.selection)


@dataclass(frozen=True)
class DvBasiResult:
    theta: torch.Tensor  # [P] the best point (start included) by mean selection accuracy
    best_iteration: int  # 0: the start was never beaten
    start_selection: Mapping[str, float]
    iterations: tuple[Iteration, ...]


def dv_basi(
    suite: EvalSuite,
    theta0: torch.Tensor,
    start: torch.Tensor,
    spec: ParamSpec,
    *,
    data: ValSplit,
    config: DvBasiConfig = DvBasiConfig(),
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
    on_iteration: Callable[[Iteration], None] | None = None,
) -> DvBasiResult:
    """Iterate from `start` [P] (a merged model); every point is scored on `data.select` only."""
    sizes = block_sizes(spec) if config.scaling == "blockwise" else torch.tensor([spec.numel])
    generator = torch.Generator().manual_seed(config.learn.seed)
    current = start.detach()
    start_selection = selection_accuracy(suite, current, data.select)
    best = (sum(start_selection.values()) / len(start_selection), 0, current)
    iterations = []
    for j in range(1, config.iterations + 1):
        direction = _direction(current - theta0, config.direction, generator)  # [P]
        learned = learn_coefficients(
            suite,
            current,
            direction[None],
            sizes,
            data=data,
            config=config.learn,
            on_epoch=None if on_epoch is None else (lambda r, j=j: on_epoch(j, r)),
        )
        with torch.no_grad():
            current = combine(current, direction[None], learned.coefficients, sizes)  # [P]
        record = Iteration(
            j,
            float(direction.norm()),
            learned.coefficients[0].detach().cpu(),
            selection_accuracy(suite, current, data.select),
            learned.history,
        )
        iterations.append(record)
        if on_iteration is not None:
            on_iteration(record)
        if record.mean_selection > best[0]:
            best = (record.mean_selection, j, current)
    return DvBasiResult(best[2], best[1], start_selection, tuple(iterations))


def _direction(delta: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    if kind == "difference":
        return delta
    noise = torch.randn(delta.shape, generator=generator).to(delta)  # [P]
    return noise * (delta.norm() / noise.norm())
