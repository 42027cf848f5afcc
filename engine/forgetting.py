"""Task negation (forgetting): θ = θ₀ − α·τ_target (Ilharco et al., ICLR 2023, §3).

Protocol (the papers', range widened as the forgetting issue asks): sweep α over linspace(0, 2, 41);
the target accuracy is the forgotten task's, the control accuracy the mean over the other tasks; the
chosen α minimises target accuracy while control stays ≥ 95% of the pretrained model's control
accuracy (ties: the smaller α). STA's masked negation joins here once importance maps exist.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.evaluate import Progress, evaluate
from engine.merge.kernels import weighted_sum
from engine.workspace import Workspace

ALPHAS = tuple(round(i * 0.05, 2) for i in range(41))
CONTROL_FLOOR = 0.95


@dataclass(frozen=True)
class ForgettingCurve:
    target: str
    controls: tuple[str, ...]
    split: str
    alphas: tuple[float, ...]
    target_accuracy: tuple[float, ...]
    control_accuracy: tuple[float, ...]       # mean over the control tasks

    @property
    def pretrained_control(self) -> float:
        return self.control_accuracy[self.alphas.index(0.0)] if 0.0 in self.alphas else self.control_accuracy[0]

    def chosen_index(self, *, floor: float = CONTROL_FLOOR) -> int:
        """argmin target accuracy subject to control ≥ floor × pretrained control; the smaller α on ties."""
        allowed = [i for i, c in enumerate(self.control_accuracy) if c >= floor * self.pretrained_control]
        return min(allowed, key=lambda i: (self.target_accuracy[i], self.alphas[i]))

    @property
    def chosen_alpha(self) -> float:
        return self.alphas[self.chosen_index()]


def negate(workspace: Workspace, target: str, alpha: float) -> torch.Tensor:
    """θ₀ − α·τ_target [P]."""
    m = workspace.matrix
    row = m.task_names.index(target)
    return weighted_sum(m.theta0, m.T[row:row + 1], torch.tensor([-alpha]))


def negation_curve(workspace: Workspace, target: str, *, alphas: Sequence[float] = ALPHAS,
                   controls: Sequence[str] | None = None, split: str = "val",
                   progress: Progress | None = None) -> ForgettingCurve:
    """Target and mean control accuracy of θ₀ − α·τ_target for each α."""
    controls = tuple(controls or [t for t in workspace.task_names if t != target])
    targets, control_means = [], []
    for i, alpha in enumerate(alphas):
        result = evaluate(negate(workspace, target, alpha), workspace.suite, split, tasks=(target, *controls))
        targets.append(result.accuracy[target])
        control_means.append(sum(result.accuracy[t] for t in controls) / len(controls))
        if progress is not None:
            progress((i + 1) / len(alphas), f"α = {alpha:g}")
    return ForgettingCurve(target, controls, split, tuple(alphas), tuple(targets), tuple(control_means))
