"""Magnitude pruning + task arithmetic: each task vector's top-d magnitudes (TIES's trim, Yadav et al.,
NeurIPS 2023), summed with λₜ: the plain baseline of the sparse methods."""

from engine.merge.declaration import CompareGrid, MergeMethod, steps
from engine.merge.methods._params import DENSITY, LAM_EACH
from engine.merge.sparse_methods import magnitude, magnitude_keep, magnitude_parts

METHOD = MergeMethod(
    "magnitude",
    "Magnitude pruning + task arithmetic",
    "https://arxiv.org/abs/2306.01708",
    (DENSITY, LAM_EACH),
    magnitude,
    formula="θ = θ₀ + Σₜ λₜ top_d(τₜ)",
    selection="magnitude",
    cheap=("lam",),
    keep_mask=magnitude_keep,
    scale_parts=magnitude_parts,
    grid=CompareGrid.over(density=(0.1, 0.2, 0.5), lam=steps(0.0, 1.0, 0.1)),
    order=50,
    streams=True,
)
