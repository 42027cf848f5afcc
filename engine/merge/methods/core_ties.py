"""Core-TIES (Panariello, Marczak et al., NeurIPS 2025): per layer, every task's update as its core in the
reference bases of all tasks' updates, TIES on the cores with the top-d share kept per core, back through the
bases (engine/merge/core_space.py, which says where mergelab's bases differ from the authors'). Defaults: KnOTS-TIES'
public configuration, d = 0.2, λ = 0.6 (the authors publish none for this pair). Compare searches λ with a few d."""

from dataclasses import replace

from engine.merge.core_space import core_ranks, core_ties, core_ties_parts
from engine.merge.declaration import CompareGrid, MergeMethod, steps
from engine.merge.methods._params import DENSITY, LAM_MERGED

METHOD = MergeMethod(
    "core_ties",
    "Core-TIES (Core Space merging)",
    "https://arxiv.org/abs/2509.17786",
    (DENSITY, replace(LAM_MERGED, default=0.6)),
    core_ties,
    formula="per layer: Mₜ = Uᵀ τₜ V in the bases of all τₜ; Δ = U · TIES(M₁, …, M_K) · Vᵀ; θ = θ₀ + λ Δ",
    selection="low_rank",
    sign_election="mass",
    cheap=("lam",),
    keep_rank=core_ranks,
    per_layer=True,
    scale_parts=core_ties_parts,
    grid=CompareGrid.over(density=(0.1, 0.2, 0.5), lam=steps(0.2, 2.0, 0.2)),
    order=141,
    streams=True,
)
