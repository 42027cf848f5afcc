"""TALL masks (Wang et al., "Localizing Task Information", ICML 2024, §3): task-specific. One task-arithmetic
vector τ_MTL = α·Σₛ τₛ is stored with a bit mask per task, mₜ = 1{|τₜ| ≥ λₘ·|τ_MTL − τₜ|}, and task t is served
by θ₀ + mₜ ⊙ τ_MTL, built on the fly (engine/merge/task_models.py): it needs the task id at inference. α moves
the shared model in one pass; the masks read α, so a task's model at a new α recomputes them (one pass over
[K, P], no factorization). One λₘ for all tasks: the paper picks λₜ per task on validation data."""

from engine.merge.declaration import CompareGrid, MergeMethod, Param, steps
from engine.merge.localized import tall, tall_parts, tall_task_parts
from engine.merge.methods._params import MASK_LAMBDA
from engine.merge.task_models import MASK_PER_TASK

ALPHA = Param("lam", 0.3, 0.0, 1.5, 0.05, "scaling α of the multi-task vector τ_MTL = α·Σₛ τₛ", symbol="α")

METHOD = MergeMethod(
    "tall_masks",
    "TALL masks (task-specific)",
    "https://arxiv.org/abs/2405.07813",
    (MASK_LAMBDA, ALPHA),
    tall,
    formula="θₜ = θ₀ + mₜ ⊙ τ_MTL, mₜ = 1{|τₜ| ≥ λₘ|τ_MTL − τₜ|}, τ_MTL = α Σₛ τₛ (needs the task id)",
    cheap=("lam",),
    scale_parts=tall_parts,
    grid=CompareGrid.over(mask_lambda=(0.2, 0.4, 0.6), lam=steps(0.1, 0.6, 0.1)),
    order=200,
    task_parts=tall_task_parts,
    storage=MASK_PER_TASK,
)
