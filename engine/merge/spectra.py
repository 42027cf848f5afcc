"""Interference seen in subspaces: how low-rank each task's layer updates are, and how much tasks share
their top singular directions, per layer and overall.

For each 2-D tensor (layer) ℓ and task t, the task matrix τₜ⁽ℓ⁾ = Uₜ Sₜ Vₜᵀ gives
- its spectrum Sₜ (singular values, descending);
- the energy share of its top k = ⌊p/K⌋ directions, Σ_{i≤k} s_i² / Σ s_i² (the share TSV-M keeps per task;
  Gargiulo et al., CVPR 2025, §3 show task matrices are close to low-rank, so this is high);
- its effective rank exp(H(s/Σs)) (Roy & Vetterli, EUSIPCO 2007): how many directions carry it;
- the alignment of tasks a and b, ‖U_{a,k}ᵀ U_{b,k}‖²_F / k ∈ [0, 1] (1: the same top-k left subspace,
  0: orthogonal ones), the subspace-overlap reading of TSV's singular task interference (§4, Eq. 4). A task
  with fewer than k directions (a LoRA adapter of rank r < k; none on a layer it does not target) counts only
  those it has (`subspace.spanned`: the vectors of a zero singular value are arbitrary), and the pair is
  divided by the smaller count, so a task stays aligned 1 with itself; a pair where one has none is 0.
The overall alignment is the mean over layers. Every layer of one shape is factored in one batched call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from engine.errors import ShapeError
from engine.merge.subspace import layer_stacks, spanned
from engine.params import ParamSpec


@dataclass(frozen=True)
class SubspaceStats:
    tasks: tuple[str, ...]
    layers: tuple[str, ...]  # 2-D tensors in network (flat) order
    spectra: tuple[torch.Tensor, ...]  # per layer: singular values [K, p]
    top_share: torch.Tensor  # [L, K] energy share of the top ⌊p/K⌋ directions
    effective_rank: torch.Tensor  # [L, K]
    full_rank: tuple[int, ...]  # per layer: p = min(out, in)
    alignment: torch.Tensor  # [L, K, K]

    @property
    def overall_alignment(self) -> torch.Tensor:
        """[K, K]: the alignment averaged over layers."""
        return self.alignment.mean(dim=0)


def subspace_stats(T: torch.Tensor, spec: ParamSpec, tasks: tuple[str, ...]) -> SubspaceStats:
    """Spectra, top-k energy, effective rank and top-k alignment of every 2-D tensor of T [K, P]."""
    K = T.shape[0]
    found: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    for names, tau in layer_stacks(spec, T, spec.matrices()):  # [L, K, m, n] a few layers at a time, float32
        u, s, _ = torch.linalg.svd(tau, full_matrices=False)  # [L, K, m, p], [L, K, p]
        k = max(1, s.shape[-1] // K)
        kept = spanned(s[..., :k], *tau.shape[-2:])  # [L, K, k] directions each task has (in T's own precision)
        s = s.double()
        power = s**2  # [L, K, p]
        total = power.sum(dim=-1).clamp(min=torch.finfo(torch.float64).tiny)  # [L, K]
        share = power[..., :k].sum(dim=-1) / total  # [L, K]
        weights = s / s.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float64).tiny)  # [L, K, p]
        entropy = -(weights * weights.clamp(min=1e-300).log()).sum(dim=-1)  # [L, K]
        top = torch.where(kept[..., None, :], u[..., :k].double(), 0)  # [L, K, m, k]
        count = kept.sum(dim=-1)  # [L, K]
        fewer = torch.minimum(count[:, :, None], count[:, None, :]).clamp(min=1)  # [L, K, K]
        overlap = torch.einsum("lamk,lbmj->labkj", top, top).pow(2).sum(dim=(-1, -2)) / fewer  # [L, K, K]
        for i, name in enumerate(names):
            found[name] = (s[i].float(), share[i].float(), entropy[i].exp().float(), overlap[i].float())
    layers = tuple(n for n in spec.matrices())
    return SubspaceStats(
        tasks=tuple(tasks),
        layers=layers,
        spectra=tuple(found[n][0] for n in layers),
        top_share=torch.stack([found[n][1] for n in layers]),
        effective_rank=torch.stack([found[n][2] for n in layers]),
        full_rank=tuple(found[n][0].shape[-1] for n in layers),
        alignment=torch.stack([found[n][3] for n in layers]),
    )


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's ρ of two equally long vectors (average ranks for ties): do two measures order pairs alike?"""
    return float(torch.corrcoef(torch.stack([_ranks(a.double()), _ranks(b.double())]))[0, 1])


def _ranks(x: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(len(x), dtype=x.dtype)
    for value in x.unique():  # ties share their mean rank (a handful of pairs: K² at most)
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


@dataclass(frozen=True)
class MeasureAgreement:
    """Subspace alignment against τJp over the ordered pairs a ≠ b of tasks both cover."""

    pairs: tuple[tuple[str, str], ...]
    alignment: tuple[float, ...]
    taujp: tuple[float, ...]
    rho: float  # Spearman's rank correlation of the two


def alignment_vs_taujp(stats: SubspaceStats, taujp_values: torch.Tensor, vectors, tasks) -> MeasureAgreement:
    """Do the two interference measures order task pairs alike? τJp[a, b] (vector a on task b's inputs)
    beside the overall top-k alignment of a and b."""
    overall = stats.overall_alignment
    pairs = tuple((a, b) for a in vectors for b in tasks if a != b and a in stats.tasks and b in stats.tasks)
    align = tuple(float(overall[stats.tasks.index(a), stats.tasks.index(b)]) for a, b in pairs)
    tau = tuple(float(taujp_values[list(vectors).index(a), list(tasks).index(b)]) for a, b in pairs)
    rho = rank_correlation(torch.tensor(align), torch.tensor(tau)) if len(pairs) > 2 else float("nan")
    return MeasureAgreement(pairs, align, tau, rho)


def update_spectra(
    theta0: torch.Tensor, merged: Mapping[str, torch.Tensor], spec: ParamSpec, layer: str
) -> dict[str, torch.Tensor]:
    """Singular values (descending) [p] of each merged model's update Δ = θ − θ₀ in one 2-D layer, by name: what
    a merge pipeline's calibrators do to the merged update's spectrum. SVC (singular-value calibration) rescales
    Δ's singular values by how much the tasks' own updates use each direction; LiNeS multiplies a whole layer by
    one factor, so it moves the spectrum up or down without changing its shape."""
    shape = spec.shapes[spec.names.index(layer)] if layer in spec.names else ()
    if len(shape) != 2:
        raise ShapeError(layer, f"is not a 2-D tensor of this model (shape {tuple(shape)})", fix="pick a layer matrix")
    cols = spec.slice_of(layer)
    updates = torch.stack([theta[cols] - theta0[cols] for theta in merged.values()])  # [M, out·in]
    values = torch.linalg.svdvals(updates.view(-1, *shape).double())  # [M, p]
    return {name: values[i].float() for i, name in enumerate(merged)}
