"""Iso-C (Marczak et al., "No Task Left Behind: Isotropic Model Merging", ICML 2025): per layer, the SVD of
Σₜ τₜ with every singular value set to their mean (engine/merge/subspace.py). Compare searches α over
0.1 … 3.0, the paper's own search."""

from engine.merge.declaration import CompareGrid, MergeMethod, steps
from engine.merge.methods._params import ALPHA
from engine.merge.subspace import iso_c, iso_c_parts, iso_c_ranks

METHOD = MergeMethod(
    "iso_c",
    "Iso-C (isotropic merging)",
    "https://arxiv.org/abs/2502.04959",
    (ALPHA,),
    iso_c,
    formula="per layer: Σₜ τₜ = U S Vᵀ with every singular value set to their mean: Δ = s̄ U Vᵀ; θ = θ₀ + α Δ",
    selection="low_rank",
    cheap=("alpha",),
    keep_rank=iso_c_ranks,
    per_layer=True,
    scale_parts=iso_c_parts,
    grid=CompareGrid.over(alpha=steps(0.1, 3.0, 0.1)),
    order=90,
    streams=True,
)
