"""CART (Choi et al., "Revisiting Weight Averaging for Model Merging", arXiv 2412.12153): θ̄ the mean of the
fine-tuned models plus λ times the sum of the rank-r approximations of each θₜ − θ̄ (engine/merge/subspace.py)."""

from engine.merge.declaration import CompareGrid, MergeMethod, Param, steps
from engine.merge.subspace import cart, cart_parts, cart_ranks

LAM = Param("lam", 2.0, 0.0, 4.0, 0.05, "scaling λ of the low-rank centred vectors", symbol="λ")
RANK_SHARE = Param(
    "rank_share", 0.12, 0.01, 1.0, 0.01, "rank kept of each centred vector, as a share ρ of min(out, in)", symbol="ρ"
)

METHOD = MergeMethod(
    "cart",
    "CART (centred low-rank task vectors)",
    "https://arxiv.org/abs/2412.12153",
    (LAM, RANK_SHARE),
    cart,
    formula="θ = θ̄ + λ Σₜ LR_r(θₜ − θ̄), θ̄ the mean of the fine-tuned models",
    selection="low_rank",
    cheap=("lam",),
    keep_rank=cart_ranks,
    per_layer=True,
    scale_parts=cart_parts,
    grid=CompareGrid.over(rank_share=(0.08, 0.12, 0.3), lam=steps(0.5, 3.0, 0.25)),
    order=110,
)
