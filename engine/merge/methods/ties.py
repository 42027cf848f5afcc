"""TIES (Yadav et al., "TIES-Merging", NeurIPS 2023): top-d magnitudes per task, signs elected by mass, the
mean of the agreeing entries, θ₀ + λ τ_m. Compare searches λ with a few densities, as the paper does."""

from engine.merge.declaration import CompareGrid, MergeMethod, steps
from engine.merge.methods._params import DENSITY, LAM_MERGED
from engine.merge.sparse_methods import magnitude_keep, ties, ties_parts

METHOD = MergeMethod(
    "ties",
    "TIES",
    "https://arxiv.org/abs/2306.01708",
    (DENSITY, LAM_MERGED),
    ties,
    formula="θ = θ₀ + λ τ_m: top-d per task, elected sign, mean of the agreeing entries",
    selection="magnitude",
    sign_election="mass",
    cheap=("lam",),
    keep_mask=magnitude_keep,
    scale_parts=ties_parts,
    grid=CompareGrid.over(density=(0.1, 0.2, 0.5), lam=steps(0.5, 2.0, 0.25)),
    order=20,
    streams=True,
)
