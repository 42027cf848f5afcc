"""Forgetting by negation: θ = θ₀ − α·v, with v the target's task vector or its important part.

- Task arithmetic (Ilharco et al., ICLR 2023, §3): v = τ_target.
- STA forgetting (Tian, Lai et al., arXiv 2411.16139; provisional definition, see engine/sta/importance.py):
  v = m ⊙ τ_target. The review we rely on cuts off at forgetting, so the mask is ours. Negation acts
  at θ₀, so importance is taken there: the first-order Taylor change of task c's loss when entry i of
  the subtracted vector is applied, Iᶜᵢ = |xᵢ| · E|∂L_c/∂θᵢ(θ₀)| with x = τ_target ("sta") or x = θ₀
  ("sta_theta"), each normalised per tensor to Ĩᶜ. The mask keeps entries important to the target and
  not to the controls ("cross-masking"): m = [Ĩᵗ ≥ κ] ∧ [Ĩᵗ ≥ ρ · maxᶜ Ĩᶜ] over the control tasks.
  ρ = 0 drops the cross condition; κ = ρ = 0 is task-arithmetic negation. On the demo zoo the
  target-only mask (ρ = 0) forgot no better than task arithmetic, because the zoo's tasks share
  features; the cross condition is what makes forgetting precise there (bench/results/forgetting_zoo.json).
Protocol (the papers', range widened because masked vectors are smaller): sweep α over
linspace(0, 2, 41); the target accuracy is the forgotten task's, the control accuracy the mean over
the other tasks (or the ones given); the chosen α minimises target accuracy while control stays ≥ 95%
of the pretrained model's control accuracy (ties: the smaller α); reports choose on val, report on test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

import torch

from engine.errors import UnknownMethodError
from engine.eval.evaluate import evaluate
from engine.eval.suite import EvalSuite, Progress
from engine.merge.kernels import weighted_sum
from engine.params import TaskMatrix
from engine.sta.codes import decode
from engine.sta.importance import normalize_per_tensor

ALPHAS = tuple(round(i * 0.05, 2) for i in range(41))
CONTROL_FLOOR = 0.95
STA_THRESHOLD = 0.1  # κ
STA_MARGIN = 2.0  # ρ (κ and ρ chosen on val: bench/forgetting_settings_zoo.py)
NEGATIONS: Mapping[str, str] = MappingProxyType(  # the ways to forget a task: not merge methods (merge.METHODS)
    {
        "task_arithmetic": "Task arithmetic negation",
        "sta": "STA masked negation, |τ ⊙ ∇L| (provisional definition)",
        "sta_theta": "STA masked negation, |θ ⊙ ∇L| (provisional definition)",
    }
)


class ImportanceCodes(Protocol):
    """STA maps by kind (engine/sta/store.py's ImportanceStore is one)."""

    def codes(self, kind: str) -> torch.Tensor: ...  # uint8 [K, P]


class ForgettingSource(Protocol):
    """What negation needs of an opened collection (the Workspace is one): its task matrix, the
    evaluation suite, the STA sensitivity maps at θ₀ and the pretrained model's accuracies."""

    @property
    def matrix(self) -> TaskMatrix: ...

    @property
    def task_names(self) -> tuple[str, ...]: ...

    @property
    def suite(self) -> EvalSuite: ...

    @property
    def importance(self) -> ImportanceCodes: ...

    def zero_shot(self, split: str) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class ForgettingCurve:
    target: str
    controls: tuple[str, ...]
    split: str
    alphas: tuple[float, ...]
    target_accuracy: tuple[float, ...]
    control_accuracy: tuple[float, ...]  # mean over the control tasks
    method: str = "task_arithmetic"
    threshold: float | None = None  # κ of STA methods
    margin: float | None = None  # ρ of STA methods

    @property
    def pretrained_control(self) -> float:
        return self.control_accuracy[self.alphas.index(0.0)] if 0.0 in self.alphas else self.control_accuracy[0]

    @property
    def pretrained_target(self) -> float:
        return self.target_accuracy[self.alphas.index(0.0)] if 0.0 in self.alphas else self.target_accuracy[0]

    def chosen_index(self, *, floor: float = CONTROL_FLOOR) -> int:
        """argmin target accuracy subject to control ≥ floor × pretrained control; the smaller α on ties."""
        allowed = [i for i, c in enumerate(self.control_accuracy) if c >= floor * self.pretrained_control]
        return min(allowed, key=lambda i: (self.target_accuracy[i], self.alphas[i]))

    @property
    def chosen_alpha(self) -> float:
        return self.alphas[self.chosen_index()]

    def nearest_index(self, alpha: float) -> int:
        """The sweep point nearest α: a slider stepping on the sweep's grid reads its numbers, no evaluation."""
        return min(range(len(self.alphas)), key=lambda i: abs(self.alphas[i] - alpha))


def forgetting_vector(
    workspace: ForgettingSource,
    target: str,
    *,
    method: str = "task_arithmetic",
    threshold: float = STA_THRESHOLD,
    margin: float = STA_MARGIN,
    controls: Sequence[str] | None = None,
) -> torch.Tensor:
    """v [P]: τ_target, or its entries important to the target and not to the controls (STA methods)."""
    if method not in NEGATIONS:
        raise UnknownMethodError(method, "is not a forgetting method", fix=f"use one of {', '.join(NEGATIONS)}")
    m = workspace.matrix
    row = workspace.task_names.index(target)
    tau = m.row(target)  # [P]
    if method == "task_arithmetic":
        return tau
    sensitivity = workspace.importance.codes("grad0")  # uint8 [K, P]: E|∇L_c(θ₀)|, normalised per tensor
    x = (tau if method == "sta" else m.theta0).abs()  # [P]
    own = normalize_per_tensor(x * decode(sensitivity[row]), m.spec)  # [P] Ĩᵗ
    keep = own >= threshold  # [P]
    if margin > 0:
        for control in _controls(workspace, target, controls):  # one [P] pass per control task
            other = normalize_per_tensor(x * decode(sensitivity[workspace.task_names.index(control)]), m.spec)
            keep &= own >= margin * other
    return tau * keep


def negate(
    workspace: ForgettingSource,
    target: str,
    alpha: float,
    *,
    method: str = "task_arithmetic",
    threshold: float = STA_THRESHOLD,
    margin: float = STA_MARGIN,
    controls: Sequence[str] | None = None,
) -> torch.Tensor:
    """θ₀ − α·v [P]."""
    v = forgetting_vector(workspace, target, method=method, threshold=threshold, margin=margin, controls=controls)
    return subtract(workspace, v, alpha)


def subtract(workspace: ForgettingSource, v: torch.Tensor, alpha: float) -> torch.Tensor:
    """θ₀ − α·v [P] for a vector v [P] already built (pages keep v while α moves)."""
    return weighted_sum(workspace.matrix.theta0, v[None], torch.tensor([-alpha]))


def negation_curve(
    workspace: ForgettingSource,
    target: str,
    *,
    method: str = "task_arithmetic",
    threshold: float = STA_THRESHOLD,
    margin: float = STA_MARGIN,
    alphas: Sequence[float] = ALPHAS,
    controls: Sequence[str] | None = None,
    split: str = "val",
    progress: Progress | None = None,
) -> ForgettingCurve:
    """Target and mean control accuracy of θ₀ − α·v for each α."""
    controls = _controls(workspace, target, controls)
    v = forgetting_vector(
        workspace, target, method=method, threshold=threshold, margin=margin, controls=controls
    )  # [P]
    targets, control_means = [], []
    for i, alpha in enumerate(alphas):
        result = evaluate(subtract(workspace, v, alpha), workspace.suite, split, tasks=(target, *controls))
        targets.append(result.accuracy[target])
        control_means.append(_mean_over(result.accuracy, controls))
        if progress is not None:
            progress((i + 1) / len(alphas), f"α = {alpha:g}")
    sta = method != "task_arithmetic"
    return ForgettingCurve(
        target,
        controls,
        split,
        tuple(alphas),
        tuple(targets),
        tuple(control_means),
        method=method,
        threshold=threshold if sta else None,
        margin=margin if sta else None,
    )


def _controls(workspace: ForgettingSource, target: str, controls: Sequence[str] | None) -> tuple[str, ...]:
    return tuple(controls or [t for t in workspace.task_names if t != target])


@dataclass(frozen=True)
class ForgettingOutcome:
    """A curve's chosen α (on its split) applied and reported on another split (test)."""

    target: str
    method: str
    threshold: float | None
    margin: float | None
    alpha: float
    split: str
    target_accuracy: float
    control_accuracy: float
    pretrained_target: float
    pretrained_control: float
    chance: float

    @property
    def control_ratio(self) -> float:
        return self.control_accuracy / self.pretrained_control

    @property
    def halfway_to_chance(self) -> bool:
        """The target fell at least half the way from the pretrained model's accuracy to chance."""
        return self.target_accuracy <= self.pretrained_target - 0.5 * (self.pretrained_target - self.chance)

    @property
    def succeeded(self) -> bool:
        return self.halfway_to_chance and self.control_ratio >= CONTROL_FLOOR


def forgetting_outcome(
    workspace: ForgettingSource, curve: ForgettingCurve, *, split: str = "test"
) -> ForgettingOutcome:
    """Evaluate θ₀ − α*·v at the curve's chosen α* on `split`, beside the pretrained model there."""
    alpha = curve.chosen_alpha
    settings = {} if curve.method == "task_arithmetic" else {"threshold": curve.threshold, "margin": curve.margin}
    theta = negate(workspace, curve.target, alpha, method=curve.method, controls=curve.controls, **settings)
    acc = evaluate(theta, workspace.suite, split, tasks=(curve.target, *curve.controls)).accuracy
    pre = workspace.zero_shot(split)
    return ForgettingOutcome(
        curve.target,
        curve.method,
        curve.threshold,
        curve.margin,
        alpha,
        split,
        acc[curve.target],
        _mean_over(acc, curve.controls),
        pre[curve.target],
        _mean_over(pre, curve.controls),
        chance=1.0 / len(workspace.suite.tasks[curve.target].class_names),
    )


def _mean_over(accuracy: Mapping[str, float], tasks: Sequence[str]) -> float:
    return sum(accuracy[t] for t in tasks) / len(tasks)
