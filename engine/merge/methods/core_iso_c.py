"""Core-Iso-C (Panariello, Marczak et al., NeurIPS 2025): per layer, the tasks' cores in the reference bases of
all tasks' updates summed, every singular value of the sum set to their mean, back through the bases
(engine/merge/core_space.py). Default α = 1, as Iso-C's. Compare searches α over 0.1 … 3.0, as for Iso-C."""

from engine.merge.core_space import core_iso_c, core_iso_c_parts, core_ranks
from engine.merge.declaration import CompareGrid, MergeMethod, steps
from engine.merge.methods._params import ALPHA

METHOD = MergeMethod(
    "core_iso_c",
    "Core-Iso-C (Core Space merging)",
    "https://arxiv.org/abs/2509.17786",
    (ALPHA,),
    core_iso_c,
    formula="per layer: Σₜ Uᵀ τₜ V = P S Qᵀ with every singular value set to their mean; Δ = s̄ U P Qᵀ Vᵀ; θ = θ₀ + α Δ",
    selection="low_rank",
    cheap=("alpha",),
    keep_rank=core_ranks,
    per_layer=True,
    scale_parts=core_iso_c_parts,
    grid=CompareGrid.over(alpha=steps(0.1, 3.0, 0.1)),
    order=142,
    streams=True,
)
