"""Iso-CTS (Marczak et al., ICML 2025): per layer, the top directions of Σₜ τₜ (a share f of the rank) and
each task's own directions outside them, orthogonalised and isotropic (engine/merge/subspace.py). Compare
searches α over 0.1 … 3.0 (the paper's search) at two shares: two expensive axes, so a coarser grid."""

from engine.merge.declaration import CompareGrid, MergeMethod, Param, steps
from engine.merge.methods._params import ALPHA
from engine.merge.subspace import iso_cts, iso_cts_parts, iso_cts_ranks

SHARE = Param("share", 0.8, 0.01, 1.0, 0.01, "share f of each layer's directions in the common subspace", symbol="f")

METHOD = MergeMethod(
    "iso_cts",
    "Iso-CTS (common and task-specific subspaces)",
    "https://arxiv.org/abs/2502.04959",
    (ALPHA, SHARE),
    iso_cts,
    formula="per layer: top directions of Σₜ τₜ + each task's own outside them, orthogonalised, isotropic",
    selection="low_rank",
    cheap=("alpha",),
    keep_rank=iso_cts_ranks,
    per_layer=True,
    scale_parts=iso_cts_parts,
    grid=CompareGrid.over(share=(0.5, 0.8), alpha=steps(0.1, 3.0, 0.1)),
    order=100,
    streams=True,
)
