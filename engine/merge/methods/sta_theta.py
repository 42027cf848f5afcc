"""STA with |θ ⊙ ∇L| importance (arXiv 2411.16139, provisional like `sta`): the same merge as `sta`, its
importance taken at the fine-tuned weights θₜ instead of the task vector τₜ."""

from engine.merge.declaration import CompareGrid, MergeMethod, steps
from engine.merge.methods._params import LAM_MERGED, THRESHOLD
from engine.merge.sta import importance_keep, sta, sta_parts

METHOD = MergeMethod(
    "sta_theta",
    "STA, |θ ⊙ ∇L| importance",
    "https://arxiv.org/abs/2411.16139",
    (THRESHOLD, LAM_MERGED),
    sta,
    formula="θ = θ₀ + λ Σₜ [Ĩₜ ≥ κ] ⊙ τₜ, Ĩₜ = |θₜ ⊙ ∇L| normalised per tensor",
    importance="theta",
    provisional=True,
    selection="importance",
    cheap=("lam",),
    keep_mask=importance_keep,
    scale_parts=sta_parts,
    grid=CompareGrid.over(threshold=(0.02, 0.05, 0.1), lam=steps(0.1, 2.0, 0.1)),
    order=70,
    streams=True,
)
