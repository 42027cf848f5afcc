"""Core-TSV (Panariello, Marczak et al., "Accurate and Efficient Low-Rank Model Merging in Core Space", NeurIPS
2025): per layer, every task's update as its core Mₜ = Uᵀ ΔWₜ V in the reference bases of all tasks' updates,
TSV-M on the cores, back through the bases (engine/merge/core_space.py). Made for LoRA pools, where a core is
K·r wide. Default α = 0.2: the authors' public configuration (configs/vitB_r16_core_tsv.py). Compare searches α."""

from dataclasses import replace

from engine.merge.core_space import core_ranks, core_tsv, core_tsv_parts
from engine.merge.declaration import CompareGrid, MergeMethod, steps
from engine.merge.methods._params import ALPHA

METHOD = MergeMethod(
    "core_tsv",
    "Core-TSV (Core Space merging)",
    "https://arxiv.org/abs/2509.17786",
    (replace(ALPHA, default=0.2),),
    core_tsv,
    formula="per layer: Mₜ = Uᵀ τₜ V in the bases of all τₜ; Δ = U · TSV(M₁, …, M_K) · Vᵀ; θ = θ₀ + α Δ",
    selection="low_rank",
    cheap=("alpha",),
    keep_rank=core_ranks,
    per_layer=True,
    scale_parts=core_tsv_parts,
    grid=CompareGrid.over(alpha=steps(0.1, 3.0, 0.1)),
    order=140,
    streams=True,
)
