"""What an evaluation runs on: one image-tower template, the tasks' images and their zero-shot heads.

Kept apart from engine/eval/evaluate.py so the linearized model (engine/eval/tangent.py), which
evaluate.py uses, can take a suite without an import circle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from engine.data.tasks import TaskData
from engine.models import Preprocess
from engine.params import ParamSpec

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class EvalSuite:
    """An image-tower template plus the tasks' images and heads, all on one device.

    `functional_call` swaps the weights into the shared template for the duration of a forward, so
    two threads using it at once (Streamlit's fast reruns, several sessions on one cached suite) would
    run with each other's weights; `lock` serialises the forwards.
    """

    visual: nn.Module  # fp32, eval mode; its own weights are never used
    spec: ParamSpec
    preprocess: Preprocess
    tasks: Mapping[str, TaskData]
    heads: Mapping[str, torch.Tensor]  # task → [C, E]
    linearized_at: torch.Tensor | None = field(default=None, repr=False, compare=False)  # θ₀ [P] or None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(self.tasks)

    def linearized(self, theta0: torch.Tensor) -> EvalSuite:
        """The same suite (template, images, heads and lock) evaluating f_lin around θ₀ [P]."""
        return replace(self, linearized_at=theta0, lock=self.lock)

    def network(self) -> EvalSuite:
        """The same suite evaluating the network f(x; θ) itself."""
        return replace(self, linearized_at=None, lock=self.lock)
