"""Calibrators: data-free steps after any base merge that read its merged update Δ (θ = θ₀ + Δ) and return a
new one, declared like methods (engine/merge/pipeline.py runs them).

LiNeS (Wang et al., "LiNeS: Post-training Layer Scaling Prevents Forgetting and Enhances Model Merging", ICLR
2025, Eq. 1): each layer ℓ of Δ scaled by λ(ℓ) = α + β(ℓ − 1)/(L − 1), L residual blocks, block i at depth
i + 1. The paper scales the blocks only; our choice for the rest of a CLIP image tower: conv1, class and
positional embeddings and ln_pre run before block 1, so they take depth 1 (scale α); ln_post and proj run after
block L, so they take depth L (scale α + β). A tower of one block scales everything by α.

SVC (Singular Value Calibration; "When Shared Knowledge Hurts: Spectral Over-Accumulation in Model Merging",
ICML 2026, arXiv 2602.05536, Algorithm 1): per 2-D layer, Δ = U S Vᵀ; along each left singular direction u_r,
the merged response a_r = uᵣᵀΔ = s_r vᵣᵀ and task i's response a_r^i = uᵣᵀτᵢ (Eq. 4, the merged update's U);
s_r^i = ⟨a_r, a_r^i⟩ / ‖a_r^i‖² (Eq. 8) measures how much the merge over-counts task i there; the singular value
becomes γ_r s_r with γ_r = K / Σᵢ max(α, s_r^i). Other tensors (biases, norms, embeddings) pass unchanged, as in
FusionBench's code. The paper leaves s_r^i = 0/0 open for a direction task i does not touch (a_r^i = 0): we leave
task i out of that direction's sum (K counts the tasks that touch it) and a direction no task touches keeps
γ_r = 1; FusionBench 0.2.33 counts such a task at the floor α (which shrinks a direction only one task uses by
K/(s + (K − 1)α)). Elsewhere the two agree (tests/test_merge_calibrators.py).

Both separate the base merge's scale: Δ = s·D (s its λ or α). LiNeS is linear in Δ; SVC's factors of D do not
depend on s (Δ = U (sS) Vᵀ, s_r^i = s·c_r^i with c_r^i computed at s = 1), so a move of s or of α rebuilds
U diag(γ s S) Vᵀ from cached factors without a new SVD.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.params import ParamSpec, network_key
from engine.store.reader import Reader, Rows


def lines_depth_fraction(spec: ParamSpec) -> torch.Tensor:
    """(ℓ − 1)/(L − 1) [P] of each entry's layer (0 before the blocks, 1 after them; 0 everywhere when L = 1)."""
    keys = [network_key(name) for name in spec.names]
    blocks = [key[1] for key in keys if key[0] == 1]
    last = max(blocks, default=0)
    fractions = [(key[1] / last if last else 0.0) if key[0] == 1 else float(key[0] == 2 and last > 0) for key in keys]
    sizes = torch.tensor(spec.sizes)
    return torch.repeat_interleave(torch.tensor(fractions, dtype=torch.float32), sizes)  # [P]


def lines(update: torch.Tensor, fraction: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
    """Δ [P] ⊙ (α + β·fraction) [P]: LiNeS on a merged update."""
    return fraction.mul(beta).add_(alpha).mul_(update)  # [P]


@dataclass(frozen=True)
class SvcLayer:
    """One 2-D layer's cached SVC factors of the unscaled update D = U S Vᵀ: `coupling` [K, r] is s_r^i at
    s = 1 (NaN where task i does not touch direction r)."""

    name: str
    U: torch.Tensor  # [m, r]
    S: torch.Tensor  # [r]
    Vh: torch.Tensor  # [r, n]
    coupling: torch.Tensor  # [K, r]


def svc_factors(direction: torch.Tensor, T: Rows, spec: ParamSpec) -> tuple[SvcLayer, ...]:
    """Per 2-D layer, the SVD of D (the update at scale 1) and each task's coupling s_r^i: the expensive part,
    batched over the layers of one shape."""
    layers, reader = [], Reader.of(T)
    for group in spec.by_shape(spec.matrices()).values():
        D = torch.stack([spec.matrix_view(direction, n) for n in group]).double()  # [G, m, n]
        tasks = torch.stack([reader.layer(spec, n) for n in group], dim=1).double()  # [K, G, m, n]
        U, S, Vh = torch.linalg.svd(D, full_matrices=False)  # [G, m, r], [G, r], [G, r, n]
        responses = torch.einsum("gmr,kgmn->kgrn", U, tasks)  # a_r^i [K, G, r, n]
        inner = torch.einsum("kgrn,grn->kgr", responses, Vh) * S  # ⟨a_r, a_r^i⟩ [K, G, r]
        norms = responses.square().sum(dim=-1)  # ‖a_r^i‖² [K, G, r]
        touched = norms > norms.amax(dim=-1, keepdim=True).clamp(min=1e-300) * 1e-12
        coupling = torch.where(touched, inner / norms.clamp(min=1e-300), torch.nan)  # [K, G, r]
        for g, name in enumerate(group):
            layers.append(SvcLayer(name, U[g].float(), S[g].float(), Vh[g].float(), coupling[:, g].float()))
    return tuple(layers)


def svc_gamma(coupling: torch.Tensor, *, scale: float, alpha: float) -> torch.Tensor:
    """γ_r = K_r / Σᵢ max(α, s·c_r^i) [r] over the tasks that touch r (1 where none does)."""
    touched = ~torch.isnan(coupling)  # [K, r]
    clipped = torch.where(touched, torch.clamp(coupling * scale, min=alpha), 0.0)  # [K, r]
    count = touched.sum(dim=0).to(coupling.dtype)  # [r]
    total = clipped.sum(dim=0)  # [r]
    return torch.where((count > 0) & (total > 0), count / total.clamp(min=1e-30), 1.0)


def svc(
    direction: torch.Tensor, layers: tuple[SvcLayer, ...], spec: ParamSpec, *, scale: float, alpha: float
) -> torch.Tensor:
    """The calibrated update [P] of Δ = scale·D: each factored layer U diag(γ·scale·S) Vᵀ, the rest scale·D."""
    update = direction * scale  # [P]
    for layer in layers:
        gamma = svc_gamma(layer.coupling, scale=scale, alpha=alpha)  # [r]
        calibrated = (layer.U * (gamma * layer.S * scale)) @ layer.Vh  # [m, n]
        spec.matrix_view(update, layer.name).copy_(calibrated)
    return update
