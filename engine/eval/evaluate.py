"""Per-task and normalized accuracy of a flat parameter vector.

All tasks' images for a split are concatenated and pushed through the image tower in large
batches with `torch.func.functional_call` (the flat vector's views are the weights: no copy, no
load_state_dict), then each task's slice of the features meets its zero-shot head.
A suite whose `linearized_at` is θ₀ evaluates the linearized model instead, f₀ + J f(x; θ₀)·(θ − θ₀)
(engine/eval/tangent.py): the way linearized and τJp-regularised checkpoints are defined and evaluated
(Ortiz-Jiménez et al., NeurIPS 2023; Yoshida et al., ICLR 2025), so every merge, sweep and pair drop
of such checkpoints is exact in function space.
Precision: float32 is the default and the one every reported number uses. `precision="bfloat16"` converts the
flat vector (hence the image tower's weights) and each batch to bfloat16 for the forward only; features return
to float32 before the heads. It is for sweeps and the dashboard's interactive split at benchmark scale: on CUDA
and on CPUs with bf16 matrix units (AMX, AVX512-BF16; `bf16_fast`) the tower runs several times faster. Its
effect on the zoo's every number is measured in bench/results/eval_precision_zoo.json (bench/eval_precision_zoo.py):
0.15 % of the test predictions change, no task's accuracy by more than 0.6 points, no method's mean by more than
0.09; small, not nil, so float32 stays the default.
The linearized model stays float32 (its JVP is a difference of two close forwards).
Normalized accuracy is the papers' convention (Ilharco et al. 2023; Ortiz-Jiménez et al. 2023):
per task, merged accuracy / the task's own fine-tuned accuracy, then the mean over tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch.func import functional_call

from engine.data.tasks import LabelledImages, normalize_batch
from engine.errors import DatasetError, ParameterError
from engine.eval.suite import EvalSuite, Progress
from engine.eval.tangent import linearized_features
from engine.params import unflatten

PRECISIONS = MappingProxyType({"float32": torch.float32, "bfloat16": torch.bfloat16})
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of x86 bf16 matrix / dot-product units


@dataclass(frozen=True)
class EvalResult:
    split: str
    correct: Mapping[str, int]
    total: Mapping[str, int]
    normalized: Mapping[str, float] | None = None  # task → acc / fine-tuned acc

    @property
    def accuracy(self) -> dict[str, float]:
        return {t: self.correct[t] / self.total[t] for t in self.correct}

    @property
    def mean_accuracy(self) -> float:
        acc = self.accuracy
        return sum(acc.values()) / len(acc)

    @property
    def mean_normalized(self) -> float | None:
        if self.normalized is None:
            return None
        return sum(self.normalized.values()) / len(self.normalized)


def normalized_accuracy(accuracy: Mapping[str, float], reference: Mapping[str, float]) -> dict[str, float]:
    """Per task: accuracy / the fine-tuned reference accuracy on the same split."""
    missing = [t for t in accuracy if t not in reference]
    if missing:
        raise KeyError(f"no fine-tuned reference accuracy for tasks {missing}")
    return {t: accuracy[t] / reference[t] if reference[t] > 0 else 0.0 for t in accuracy}


@torch.no_grad()
def evaluate(
    theta: torch.Tensor,
    suite: EvalSuite,
    split: str,
    *,
    tasks: Sequence[str] | None = None,
    reference: Mapping[str, float] | None = None,
    batch_size: int = 1024,
    precision: str = "float32",
    progress: Progress | None = None,
) -> EvalResult:
    """Accuracy of θ = `theta` [P] on `split` for `tasks` (default: all of the suite's)."""
    parts = _split_parts(suite, split, tasks)
    correct = _correct(theta, suite, parts, batch_size=batch_size, precision=precision, progress=progress)
    return _result(split, correct, parts, reference)


@torch.no_grad()
def evaluate_per_task(
    model_of: Callable[[str], torch.Tensor],
    suite: EvalSuite,
    split: str,
    *,
    tasks: Sequence[str] | None = None,
    reference: Mapping[str, float] | None = None,
    batch_size: int = 1024,
    precision: str = "float32",
    progress: Progress | None = None,
) -> EvalResult:
    """Accuracy of a task-specific merge: task t's images through its own model θ_t = `model_of(t)` [P], one
    task at a time (each model built when its task comes, then dropped: never K models held at once)."""
    parts = _split_parts(suite, split, tasks)
    correct = {}
    for i, (task, images) in enumerate(parts.items()):
        correct |= _correct(model_of(task), suite, {task: images}, batch_size=batch_size, precision=precision)
        if progress is not None:
            progress((i + 1) / len(parts), f"task {task} with its own model")
    return _result(split, correct, parts, reference)


def _split_parts(suite: EvalSuite, split: str, tasks: Sequence[str] | None) -> dict[str, LabelledImages]:
    """Each task's labelled images of `split`; a clear error for no task or a task the suite lacks."""
    names = tuple(tasks or suite.task_names)
    if not names:
        raise DatasetError(
            "evaluation suite", f"holds no task to evaluate on {split!r}", fix="open a collection with tasks"
        )
    unknown = [t for t in names if t not in suite.tasks]
    if unknown:
        raise DatasetError(unknown[0], "is not a task of this evaluation suite", fix=f"use {list(suite.tasks)}")
    return {t: suite.tasks[t].split(split) for t in names}


def _result(
    split: str, correct: Mapping[str, int], parts: Mapping[str, LabelledImages], reference: Mapping[str, float] | None
) -> EvalResult:
    result = EvalResult(split=split, correct=correct, total={t: len(p) for t, p in parts.items()})
    if reference is not None:
        result = EvalResult(split, correct, result.total, normalized_accuracy(result.accuracy, reference))
    return result


def accuracy_on(
    theta: torch.Tensor, suite: EvalSuite, parts: Mapping[str, LabelledImages], *, precision: str = "float32"
) -> dict[str, float]:
    """Per-task accuracy of θ [P] on given labelled images (a subset or a re-split of val, say)."""
    correct = _correct(theta, suite, parts, precision=precision)
    return {t: correct[t] / len(p) for t, p in parts.items()}


def _correct(
    theta: torch.Tensor,
    suite: EvalSuite,
    parts: Mapping[str, LabelledImages],
    *,
    batch_size: int = 1024,
    precision: str = "float32",
    progress: Progress | None = None,
) -> dict[str, int]:
    """Correct predictions per task."""
    pred = predictions(theta, suite, parts, batch_size=batch_size, precision=precision, progress=progress)
    return {name: int((pred[name] == parts[name].labels).sum()) for name in parts}


@torch.no_grad()
def predictions(
    theta: torch.Tensor,
    suite: EvalSuite,
    parts: Mapping[str, LabelledImages],
    *,
    batch_size: int = 1024,
    precision: str = "float32",
    progress: Progress | None = None,
) -> dict[str, torch.Tensor]:
    """Predicted class per image, task → [N_t]: every task's images through the tower in one pass, then its head."""
    images = torch.cat([p.images for p in parts.values()])  # [N, 3, H, W] uint8
    feats = encode_images(theta, suite, images, batch_size=batch_size, precision=precision, progress=progress)
    return {
        name: (chunk @ suite.heads[name].T).argmax(dim=-1)  # [N_t]
        for name, chunk in zip(parts, torch.split(feats, [len(p) for p in parts.values()]))
    }


def encode_images(
    theta: torch.Tensor,
    suite: EvalSuite,
    images: torch.Tensor,
    *,
    batch_size: int = 1024,
    precision: str = "float32",
    progress: Progress | None = None,
) -> torch.Tensor:
    """L2-normalised float32 image features [N, E] of uint8 images [N, 3, H, W] under θ = `theta` [P], the forward
    in `precision` (see the module docstring)."""
    dtype = _dtype(precision)
    if suite.linearized_at is not None:
        if dtype != torch.float32:
            raise ParameterError(
                "precision", f"{precision} is not offered for a linearized suite", fix="evaluate it in float32"
            )
        return _linearized_features(theta, suite, images, batch_size=batch_size, progress=progress)
    weights = unflatten(theta.to(dtype), suite.spec)  # views of one converted copy (none for float32)
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = normalize_batch(images[start : start + batch_size], suite.preprocess).to(dtype)  # [B, 3, S, S]
        with suite.lock:
            feats = functional_call(suite.visual, weights, (x,)).float()  # [B, E]
        out.append(F.normalize(feats, dim=-1))
        if progress is not None:
            progress(min(1.0, (start + batch_size) / images.shape[0]), "encoding images")
    return torch.cat(out)  # [N, E]


def _linearized_features(
    theta: torch.Tensor, suite: EvalSuite, images: torch.Tensor, *, batch_size: int, progress: Progress | None
) -> torch.Tensor:
    """normalize(f₀ + J f(x; θ₀)·(θ − θ₀)) [N, E], in chunks of `batch_size` images."""
    out = []
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size]
        out.append(F.normalize(linearized_features(suite, suite.linearized_at, theta, chunk), dim=-1))  # [B, E]
        if progress is not None:
            progress(min(1.0, (start + batch_size) / images.shape[0]), "encoding images (linearized)")
    return torch.cat(out)  # [N, E]


def _dtype(precision: str) -> torch.dtype:
    if precision not in PRECISIONS:
        raise ParameterError("precision", f"unknown precision {precision!r}", fix=f"use one of {list(PRECISIONS)}")
    return PRECISIONS[precision]


def bf16_fast(device: torch.device | str) -> bool:
    """Whether bfloat16 evaluation is fast on `device`: a CUDA GPU that supports it, or a CPU with bf16 matrix or
    dot-product units (elsewhere bf16 matmuls are emulated and slower than float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line.split() for line in info if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)
