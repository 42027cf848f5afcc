"""WUDI (Cheng et al., "Whoever Started the Interference Should End It", ICML 2025): per layer, the merged
vector that minimises each task's interference, n Adam steps from Σₜ τₜ (engine/merge/wudi.py). Compare
searches its step count (the paper's 300, and 1000: Adam's step size is absolute, so how far 300 steps at
lr 1e-5 get depends on the task vectors' scale) with α; on a large model on the CPU it is hours, so Compare
runs it only when asked by name (engine/jobs/compare.py)."""

from engine.merge.declaration import CompareGrid, MergeMethod, Param, steps
from engine.merge.methods._params import ALPHA
from engine.merge.wudi import wudi, wudi_parts

STEPS = Param("steps", 300.0, 0.0, 1000.0, 10.0, "Adam steps on each layer's interference loss", symbol="n")

METHOD = MergeMethod(
    "wudi",
    "WUDI (interference minimised per layer)",
    "https://arxiv.org/abs/2503.08099",
    (ALPHA, STEPS),
    wudi,
    formula="per layer: τ_m = argmin Σₜ ‖(τ_m − τₜ) τₜᵀ‖² / ‖τₜ‖², n Adam steps from Σₜ τₜ; θ = θ₀ + α τ_m",
    cheap=("alpha",),
    per_layer=True,
    scale_parts=wudi_parts,
    iterative=True,
    grid=CompareGrid.over(steps=(300.0, 1000.0), alpha=steps(0.1, 3.0, 0.1)),  # the paper: 300 steps, α = 1
    order=120,
)
