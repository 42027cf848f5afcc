"""TSV-M (Gargiulo et al., "Task Singular Vectors", CVPR 2025): per layer, the top 1/K singular triplets of
each task matrix, the bases orthogonalised (engine/merge/subspace.py). Compare searches α over 0.1 … 3.0,
the paper's own search."""

from engine.merge.declaration import CompareGrid, MergeMethod, steps
from engine.merge.methods._params import ALPHA
from engine.merge.subspace import tsv_m, tsv_parts, tsv_ranks

METHOD = MergeMethod(
    "tsv_m",
    "TSV-M (task singular vectors)",
    "https://arxiv.org/abs/2412.00081",
    (ALPHA,),
    tsv_m,
    formula="per layer: top 1/K singular triplets of each τₜ, bases orthogonalised: Δ = U⊥ Ŝ V⊥ᵀ; θ = θ₀ + α Δ",
    selection="low_rank",
    cheap=("alpha",),
    keep_rank=tsv_ranks,
    per_layer=True,
    scale_parts=tsv_parts,
    grid=CompareGrid.over(alpha=steps(0.1, 3.0, 0.1)),
    order=80,
    streams=True,
)
