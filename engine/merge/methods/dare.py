"""DARE + task arithmetic (Yu et al., "Language Models are Super Mario", ICML 2024): drop entries at rate p,
rescale the survivors by 1/(1 − p), then task arithmetic."""

from engine.merge.declaration import CompareGrid, MergeMethod, steps
from engine.merge.methods._params import DROP, LAM_EACH, SEED
from engine.merge.sparse_methods import dare, dare_parts, drop_keep

METHOD = MergeMethod(
    "dare",
    "DARE + task arithmetic",
    "https://arxiv.org/abs/2311.03099",
    (DROP, LAM_EACH, SEED),
    dare,
    formula="θ = θ₀ + Σₜ λₜ (mₜ ⊙ τₜ)/(1 − p), mₜ ~ Bernoulli(1 − p)",
    selection="random_drop",
    cheap=("lam",),
    keep_mask=drop_keep,
    scale_parts=dare_parts,
    grid=CompareGrid.over(drop=(0.5, 0.7, 0.9), lam=steps(0.0, 1.0, 0.1)),
    order=30,
    streams=True,
)
