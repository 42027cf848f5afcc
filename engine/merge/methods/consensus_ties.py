"""Consensus TIES (Wang et al., "Localizing Task Information", ICML 2024, §4): TIES's merged vector keeping only
the entries at least k tasks use, by their TALL masks against it (engine/merge/localized.py). A single model."""

from engine.merge.declaration import CompareGrid, MergeMethod, steps
from engine.merge.localized import consensus_ties, consensus_ties_keep, consensus_ties_parts
from engine.merge.methods._params import CONSENSUS_K, DENSITY, LAM_MERGED, MASK_LAMBDA

METHOD = MergeMethod(
    "consensus_ties",
    "Consensus TIES",
    "https://arxiv.org/abs/2405.07813",
    (DENSITY, MASK_LAMBDA, CONSENSUS_K, LAM_MERGED),
    consensus_ties,
    formula="θ = θ₀ + λ·(m_cons ⊙ τ_m), τ_m TIES's vector, m_cons the entries ≥ k tasks' TALL masks keep",
    sign_election="mass",
    selection="consensus",
    cheap=("lam",),
    keep_mask=consensus_ties_keep,
    scale_parts=consensus_ties_parts,
    grid=CompareGrid.over(density=(0.2,), mask_lambda=(0.2, 0.4, 0.6), k=(2.0,), lam=steps(0.5, 2.0, 0.25)),
    order=26,
)
