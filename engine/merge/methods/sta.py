"""STA with |τ ⊙ ∇L| importance (arXiv 2411.16139; our definition where the paper is unavailable, so
`provisional`): keep the entries whose importance, normalised per tensor, reaches κ (engine/merge/sta.py)."""

from engine.merge.declaration import CompareGrid, MergeMethod, steps
from engine.merge.methods._params import LAM_MERGED, THRESHOLD
from engine.merge.sta import importance_keep, sta, sta_parts

METHOD = MergeMethod(
    "sta",
    "STA, |τ ⊙ ∇L| importance",
    "https://arxiv.org/abs/2411.16139",
    (THRESHOLD, LAM_MERGED),
    sta,
    formula="θ = θ₀ + λ Σₜ [Ĩₜ ≥ κ] ⊙ τₜ, Ĩₜ = |τₜ ⊙ ∇L| normalised per tensor",
    importance="tau",
    provisional=True,
    selection="importance",
    cheap=("lam",),
    keep_mask=importance_keep,
    scale_parts=sta_parts,
    grid=CompareGrid.over(threshold=(0.02, 0.05, 0.1), lam=steps(0.1, 2.0, 0.1)),
    order=60,
    streams=True,
)
