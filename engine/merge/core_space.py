"""Core Space merging (Panariello, Marczak et al., "Accurate and Efficient Low-Rank Model Merging in Core Space",
NeurIPS 2025, §3, Eq. 5-8).

Per layer (the blocks KnOTS merges: transformer-block weights, in_proj as its q, k, v rows), every task update
ΔWₜ [O, I] of a LoRA pool has rank ≤ r. Reference bases U [O, R] (the column space of [ΔW₁ … ΔW_K]) and V [I, R']
(the row space of [ΔW₁; …; ΔW_K]) hold every task exactly: its core Mₜ = Uᵀ ΔWₜ V [R, R'] gives back
U Mₜ Vᵀ = ΔWₜ (the paper's Theorem 1: no information is lost). A merge runs on the K small cores and the result
goes back through the bases: Δ = U · merge(M₁, …, M_K) · Vᵀ; θ = θ₀ + λ Δ. Inner merges, as the authors' code
(apanariello4/core-space-merging, task_merger.py, MatrixPerLayerMerger with merge_space "core"):
- "ta": Σₜ Mₜ, which is task arithmetic exactly (a reduction the tests check);
- "ties": per layer, each core keeps its top-d share of entries by magnitude, signs are elected by the summed kept
  entries, and each entry is the mean of the kept entries that agree (their per-layer `_process_ties`; KnOTS
  trims over all layers of a task instead);
- "tsv": TSV-M on the cores: each core's top ⌊p/K⌋ singular triplets (p = min(R, R'), at least one), the stacked
  bases replaced by their polar factors, the tasks' own singular values kept;
- "iso_c": Iso-C on the cores: M = Σₜ Mₜ with every singular value set to their mean.
Choice (the paper computes its bases from adapters' factors): the authors take U from the SVD of the stacked
factors [B₁ … B_K] and V from that of [A₁; …; A_K]; mergelab reads task vectors (a layer of a store at a time, so a
factored store gives the same bits as dense rows) and takes U and V from the SVDs of the stacked updates, in
float64, dropping singular values ≤ 1e-5 as KnOTS does. Both span the same subspaces when every Aₜ and Bₜ has full
rank r, and TA, TSV and Iso-C are unchanged by rotating a basis within its subspace, so those three equal the
authors'; TIES works entry by entry, so on the same subspaces its cores can be oriented differently and its result
can differ. Entries outside the layers stay at θ₀ (the authors merge only the adapted Linears); on a pool of full
fine-tunes the bases span the whole layer and nothing is compressed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.merge.knots import SUPPORT, Block, block_name, disjoint_mean, knots_blocks, top_share
from engine.merge.subspace import LayerRank, Memo, no_memo, polar
from engine.params import ParamSpec
from engine.store.reader import Reader, Rows

Core = tuple[Block, torch.Tensor, torch.Tensor, torch.Tensor]  # (block, U [O, R], cores [K, R, R'], V [I, R'])


def core_spaces(T: Rows, spec: ParamSpec, *, memo: Memo = no_memo) -> list[Core]:
    """Per layer: the reference bases and every task's core (cached by `memo`); T is read a layer at a time."""

    def compute() -> list[Core]:
        out, reader = [], Reader.of(T)
        for block in knots_blocks(spec):
            name, row, rows = block
            tau = reader.layer(spec, name)[:, row : row + rows].double()  # [K, O, I]
            out.append((block, *_core(tau)))
            reader.release_layer(spec, name)
        return out

    return memo(("core_spaces",), compute)


def _core(tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U [O, R], cores [K, R, R'] and V [I, R'] of one layer's updates [K, O, I] (float64 in, float32 out)."""
    K, rows, width = tau.shape
    if not bool(tau.any()):  # a layer no task changes (adapters leave most at zero): an empty core
        return tau.new_zeros(rows, 0).float(), tau.new_zeros(K, 0, 0).float(), tau.new_zeros(width, 0).float()
    u, s_u, _ = torch.linalg.svd(torch.cat(tuple(tau), dim=1), full_matrices=False)  # [O, ·] of [O, K·I]
    _, s_v, vh = torch.linalg.svd(tau.reshape(K * rows, width), full_matrices=False)  # [·, I] of [K·O, I]
    u, v = u[:, s_u > SUPPORT], vh[s_v > SUPPORT].T  # [O, R], [I, R']
    cores = u.T @ tau @ v  # [K, R, R']
    return u.float(), cores.float(), v.float()


def merged_core(cores: torch.Tensor, *, inner: str, density: float = 1.0) -> torch.Tensor:
    """One layer's cores [K, R, R'] merged by `inner` ("ta", "ties", "tsv", "iso_c") into [R, R']."""
    K, R, R2 = cores.shape
    if R == 0 or R2 == 0:
        return cores.new_zeros(R, R2)
    if inner == "ta":
        return cores.sum(dim=0)  # [R, R']
    if inner == "ties":
        flat = cores.reshape(K, -1)  # [K, R·R']
        return disjoint_mean(flat * top_share(flat, density)).view(R, R2)
    if inner == "tsv":
        return _tsv(cores)
    if inner == "iso_c":
        u, s, vh = torch.linalg.svd(cores.sum(dim=0), full_matrices=False)  # [R, p], [p], [p, R']
        return s.mean() * (u @ vh)
    raise ValueError(f"unknown inner merge {inner!r}: use ta, ties, tsv or iso_c")


def _tsv(cores: torch.Tensor) -> torch.Tensor:
    """TSV-M of cores [K, R, R']: every core's top ⌊p/K⌋ triplets, bases orthogonalised (engine/merge/subspace.py)."""
    K, R, R2 = cores.shape
    r = max(1, min(R, R2) // K)
    u, s, vh = torch.linalg.svd(cores, full_matrices=False)  # [K, R, p], [K, p], [K, p, R']
    u_hat = u[..., :r].permute(1, 0, 2).reshape(R, K * r)  # [R, K·r] task blocks side by side
    v_hat = vh[:, :r].reshape(K * r, R2)  # [K·r, R']
    return (polar(u_hat) * s[:, :r].reshape(K * r)) @ polar(v_hat)  # [R, R']


def core_delta(T: Rows, spec: ParamSpec, *, inner: str, density: float = 1.0, memo: Memo = no_memo) -> torch.Tensor:
    """Δ [P] of a Core Space merge at scale 1 (zero outside its layers)."""
    delta = torch.zeros(T.shape[1], dtype=torch.promote_types(T.dtype, torch.float32), device=T.device)  # [P]
    for (name, row, rows), u, cores, v in core_spaces(T, spec, memo=memo):
        merged = merged_core(cores, inner=inner, density=density)  # [R, R']
        spec.matrix_view(delta, name)[row : row + rows] = u @ merged @ v.T  # [O, I]
    return delta


def core_ranks(T: Rows, spec: ParamSpec, params) -> tuple[LayerRank, ...]:
    """The core's size per layer: the rank every task keeps there in full (all of its energy)."""
    return tuple(
        LayerRank(block_name(spec, block), u.shape[1], min(block[2], T.shape[0] * v.shape[0]), 1.0)
        for block, u, _, v in core_spaces(T, spec)
    )


def _compose(parts: Sequence[torch.Tensor], scale: float, out: torch.Tensor | None) -> torch.Tensor:
    base, direction = parts  # [P] each
    return torch.add(base, direction, alpha=scale, out=out)  # [P]


# The inner merges as method kernels (engine/merge/methods/core_*.py) and their cached parts.


def core_ties_parts(theta0, T, *, spec: ParamSpec, density: float, memo: Memo = no_memo):
    return theta0, core_delta(T, spec, inner="ties", density=density, memo=memo)


def core_ties(theta0, T, *, spec: ParamSpec, density: float, lam: float, out=None) -> torch.Tensor:
    return _compose(core_ties_parts(theta0, T, spec=spec, density=density), lam, out)


def core_tsv_parts(theta0, T, *, spec: ParamSpec, memo: Memo = no_memo):
    return theta0, core_delta(T, spec, inner="tsv", memo=memo)


def core_tsv(theta0, T, *, spec: ParamSpec, alpha: float, out=None) -> torch.Tensor:
    return _compose(core_tsv_parts(theta0, T, spec=spec), alpha, out)


def core_iso_c_parts(theta0, T, *, spec: ParamSpec, memo: Memo = no_memo):
    return theta0, core_delta(T, spec, inner="iso_c", memo=memo)


def core_iso_c(theta0, T, *, spec: ParamSpec, alpha: float, out=None) -> torch.Tensor:
    return _compose(core_iso_c_parts(theta0, T, spec=spec), alpha, out)
