"""KnOTS-TA (Stoica et al., ICLR 2025): the task updates in their shared SVD basis, each trimmed to its top-d share
over all layers, summed (engine/merge/knots.py). With d = 1 it is task arithmetic exactly (Σₜ S Vₜ = S V summed
back through U). Defaults: d = 1, λ = 1."""

from dataclasses import replace

from engine.merge.declaration import CompareGrid, MergeMethod, steps
from engine.merge.knots import knots_ranks, knots_ta, knots_ta_parts
from engine.merge.methods._params import DENSITY, LAM_MERGED

METHOD = MergeMethod(
    "knots_ta",
    "KnOTS-TA",
    "https://arxiv.org/abs/2410.19735",
    (replace(DENSITY, default=1.0), LAM_MERGED),
    knots_ta,
    formula="per layer: [τ₁ … τ_K] = U S [V₁ … V_K]; Δ = U · Σₜ top_d(S Vₜ); θ = θ₀ + λ Δ",
    selection="low_rank",
    cheap=("lam",),
    keep_rank=knots_ranks,
    per_layer=True,
    scale_parts=knots_ta_parts,
    grid=CompareGrid.over(density=(0.2, 1.0), lam=steps(0.1, 1.5, 0.1)),
    order=132,
    streams=True,
)
