"""DARE + TIES (Yu et al., ICML 2024): TIES's sign election and disjoint mean over DARE's rescaled vectors
(no magnitude trim), as mergekit's dare_ties does."""

from engine.merge.declaration import CompareGrid, MergeMethod, steps
from engine.merge.methods._params import DROP, LAM_MERGED, SEED
from engine.merge.sparse_methods import dare_ties, dare_ties_parts, drop_keep

METHOD = MergeMethod(
    "dare_ties",
    "DARE + TIES",
    "https://arxiv.org/abs/2311.03099",
    (DROP, LAM_MERGED, SEED),
    dare_ties,
    formula="TIES's sign election and disjoint mean over DARE's rescaled vectors",
    selection="random_drop",
    sign_election="mass",
    cheap=("lam",),
    keep_mask=drop_keep,
    scale_parts=dare_ties_parts,
    grid=CompareGrid.over(drop=(0.5, 0.7, 0.9), lam=steps(0.5, 2.0, 0.25)),
    order=40,
    streams=True,
)
