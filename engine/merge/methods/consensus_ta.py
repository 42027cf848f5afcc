"""Consensus TA (Wang et al., "Localizing Task Information", ICML 2024, §4): task arithmetic keeping only the
entries at least k tasks use, by their TALL masks (engine/merge/localized.py). A single model. The masks are
built against Σₜ τₜ (λ = 1), so λ stays a cheap scale (the authors build them at TA's tuned λ). Compare
searches λ at the paper's k = 2 and three mask thresholds from its grid."""

from engine.merge.declaration import CompareGrid, MergeMethod, Param, steps
from engine.merge.localized import consensus_ta, consensus_ta_keep, consensus_ta_parts
from engine.merge.methods._params import CONSENSUS_K, MASK_LAMBDA

LAM = Param("lam", 0.3, 0.0, 1.5, 0.05, "scaling λ of the consensus vector m_cons ⊙ Σₜ τₜ", symbol="λ")

METHOD = MergeMethod(
    "consensus_ta",
    "Consensus TA",
    "https://arxiv.org/abs/2405.07813",
    (MASK_LAMBDA, CONSENSUS_K, LAM),
    consensus_ta,
    formula="θ = θ₀ + λ·(m_cons ⊙ Σₜ τₜ), m_cons = 1{#tasks with |τₜ| ≥ λₘ|Σₛ τₛ − τₜ| ≥ k}",
    selection="consensus",
    cheap=("lam",),
    keep_mask=consensus_ta_keep,
    scale_parts=consensus_ta_parts,
    grid=CompareGrid.over(mask_lambda=(0.2, 0.4, 0.6), k=(2.0,), lam=steps(0.1, 1.0, 0.1)),
    order=25,
)
