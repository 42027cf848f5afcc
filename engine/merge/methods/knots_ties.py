"""KnOTS-TIES (Stoica et al., "Model Merging with SVD to Tie the KnOTS", ICLR 2025): per layer, the task updates
in the basis of their concatenation's SVD, merged there by TIES with the top-d share kept per task over all layers
(engine/merge/knots.py). Defaults: the public configuration, d = 0.2, λ = 0.6. Compare searches λ with a few d."""

from dataclasses import replace

from engine.merge.declaration import CompareGrid, MergeMethod, steps
from engine.merge.knots import knots_ranks, knots_ties, knots_ties_parts
from engine.merge.methods._params import DENSITY, LAM_MERGED

METHOD = MergeMethod(
    "knots_ties",
    "KnOTS-TIES",
    "https://arxiv.org/abs/2410.19735",
    (DENSITY, replace(LAM_MERGED, default=0.6)),
    knots_ties,
    formula="per layer: [τ₁ … τ_K] = U S [V₁ … V_K]; Δ = U · TIES(S V₁, …, S V_K); θ = θ₀ + λ Δ",
    selection="low_rank",
    sign_election="mass",
    cheap=("lam",),
    keep_rank=knots_ranks,
    per_layer=True,
    scale_parts=knots_ties_parts,
    grid=CompareGrid.over(density=(0.1, 0.2, 0.5), lam=steps(0.2, 2.0, 0.2)),
    order=130,
    streams=True,
)
