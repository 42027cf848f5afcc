"""KnOTS-DARE-TIES (Stoica et al., ICLR 2025): KnOTS-TIES after DARE's random drop of entries in the shared basis
(engine/merge/knots.py). Defaults: the public configuration, d = 1 (no trim), p = 0.1, λ = 0.7, seed 421."""

from dataclasses import replace

from engine.merge.declaration import CompareGrid, MergeMethod, steps
from engine.merge.knots import knots_dare_ties, knots_dare_ties_parts, knots_ranks
from engine.merge.methods._params import DENSITY, DROP, LAM_MERGED, SEED

PARAMS = (
    replace(DENSITY, default=1.0),
    replace(DROP, default=0.1),
    replace(SEED, default=421.0),
    replace(LAM_MERGED, default=0.7),
)
METHOD = MergeMethod(
    "knots_dare_ties",
    "KnOTS-DARE-TIES",
    "https://arxiv.org/abs/2410.19735",
    (
        replace(DENSITY, default=1.0),
        replace(DROP, default=0.1),
        replace(SEED, default=421.0),
        replace(LAM_MERGED, default=0.7),
    ),
    knots_dare_ties,
    formula="per layer: [τ₁ … τ_K] = U S [V₁ … V_K]; Δ = U · TIES(DARE(S Vₜ)); θ = θ₀ + λ Δ",
    selection="low_rank",
    sign_election="mass",
    cheap=("lam",),
    keep_rank=knots_ranks,
    per_layer=True,
    scale_parts=knots_dare_ties_parts,
    grid=CompareGrid.over(drop=(0.1, 0.5), lam=steps(0.2, 2.0, 0.2)),
    order=131,
    streams=True,
)
