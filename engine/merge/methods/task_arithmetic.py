"""Task arithmetic (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023): θ = θ₀ + Σₜ λₜ τₜ.
Compare searches λ over 0 … 1 in steps of 0.05 (the paper picks one λ on validation)."""

from engine.merge.arithmetic import task_arithmetic
from engine.merge.declaration import CompareGrid, MergeMethod, steps
from engine.merge.methods._params import LAM_EACH

METHOD = MergeMethod(
    "task_arithmetic",
    "Task arithmetic",
    "https://arxiv.org/abs/2212.04089",
    (LAM_EACH,),
    task_arithmetic,
    formula="θ = θ₀ + Σₜ λₜ τₜ",
    cheap=("lam",),
    grid=CompareGrid.over(lam=steps(0.0, 1.0, 0.05)),
    order=10,
    streams=True,
    linear_scale=True,
)
