"""τJp: how far one task's vector moves the pretrained embedding of another task's inputs.

Yoshida et al., "Mastering Task Arithmetic: τJp as a Key Indicator for Weight Disentanglement"
(ICLR 2025): under linearisation, f_lin(x; θ₀ + Σₜ λₜτₜ) = f(x; θ₀) + Σₜ λₜ J f(x; θ₀)τₜ, so on
inputs x of task b every term with t ≠ b is interference. Following their public code (the
linearized model's `dp`, averaged per sample in their evaluation), the matrix entry is the mean over x ∈ D_b of the
unsquared L2 norm over the embedding:
    τJp[a, b] = mean_{x ∈ D_b} ‖J_θ f(x; θ₀)·τ_a‖₂        (f = raw image embedding, before the head)
The diagonal is each task's own signal; the off-diagonal entries are the interference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import DatasetError, SchemaError, ShapeError
from engine.eval.evaluate import evaluate
from engine.eval.suite import EvalSuite, Progress
from engine.eval.tangent import jvp_features
from engine.io.atomic import write_text_atomic
from engine.params import ParamSpec


@dataclass(frozen=True)
class TauJpMatrix:
    vectors: tuple[str, ...]  # rows: the task vectors τ_a
    tasks: tuple[str, ...]  # columns: the task inputs D_b
    values: torch.Tensor  # [A, B] float64 on the CPU
    split: str
    images: tuple[int, ...]  # images used per column (task)


def taujp_matrix(
    suite: EvalSuite,
    theta0: torch.Tensor,
    vectors: torch.Tensor,
    *,
    names: Sequence[str],
    tasks: Sequence[str],
    split: str = "val",
    max_images: int | None = None,
    batch_size: int = 128,
    progress: Progress | None = None,
) -> TauJpMatrix:
    """τJp of every vector [A, P] on every task's `split` images (the first `max_images` of each)."""
    inputs = {t: _task_images(suite, t, split, max_images) for t in tasks}
    return taujp_on_images(
        suite, theta0, vectors, names=names, inputs=inputs, split=split, batch_size=batch_size, progress=progress
    )


def taujp_on_images(
    suite: EvalSuite,
    theta0: torch.Tensor,
    vectors: torch.Tensor,
    *,
    names: Sequence[str],
    inputs: Mapping[str, torch.Tensor],
    split: str,
    batch_size: int = 128,
    progress: Progress | None = None,
) -> TauJpMatrix:
    """τJp of every vector [A, P] on given uint8 images per task {task: [N, 3, H, W]}."""
    if vectors.ndim != 2 or vectors.shape[1] != theta0.numel() or vectors.shape[0] != len(names):
        raise ShapeError(
            "τJp vectors",
            f"got {tuple(vectors.shape)} for {len(names)} names and P = {theta0.numel()}",
            fix="pass one flat task vector per name, of the pretrained model's architecture",
        )
    columns = []
    for i, (task, images) in enumerate(inputs.items()):
        _, products = jvp_features(suite, theta0, vectors, images, batch_size=batch_size)  # [A, N, E]
        columns.append(products.norm(dim=-1).double().mean(dim=1).cpu())  # [A]
        if progress is not None:
            progress((i + 1) / len(inputs), f"τJp on {task}")
    return TauJpMatrix(
        tuple(names),
        tuple(inputs),
        torch.stack(columns, dim=1),
        split,
        tuple(images.shape[0] for images in inputs.values()),
    )


def layer_breakdown(
    suite: EvalSuite,
    theta0: torch.Tensor,
    vector: torch.Tensor,
    spec: ParamSpec,
    *,
    task: str,
    split: str = "val",
    max_images: int | None = None,
) -> dict[str, float]:
    """τJp of one vector on one task, restricted to each layer block's part of the vector in turn."""
    blocks = spec.blocks(level="layer")
    tangents = torch.zeros(len(blocks), vector.numel(), dtype=vector.dtype, device=vector.device)  # [L, P]
    for i, (_, cols) in enumerate(blocks):
        tangents[i, cols] = vector[cols]
    images = _task_images(suite, task, split, max_images)
    _, products = jvp_features(suite, theta0, tangents, images)  # [L, N, E]
    norms = products.norm(dim=-1).double().mean(dim=1)  # [L]
    return {label: float(v) for (label, _), v in zip(blocks, norms)}


def pair_interference(
    suite: EvalSuite,
    theta0: torch.Tensor,
    tau_a: torch.Tensor,
    tau_b: torch.Tensor,
    *,
    task_b: str,
    lam: float,
    split: str = "val",
) -> float:
    """drop_b(a) = acc_b(θ₀ + λτ_b) − acc_b(θ₀ + λ(τ_a + τ_b)): what adding τ_a costs task b."""
    alone = _accuracy(suite, theta0 + lam * tau_b, task_b, split)
    return alone - _accuracy(suite, theta0 + lam * (tau_a + tau_b), task_b, split)


def pair_drops(
    suite: EvalSuite, theta0: torch.Tensor, T: torch.Tensor, *, names: Sequence[str], lam: float, split: str = "val"
) -> dict[tuple[str, str], float]:
    """drop_b(a) for every ordered pair a ≠ b of the vectors T [K, P] (acc_b(θ₀ + λτ_b) computed once per b)."""
    alone = {b: _accuracy(suite, theta0 + lam * T[j], b, split) for j, b in enumerate(names)}
    return {
        (a, b): alone[b] - _accuracy(suite, theta0 + lam * (T[i] + T[j]), b, split)
        for i, a in enumerate(names)
        for j, b in enumerate(names)
        if a != b
    }


def _accuracy(suite: EvalSuite, theta: torch.Tensor, task: str, split: str) -> float:
    return evaluate(theta, suite, split, tasks=[task]).accuracy[task]


def _task_images(suite: EvalSuite, task: str, split: str, max_images: int | None) -> torch.Tensor:
    if task not in suite.tasks:
        raise DatasetError(task, "is not a task of this evaluation suite", fix=f"use one of {list(suite.tasks)}")
    images = suite.tasks[task].split(split).images[:max_images]  # [N, 3, H, W] uint8
    if images.shape[0] == 0:
        raise DatasetError(task, f"has no {split} images", fix="give the task images in this split")
    return images


def save_taujp(path: Path, matrix: TauJpMatrix) -> None:
    """Write a matrix as JSON (names, split, image count, values), atomically."""
    payload = {
        "schema_version": 1,
        "vectors": list(matrix.vectors),
        "tasks": list(matrix.tasks),
        "split": matrix.split,
        "images": list(matrix.images),
        "values": matrix.values.tolist(),
    }
    write_text_atomic(Path(path), json.dumps(payload, indent=1) + "\n")


def load_taujp(path: Path) -> TauJpMatrix:
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        values = torch.tensor(payload["values"], dtype=torch.float64)
        matrix = TauJpMatrix(
            tuple(payload["vectors"]),
            tuple(payload["tasks"]),
            values,
            payload["split"],
            tuple(int(n) for n in payload["images"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SchemaError(
            path,
            f"is not a readable τJp matrix ({exc})",
            fix="recompute it with `python -m engine zoo add-taujp` or from the Interference page",
        ) from exc
    if values.shape != (len(matrix.vectors), len(matrix.tasks)):
        raise SchemaError(
            path,
            f"values are {tuple(values.shape)} for {len(matrix.vectors)}×{len(matrix.tasks)} names",
            fix="recompute it",
        )
    return matrix
