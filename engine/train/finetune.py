"""Fine-tuning an image tower against a frozen zero-shot head: standard, linearized, and τJp-regularised.

Only the image tower trains; the head is the task's zero-shot head from the pretrained text tower, so
the task vector τ = θ − θ₀ lives entirely in the image tower and merges by task arithmetic (Ilharco et
al., ICLR 2023, §2). One flat parameter θ [P], started at θ₀, is trained in every mode:
- standard:   f(x; θ) through `functional_call`.
- linearized: f_lin(x; θ) = f(x; θ₀) + J_θ f(x; θ₀)·(θ − θ₀) through `torch.func.jvp` (Ortiz-Jiménez
              et al., NeurIPS 2023, Eq. 3); gradients flow back through the tangent.
- lora:       f(x; θ₀ + s·B·A) with only the low-rank factors trained (engine/train/lora.py; Hu et al., ICLR
              2022, Eq. 3), saved as a PEFT adapter by the job.
- tau_jp:     linearized, with loss CE + β·R, R = mean over other tasks' images x of ‖J f(x; θ₀)·(θ − θ₀)‖₂
              (Yoshida et al., ICLR 2025; the unsquared norm on the raw embedding, as in their code).
              "strict" takes a batch from every other task each step; "cyclic" (their Eq. 11) one other
              task per step, in turn. The task batch and the penalty images share one JVP call.
Loss: cross-entropy on head @ normalize(f); AdamW (weight decay on θ, as for the standard model) with
linear warm-up then cosine decay. Our choices where the τJp paper's settings do not fit the zoo (they use
lr 1e-5, 500 warm-up steps, ~2k+ steps per task, 16 images per other task): the penalty images come
from the other tasks' *train* splits (the paper uses their val splits; we keep val for choosing λ), 8
per other task per step, and steps/lr are scaled to the zoo (engine/zoo/variants.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from engine.data.tasks import LabelledImages, normalize_batch
from engine.errors import ParameterError
from engine.eval.tangent import forward_mode_ad, trainable_embedding
from engine.models import Preprocess
from engine.params import ParamSpec, flatten, unflatten
from engine.train.lora import DEFAULT_TARGETS, LORA_TARGETS, LoraUpdate

Mode = Literal["standard", "linearized", "tau_jp", "lora"]
MODES: dict[str, str] = {
    "standard": "standard (non-linear)",
    "linearized": "linearized",
    "tau_jp": "linearized + τJp penalty",
    "lora": "LoRA (low rank)",
}
PENALTY_SCHEDULES = ("strict", "cyclic")
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class FinetuneConfig:
    mode: Mode = "standard"
    steps: int = 300
    batch_size: int = 128
    lr: float = 3e-4
    weight_decay: float = 0.1
    warmup_steps: int = 20
    beta: float = 0.1  # τJp penalty weight (mode tau_jp); not the merge coefficient λ
    penalty: str = "strict"  # "strict" or "cyclic"
    penalty_batch: int = 8  # images per other task per step
    eval_every: int = 0  # val accuracy every n steps and at the end (0: only at the end)
    seed: int = 0
    lora_rank: int = 8  # mode lora: r of every adapted Linear
    lora_alpha: float = 8.0  # mode lora: PEFT's α; the update is (α/r)·B·A
    lora_targets: tuple[str, ...] = DEFAULT_TARGETS  # mode lora: engine/train/lora.py's LORA_TARGETS

    @property
    def linearized(self) -> bool:
        return self.mode in ("linearized", "tau_jp")

    def __post_init__(self) -> None:
        self.check_settings()  # a config that exists is valid; `check` adds what depends on the collection

    def check(self, *, other_tasks: int) -> None:
        """Raise ParameterError naming the first bad setting, or a τJp penalty without other tasks' inputs."""
        self.check_settings()
        if self.mode == "tau_jp" and other_tasks == 0:
            raise ParameterError(
                "others",
                "the τJp penalty needs other tasks' inputs, and none were given",
                fix="fine-tune in a collection with at least two tasks, or choose mode 'linearized'",
            )

    def check_settings(self) -> None:
        """Raise ParameterError naming the first bad setting."""
        checks = [
            ("mode", self.mode in MODES, f"choose one of {list(MODES)}"),
            ("steps", self.steps >= 1, "train for at least 1 step"),
            ("batch_size", self.batch_size >= 1, "use a batch of at least 1 image"),
            ("lr", self.lr > 0, "use a positive learning rate"),
            ("weight_decay", self.weight_decay >= 0, "use a weight decay ≥ 0"),
            ("beta", self.beta >= 0 and math.isfinite(self.beta), "use a penalty weight β ≥ 0"),
            ("penalty", self.penalty in PENALTY_SCHEDULES, f"choose one of {PENALTY_SCHEDULES}"),
            ("penalty_batch", self.penalty_batch >= 1, "use at least 1 image per other task"),
            ("lora_rank", self.lora_rank >= 1, "use a rank of at least 1"),
            ("lora_alpha", self.lora_alpha > 0 and math.isfinite(self.lora_alpha), "use α > 0"),
            (
                "lora_targets",
                bool(self.lora_targets) and set(self.lora_targets) <= set(LORA_TARGETS),
                f"choose among {list(LORA_TARGETS)}",
            ),
        ]
        for name, ok, fix in checks:
            if not ok:
                raise ParameterError(name, f"invalid fine-tuning setting {getattr(self, name)!r}", fix=fix)


@dataclass(frozen=True)
class FinetuneStep:
    step: int  # 1-based
    loss: float  # cross-entropy of the task batch
    penalty: float | None  # R (mode tau_jp)
    val_accuracy: float | None  # when evaluated at this step


@dataclass(frozen=True)
class FinetuneResult:
    theta: torch.Tensor  # [P] fp32, the trained weights (f_lin's θ for linearized modes, θ₀ + s·B·A for lora)
    history: tuple[FinetuneStep, ...]
    lora: dict[tuple[str, int, int], tuple[torch.Tensor, torch.Tensor]] | None = None  # (name, row, rows) → (s·B, A)

    def state_dict(self, spec: ParamSpec) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in unflatten(self.theta, spec).items()}


def cosine_with_warmup(step: int, *, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up to 1, then cosine to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def batch_indices(n: int, *, steps: int, batch_size: int, seed: int) -> torch.Tensor:
    """[steps, batch_size] indices from successive seeded permutations (every image once per epoch)."""
    gen = torch.Generator().manual_seed(seed)
    epochs = math.ceil(steps * batch_size / n)
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(epochs)])  # [epochs·n]
    return order[: steps * batch_size].view(steps, batch_size)


def finetune(
    visual: nn.Module,
    spec: ParamSpec,
    theta0: torch.Tensor,
    head: torch.Tensor,
    train: LabelledImages,
    preprocess: Preprocess,
    config: FinetuneConfig,
    *,
    others: Mapping[str, torch.Tensor] | None = None,
    validate: Callable[[torch.Tensor], float] | None = None,
    on_step: Callable[[FinetuneStep], None] | None = None,
    lock: AbstractContextManager = nullcontext(),
) -> FinetuneResult:
    """Train θ from θ₀ [P] on `train` in `config.mode`; `visual` is only a template (never modified).

    `others`: uint8 images [N, 3, H, W] of every other task (the penalty's inputs); `validate(θ)` returns
    val accuracy (evaluated the way the mode defines the model); `on_step` sees every step (it may raise
    to stop the run: nothing is returned or written then). `lock` is held during each forward, when
    the template is shared with other threads (EvalSuite.lock: functional_call swaps weights into it).
    """
    others = {t: x for t, x in (others or {}).items() if x.shape[0] > 0}
    config.check(other_tasks=len(others))
    theta0 = theta0.detach().float()  # [P]
    trained, current = _trainable(spec, theta0, config)
    optimizer = torch.optim.AdamW(trained.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(_multiplier, config=config))
    head = head.detach()  # [C, E]
    batches = batch_indices(
        len(train), steps=config.steps, batch_size=min(config.batch_size, len(train)), seed=config.seed
    )  # [S, B]
    penalty_draw = torch.Generator().manual_seed(config.seed + 1)
    history = []
    with forward_mode_ad():
        for step, idx in enumerate(batches, start=1):
            extra = _penalty_images(others, config, step, penalty_draw) if config.mode == "tau_jp" else None
            with lock:
                images, labels = train.images[idx], train.labels[idx]
                loss, penalty = _loss(visual, spec, theta0, current(), head, images, labels, extra, preprocess, config)
            _descend(optimizer, schedule, loss if penalty is None else loss + config.beta * penalty)
            evaluate_now = step == config.steps or (config.eval_every and step % config.eval_every == 0)
            val = _validated(validate, current) if validate is not None and evaluate_now else None
            record = FinetuneStep(step, loss.item(), None if penalty is None else penalty.item(), val)
            history.append(record)
            if on_step is not None:
                on_step(record)
    with torch.no_grad():
        theta = current().detach().clone()  # [P]
    return FinetuneResult(theta, tuple(history), trained.factors() if isinstance(trained, LoraUpdate) else None)


def _trainable(
    spec: ParamSpec, theta0: torch.Tensor, config: FinetuneConfig
) -> tuple[nn.Module, Callable[[], torch.Tensor]]:
    """What the optimiser trains, and θ [P] as a function of it: θ itself, or θ₀ + s·B·A (mode lora)."""
    if config.mode == "lora":
        update = LoraUpdate(
            spec, rank=config.lora_rank, alpha=config.lora_alpha, targets=config.lora_targets, seed=config.seed
        ).to(theta0.device)
        return update, lambda: update.theta(theta0)
    holder = nn.Module()
    holder.theta = nn.Parameter(theta0.clone())  # [P]
    return holder, lambda: holder.theta


def _multiplier(step: int, *, config: FinetuneConfig) -> float:
    return cosine_with_warmup(step, total=config.steps, warmup=config.warmup_steps)


def _descend(
    optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler, total: torch.Tensor
) -> None:
    """One optimiser step on `total`, and the learning rate's next value."""
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    schedule.step()


def _validated(validate: Callable[[torch.Tensor], float], current: Callable[[], torch.Tensor]) -> float:
    with torch.no_grad():
        return validate(current().detach())


def _loss(
    visual: nn.Module,
    spec: ParamSpec,
    theta0: torch.Tensor,
    theta: torch.Tensor,
    head: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    extra: torch.Tensor | None,
    preprocess: Preprocess,
    config: FinetuneConfig,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Cross-entropy of the task batch, and R on the penalty images when there are any."""
    batch = images if extra is None else torch.cat([images, extra])  # [B (+ M), 3, H, W] uint8
    x = normalize_batch(batch, preprocess)  # [B', 3, S, S]
    feats, moved = trainable_embedding(
        visual, spec, theta, x, linearized_at=theta0 if config.linearized else None
    )  # [B', E] each
    n = images.shape[0]
    logits = F.normalize(feats[:n], dim=-1) @ head.T  # [B, C]
    loss = F.cross_entropy(logits, labels)
    penalty = None if extra is None else moved[n:].norm(dim=-1).mean()
    return loss, penalty


def _penalty_images(
    others: Mapping[str, torch.Tensor], config: FinetuneConfig, step: int, generator: torch.Generator
) -> torch.Tensor:
    """uint8 [M, 3, H, W]: `penalty_batch` images of every other task (strict) or of one, in turn (cyclic)."""
    names = list(others)
    chosen = names if config.penalty == "strict" else [names[(step - 1) % len(names)]]
    parts = []
    for name in chosen:
        pool = others[name]
        idx = torch.randint(pool.shape[0], (min(config.penalty_batch, pool.shape[0]),), generator=generator)
        parts.append(pool[idx])
    return torch.cat(parts)


def finetune_standard(
    visual: nn.Module,
    head: torch.Tensor,
    train: LabelledImages,
    preprocess: Preprocess,
    config: FinetuneConfig,
    *,
    progress: Progress | None = None,
) -> dict[str, torch.Tensor]:
    """Standard fine-tuning of `visual`'s own weights (the zoo build's first stage); returns the fp32 state dict."""
    state = {k: v.detach().float() for k, v in visual.state_dict().items()}
    spec = ParamSpec.from_state_dict(state)
    theta0 = flatten(state, spec, source="image tower")  # [P]
    steps = config.steps

    def report(record: FinetuneStep) -> None:
        if progress is not None:
            progress(record.step / steps, f"loss {record.loss:.3f}")

    result = finetune(visual, spec, theta0, head, train, preprocess, config, on_step=report)
    return result.state_dict(spec)
