"""The image tower to first order at θ₀: J_θ f(x; θ₀)·v for task vectors v, through `torch.func.jvp`.

The linearized model (Ortiz-Jiménez et al., "Task Arithmetic in the Tangent Space", NeurIPS 2023, Eq. 3)
    f_lin(x; θ) = f(x; θ₀) + J_θ f(x; θ₀)·(θ − θ₀)
needs one forward-mode product per tangent. `jvp_features` computes f(x; θ₀) once per batch and the
products for all M tangents at once: `vmap` over the tangents of a `jvp` whose primal (θ₀) is not
batched, so the primal forward runs once and only the tangent arithmetic is M-wide. f is the raw
image embedding (before normalisation and the zero-shot head), as in the τJp code.
Forward-mode AD through open_clip's attention needs the MultiheadAttention fast path off and the
math SDPA backend (the fast path's fused kernel and the efficient SDPA kernels have no forward-mode
derivative); `forward_mode_ad()` sets both while it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.func import functional_call, jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from engine.data.tasks import normalize_batch
from engine.eval.suite import EvalSuite, Progress
from engine.params import unflatten


@contextmanager
def forward_mode_ad() -> Iterator[None]:
    """Attention paths that support forward-mode AD (the fast path is a global flag: restored after)."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


LARGE_ON_CPU = 10_000_000  # parameters above which one tangent per pass is faster on a CPU


def default_tangents_per_pass(theta0: torch.Tensor) -> int | None:
    """1 for large models on a CPU, else None (all tangents in one vmapped pass).

    Measured on 2 CPU cores (bench/taujp_speed.py, 8 tangents): for ViT-B/32 (88M parameters) one
    tangent per pass ran at 1.01× the bare single-tangent JVP, vmapping all 8 at 0.68×; for the zoo's
    0.37M-parameter tower vmapping all 8 ran at 1.11×. GPUs keep the vmapped default."""
    return 1 if theta0.device.type == "cpu" and theta0.numel() > LARGE_ON_CPU else None


def jvp_features(
    suite: EvalSuite,
    theta0: torch.Tensor,
    tangents: torch.Tensor,
    images: torch.Tensor,
    *,
    batch_size: int = 128,
    tangents_per_pass: int | None = None,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x; θ₀) [N, E] and J_θ f(x; θ₀)·vₘ [M, N, E] for uint8 images [N, 3, H, W] and tangents [M, P].

    `tangents_per_pass` caps how many tangents share one vmapped pass: fewer passes reuse the primal
    forward, but M-wide activations can cost more memory traffic than they save (default:
    `default_tangents_per_pass`)."""
    per_pass = tangents_per_pass or default_tangents_per_pass(theta0) or tangents.shape[0]
    base, products = [], []
    for start in range(0, images.shape[0], batch_size):
        x = normalize_batch(images[start : start + batch_size], suite.preprocess).to(theta0.dtype)  # [B, 3, S, S]

        def embed(theta: torch.Tensor) -> torch.Tensor:
            return functional_call(suite.visual, unflatten(theta, suite.spec), (x,))  # [B, E]

        def along(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return jvp(embed, (theta0,), (v,))

        parts = []
        with suite.lock, forward_mode_ad(), torch.no_grad():
            for chunk in tangents.split(per_pass):
                f0, jv = vmap(along, out_dims=(None, 0))(chunk)  # [B, E], [m, B, E]
                parts.append(jv)
        base.append(f0)
        products.append(torch.cat(parts))  # [M, B, E]
        if progress is not None:
            progress(min(1.0, (start + batch_size) / images.shape[0]), "Jacobian-vector products")
    return torch.cat(base), torch.cat(products, dim=1)  # [N, E], [M, N, E]


def trainable_embedding(
    visual: torch.nn.Module, spec, theta: torch.Tensor, x: torch.Tensor, *, linearized_at: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Raw embeddings [B, E] of normalised images x, differentiable in θ [P], for training.

    Without `linearized_at`: (f(x; θ), None). With θ₀ = `linearized_at`: (f₀ + J·(θ − θ₀), J·(θ − θ₀)),
    the linearized model; gradients flow back through the tangent. The caller holds the template's lock."""

    def embed(weights: torch.Tensor) -> torch.Tensor:
        return functional_call(visual, unflatten(weights, spec), (x,))  # [B, E]

    if linearized_at is None:
        return embed(theta), None
    with forward_mode_ad():
        f0, moved = jvp(embed, (linearized_at,), (theta - linearized_at,))  # [B, E] each
    return f0 + moved, moved


def linearized_features(
    suite: EvalSuite, theta0: torch.Tensor, theta: torch.Tensor, images: torch.Tensor, *, batch_size: int = 128
) -> torch.Tensor:
    """f_lin(x; θ) = f(x; θ₀) + J f(x; θ₀)(θ − θ₀) → [N, E] (raw embeddings)."""
    f0, jv = jvp_features(suite, theta0, (theta - theta0)[None], images, batch_size=batch_size)
    return f0 + jv[0]  # [N, E]
