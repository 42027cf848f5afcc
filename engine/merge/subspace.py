"""Subspace merges: each layer's task matrices through their singular value decompositions.

Every method reads the rows of T [K, P] as per-layer matrices [K, out, in] (`ParamSpec.matrix_view`, no
copy) and factors the layers of one shape together in one batched `torch.linalg.svd` call. The sets of
tensors each method treats as matrices, and how it merges the rest, follow each paper's public code:

- TSV-M (Gargiulo et al., "Task Singular Vectors: Reducing Task Interference in Model Merging", CVPR
  2025, §4, Eq. 5-7): every 2-D tensor (positional embedding and output projection included). Per layer
  and task, the top r = ⌊p/K⌋ singular triplets of τₜ (p = min(out, in); at least one); the kept U and V
  blocks are concatenated and replaced by their nearest orthogonal matrices (the polar factor P Qᵀ of
  each stack's SVD P Σ Qᵀ); Δ = U⊥ diag(Ŝ) V⊥ᵀ with the tasks' own singular values. Other tensors: the
  mean of the task vectors. θ = θ₀ + α·Δ on every tensor (α default 1, as the paper's code).
- Iso-C (Marczak et al., "No Task Left Behind: Isotropic Model Merging with Common and Task-Specific
  Subspaces", ICML 2025, §4.1, Eq. 7): every 2-D tensor; the summed task matrix M = Σₜ τₜ = U S Vᵀ
  with every singular value replaced by their mean over all min(out, in) of them: Δ = mean(S)·U Vᵀ.
  Other tensors: the mean of the task vectors. θ = θ₀ + α·Δ.
- Iso-CTS (same paper, §4.2, Alg. 1): the top k directions of M (the common subspace) and, for each
  task, the top s left and right singular vectors of τₜ − U_c U_cᵀ τₜ (its part outside the common
  subspace); k = p − K·s with s = round((p − ⌊f·p⌋)/K), f the common share (default 0.8, as the
  paper's code); the stacked bases are orthogonalised as in TSV-M and every singular value set to the
  mean of the combined ones. Other tensors: the mean. θ = θ₀ + α·Δ. f = 1 is Iso-C.
- CART (Choi et al., "Revisiting Weight Averaging for Model Merging", arXiv 2412.12153, §3, Eq. 4):
  θ = θ̄ + λ Σₜ LR_r(θₜ − θ̄) with θ̄ the average of the fine-tuned models, LR_r the best rank-r
  approximation, r = max(1, ⌊ρ·min(out, in)⌋) for the attention and MLP weights only (the paper's code:
  keys with "attn" or "mlp", no "ln" or "bias"); every other tensor keeps its full centred vector,
  which sums to zero over the tasks, so it stays at θ̄. The paper's text gives ρ = 8 %; its code's
  8-task configuration uses ρ = 0.12 with λ = 2: we default to that configuration, which reproduces
  its table.
Where a method's matrix set is "every 2-D tensor", the patch-embedding convolution (4-D) and the class
embedding (1-D) are not matrices: they are merged as the method's other tensors.

A low-rank layer (a LoRA adapter's update has rank r ≪ min(out, in); a layer no adapter targets is zero) has
singular values that are zero up to rounding, and the singular vectors an SVD routine returns for them are any
basis of the null space: rounding of 1e-8 in T moved TSV-M's, Iso-C's and Iso-CTS's merge of the zoo's LoRA
adapters by a quarter of its norm. So a direction whose singular value is at most max(out, in)·ε times the
largest one the layer's merge uses (the numerical-rank rule of NumPy's and PyTorch's `matrix_rank`) is left
out (`spanned`): TSV-M orthogonalises only the directions the tasks have; Iso-C and Iso-CTS keep their mean
singular value (over all min(out, in) of them, as the papers' code) on the update's span, and drop the term the
papers' formula gives to an arbitrary pairing of null spaces. A full-rank layer (every layer of the zoo's full
fine-tunes) is merged bit for bit as before.

The factorizations that do not depend on a method's parameters (the SVD of each layer group's summed
matrix, shared by Iso-C and Iso-CTS; of CART's centred vectors, for every rank) go through `memo`, a
`(key, compute) → value` cache the Workspace backs with its ComputeCache: a rank or share change then
re-truncates cached factors instead of factoring again.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from engine.params import ParamSpec, network_key
from engine.store.reader import Reader, Rows

LowRank = Callable[[str], bool]
Memo = Callable[[Hashable, Callable[[], Any]], Any]
"""(key, compute) → the value of `key`, computed by `compute()` when not kept; keys name what is factored."""


def no_memo(key: Hashable, compute: Callable[[], Any]) -> Any:
    return compute()


@dataclass(frozen=True)
class LayerRank:
    """What a low-rank method keeps of one layer: the rank it keeps per task (or in all) and the share of
    the task matrices' energy (squared Frobenius norm) those directions carry."""

    layer: str
    rank: int
    full_rank: int
    energy: float


def every_matrix(spec: ParamSpec) -> tuple[str, ...]:
    """TSV-M's and Iso's matrices: every 2-D tensor."""
    return spec.matrices()


def attention_and_mlp(spec: ParamSpec) -> tuple[str, ...]:
    """CART's matrices: the attention and MLP weights (not LayerNorms, not biases)."""
    return tuple(n for n in spec.matrices() if ("attn" in n or "mlp" in n) and "ln" not in n and "bias" not in n)


def polar(stack: torch.Tensor) -> torch.Tensor:
    """The nearest matrix with orthonormal columns (or rows) to each of [..., m, n]: P Qᵀ of P Σ Qᵀ."""
    p, _, qh = torch.linalg.svd(stack, full_matrices=False)  # [..., m, c], [..., c], [..., c, n]
    return p @ qh  # [..., m, n]


def spanned(values: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """[..., c] bool of singular values [..., c] of a layer of shape m × n: above max(m, n)·ε times the largest
    of their last dimension (module docstring: the directions a merge keeps on a low-rank layer)."""
    tolerance = max(m, n) * torch.finfo(values.dtype).eps * values.amax(dim=-1, keepdim=True)  # [..., 1]
    return values > tolerance  # [..., c]


def top_singular(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top k singular triplets of each of [..., m, n], through the eigendecomposition of the smaller Gram
    matrix in float64. Used for rank-deficient inputs (a task matrix minus its part in the common subspace
    has p − k zero singular values), where LAPACK's divide-and-conquer SVD can fail to converge."""
    wide = x.shape[-2] < x.shape[-1]
    a = (x if wide else x.transpose(-1, -2)).double()  # [..., r, c] with r ≤ c
    values, vectors = torch.linalg.eigh(a @ a.transpose(-1, -2))  # ascending: [..., r], [..., r, r]
    top = vectors[..., -k:].flip(-1)  # [..., r, k] the top k left singular vectors of `a`
    sigma = values[..., -k:].flip(-1).clamp(min=0).sqrt()  # [..., k]
    right = (top.transpose(-1, -2) @ a) / sigma.clamp(min=torch.finfo(torch.float64).tiny)[..., None]  # [..., k, c]
    u, vh = (top, right) if wide else (right.transpose(-1, -2), top.transpose(-1, -2))
    return u.to(x.dtype), sigma.to(x.dtype), vh.to(x.dtype)


STACK_BYTES = 256 * 2**20  # stacked task matrices factored at once: the SVDs' inputs and outputs stay near 3× this


def layer_stacks(spec: ParamSpec, T: Rows, names: Sequence[str]) -> Iterator[tuple[tuple[str, ...], torch.Tensor]]:
    """(names, stacked task matrices [L, K, m, n]) of layers of one shape, a few at a time: as many as fit in
    `STACK_BYTES` (at least one), so a large pool's factorizations never hold every layer's copy at once (a
    ViT-B/32 MLP matrix of 8 tasks is 75 MB; the demo zoo's groups fit whole). Each stack is one float32 copy
    (a bfloat16 T widened as it is copied, a store's rows densified into it); a T mapped from a built store
    gives each layer's pages back once copied, so out of core the process holds the stacks, not the file."""
    reader, work = Reader.of(T), _work(T)
    for group in spec.by_shape(names).values():
        m, n = spec.shapes[spec.names.index(group[0])]
        at_once = max(1, STACK_BYTES // (T.shape[0] * m * n * work.itemsize))
        for start in range(0, len(group), at_once):
            chunk = group[start : start + at_once]
            stacked = torch.empty(len(chunk), T.shape[0], m, n, dtype=work, device=T.device)  # [L, K, m, n]
            for into, name in zip(stacked, chunk):  # a few layers: a bfloat16 T is widened as it is copied
                reader.layer(spec, name, out=into)  # [K, m, n]
                reader.release_layer(spec, name)
            yield chunk, stacked


def _work(T: Rows) -> torch.dtype:
    """The dtype the factorizations run in: float32 for a bfloat16 T (a bf16 store's mapping)."""
    return torch.promote_types(T.dtype, torch.float32)


def _write(out: torch.Tensor, spec: ParamSpec, names: Sequence[str], deltas: torch.Tensor) -> None:
    for name, delta in zip(names, deltas):  # one [m, n] copy per layer: a handful of layers per call
        spec.matrix_view(out, name).copy_(delta)


OTHERS_BLOCK_ENTRIES = 1 << 22  # K·c entries of T gathered at a time for the tensors outside the matrices


def _others_mean(out: torch.Tensor, T: Rows, spec: ParamSpec, matrices: Sequence[str]) -> None:
    """Every tensor outside `matrices` gets the mean of the task vectors, gathered a block of columns at a time
    (each column's mean is its own, so the blocks change no bit), a mapped store's pages released per block."""
    keep = torch.ones(spec.numel, dtype=torch.bool, device=T.device)  # [P]
    for name in matrices:
        keep[spec.slice_of(name)] = False
    reader, width = Reader.of(T), max(1, OTHERS_BLOCK_ENTRIES // T.shape[0])
    for start in range(0, spec.numel, width):
        cols, chosen = slice(start, start + width), keep[start : start + width]  # [c] bool
        out[cols][chosen] = reader.columns(cols)[:, chosen].to(out.dtype).mean(dim=0)  # [c_other]
        reader.release_columns(cols)


def _rank_share(p: int, k: int) -> int:
    return max(1, p // k)


def tsv_delta(T: torch.Tensor, spec: ParamSpec, *, memo: Memo = no_memo) -> torch.Tensor:
    """Δ [P] of TSV-M (α = 1)."""
    K, delta = T.shape[0], torch.empty(T.shape[1], dtype=_work(T), device=T.device)  # [P]
    matrices = every_matrix(spec)
    _others_mean(delta, T, spec, matrices)
    for names, tau in layer_stacks(spec, T, matrices):
        L, _, m, n = tau.shape
        r = _rank_share(min(m, n), K)
        u, s, vh = memo(("task_svd", names), lambda: torch.linalg.svd(tau, full_matrices=False))  # [L, K, m|p|n, p]
        u_hat = u[..., :r].permute(0, 2, 1, 3).reshape(L, m, K * r)  # [L, m, K·r] task blocks side by side
        s_hat = s[..., :r].reshape(L, K * r)  # [L, K·r]
        v_hat = vh[..., :r, :].reshape(L, K * r, n)  # [L, K·r, n]
        keep = spanned(s_hat, m, n)  # [L, K·r]
        u_perp = polar(torch.where(keep[:, None, :], u_hat, 0))  # [L, m, K·r]
        vh_perp = polar(torch.where(keep[:, :, None], v_hat, 0))  # [L, K·r, n]
        _write(delta, spec, names, (u_perp * torch.where(keep, s_hat, 0)[:, None, :]) @ vh_perp)  # [L, m, n]
    return delta


def _sum_svd(names: tuple[str, ...], tau: torch.Tensor, memo: Memo) -> tuple[torch.Tensor, ...]:
    """U, S, Vᵀ of each layer's summed task matrix M = Σₜ τₜ: [L, m, p], [L, p], [L, p, n]."""
    return memo(("sum_svd", names), lambda: torch.linalg.svd(tau.sum(dim=1), full_matrices=False))


def iso_c_delta(T: torch.Tensor, spec: ParamSpec, *, memo: Memo = no_memo) -> torch.Tensor:
    """Δ [P] of Iso-C (α = 1)."""
    delta = torch.empty(T.shape[1], dtype=_work(T), device=T.device)  # [P]
    matrices = every_matrix(spec)
    _others_mean(delta, T, spec, matrices)
    for names, tau in layer_stacks(spec, T, matrices):
        u, s, vh = _sum_svd(names, tau, memo)  # [L, m, p], [L, p], [L, p, n]
        on_span = torch.where(spanned(s, *tau.shape[-2:])[:, None, :], u, 0)  # [L, m, p]
        _write(delta, spec, names, s.mean(dim=1)[:, None, None] * (on_span @ vh))  # [L, m, n]
    return delta


def iso_cts_split(p: int, k: int, share: float) -> tuple[int, int]:
    """(common directions, directions per task) of a p-dimensional layer, summing to p exactly."""
    specific = round((p - int(p * share)) / k)  # per task; Python's round, as the paper's code
    return p - k * specific, specific


def iso_cts_delta(T: torch.Tensor, spec: ParamSpec, *, share: float, memo: Memo = no_memo) -> torch.Tensor:
    """Δ [P] of Iso-CTS (α = 1) with common share `share`."""
    K, delta = T.shape[0], torch.empty(T.shape[1], dtype=_work(T), device=T.device)  # [P]
    matrices = every_matrix(spec)
    _others_mean(delta, T, spec, matrices)
    for names, tau in layer_stacks(spec, T, matrices):
        L, _, m, n = tau.shape
        common, s_task = iso_cts_split(min(m, n), K, share)
        u, s, vh = _sum_svd(names, tau, memo)  # [L, m, p], [L, p], [L, p, n]
        u_c = u[..., :common]  # [L, m, k]
        bases_u, bases_v, values = [], [], []
        if s_task > 0:
            outside = tau - u_c[:, None] @ (u_c[:, None].transpose(-1, -2) @ tau)  # [L, K, m, n]
            ut, st, vht = top_singular(outside, s_task)  # [L, K, m, s], [L, K, s], [L, K, s, n]
            bases_u.append(ut.permute(0, 2, 1, 3).reshape(L, m, K * s_task))  # [L, m, K·s]
            bases_v.append(vht.reshape(L, K * s_task, n))  # [L, K·s, n]
            values.append(st.reshape(L, K * s_task))  # [L, K·s]
        bases_u.append(u_c)
        bases_v.append(vh[..., :common, :])  # [L, k, n]
        values.append(s[..., :common])  # [L, k]
        combined = torch.cat(values, dim=-1)  # [L, p]
        keep = spanned(combined, m, n)  # [L, p]
        u_perp = polar(torch.where(keep[:, None, :], torch.cat(bases_u, dim=-1), 0))  # [L, m, p]
        vh_perp = polar(torch.where(keep[:, :, None], torch.cat(bases_v, dim=-2), 0))  # [L, p, n]
        level = combined.mean(dim=-1)  # [L] one singular value for every direction
        _write(delta, spec, names, level[:, None, None] * (torch.where(keep[:, None, :], u_perp, 0) @ vh_perp))
    return delta


def cart_low_rank(
    T: torch.Tensor, spec: ParamSpec, *, rank_share: float, memo: Memo = no_memo
) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ̄ − θ₀, Σₜ LR_r(θₜ − θ̄)) [P] each: CART's θ = θ₀ + first + λ·second."""
    mean = T.mean(dim=0)  # [P] θ̄ − θ₀
    centred_sum = torch.zeros_like(mean)  # [P]: full centred vectors sum to zero outside the low-rank set
    for names, tau in layer_stacks(spec, T, attention_and_mlp(spec)):
        r = max(1, int(rank_share * min(tau.shape[-2:])))
        u, s, vh = memo(  # [L, K, m, p], [L, K, p], [L, K, p, n] of θₜ − θ̄, the same for every rank
            ("centred_svd", names),
            lambda: torch.linalg.svd(tau - tau.mean(dim=1, keepdim=True), full_matrices=False),
        )
        low = (u[..., :r] * s[..., None, :r]) @ vh[..., :r, :]  # [L, K, m, n] LR_r(cₜ)
        _write(centred_sum, spec, names, low.sum(dim=1))  # [L, m, n]
    return mean, centred_sum


# Each method as θ = base + s·direction (s its final scale α or λ): the Workspace caches the two parts per
# setting of the other parameters, so moving s costs one pass over [P] (`MergeMethod.scale_parts`).


def tsv_parts(
    theta0: torch.Tensor, T: torch.Tensor, *, spec: ParamSpec, memo: Memo = no_memo
) -> tuple[torch.Tensor, torch.Tensor]:
    return theta0, tsv_delta(T, spec, memo=memo)


def iso_c_parts(
    theta0: torch.Tensor, T: torch.Tensor, *, spec: ParamSpec, memo: Memo = no_memo
) -> tuple[torch.Tensor, torch.Tensor]:
    return theta0, iso_c_delta(T, spec, memo=memo)


def iso_cts_parts(
    theta0: torch.Tensor, T: torch.Tensor, *, spec: ParamSpec, share: float, memo: Memo = no_memo
) -> tuple[torch.Tensor, torch.Tensor]:
    return theta0, iso_cts_delta(T, spec, share=share, memo=memo)


def cart_parts(
    theta0: torch.Tensor, T: torch.Tensor, *, spec: ParamSpec, rank_share: float, memo: Memo = no_memo
) -> tuple[torch.Tensor, torch.Tensor]:
    mean, low = cart_low_rank(T, spec, rank_share=rank_share, memo=memo)  # [P] each
    return theta0 + mean, low


def tsv_m(theta0: torch.Tensor, T: torch.Tensor, *, spec: ParamSpec, alpha: float, out=None) -> torch.Tensor:
    return _compose(tsv_parts(theta0, T, spec=spec), alpha, out)


def iso_c(theta0: torch.Tensor, T: torch.Tensor, *, spec: ParamSpec, alpha: float, out=None) -> torch.Tensor:
    return _compose(iso_c_parts(theta0, T, spec=spec), alpha, out)


def iso_cts(
    theta0: torch.Tensor, T: torch.Tensor, *, spec: ParamSpec, alpha: float, share: float, out=None
) -> torch.Tensor:
    return _compose(iso_cts_parts(theta0, T, spec=spec, share=share), alpha, out)


def cart(
    theta0: torch.Tensor, T: torch.Tensor, *, spec: ParamSpec, lam: float, rank_share: float, out=None
) -> torch.Tensor:
    return _compose(cart_parts(theta0, T, spec=spec, rank_share=rank_share), lam, out)


def _compose(parts: tuple[torch.Tensor, torch.Tensor], scale: float, out: torch.Tensor | None) -> torch.Tensor:
    base, direction = parts  # [P] each
    return torch.add(base, direction, alpha=scale, out=out)  # [P]


def _energy(s: torch.Tensor, r: int) -> float:
    """Share of Σ s² in the top r of each row of singular values [..., p]."""
    power = s.double() ** 2
    return float(power[..., :r].sum() / power.sum().clamp(min=torch.finfo(torch.float64).tiny))


def tsv_ranks(T: torch.Tensor, spec: ParamSpec, params) -> tuple[LayerRank, ...]:
    """Per matrix: the ⌊p/K⌋ directions kept per task (fewer where no task has them: the most any task keeps),
    and the share of the tasks' energy they carry."""
    rows = []
    for names, tau in layer_stacks(spec, T, every_matrix(spec)):
        L, K, m, n = tau.shape
        s = torch.linalg.svdvals(tau)  # [L, K, p]
        r = _rank_share(s.shape[-1], K)
        kept = spanned(s[..., :r].reshape(L, K * r), m, n).view(L, K, r).sum(dim=-1).amax(dim=-1)  # [L]
        rows += [LayerRank(name, int(kept[i]), s.shape[-1], _energy(s[i], r)) for i, name in enumerate(names)]
    return _in_order(spec, rows)


def iso_c_ranks(T: torch.Tensor, spec: ParamSpec, params) -> tuple[LayerRank, ...]:
    """Per matrix: Iso-C keeps every direction the summed matrix has (rank p for full fine-tunes, fewer for LoRA
    adapters), with all of its energy."""
    rows = []
    for names, tau in layer_stacks(spec, T, every_matrix(spec)):
        s = torch.linalg.svdvals(tau.sum(dim=1))  # [L, p]
        kept = spanned(s, *tau.shape[-2:]).sum(dim=-1)  # [L]
        rows += [LayerRank(name, int(kept[i]), s.shape[-1], 1.0) for i, name in enumerate(names)]
    return _in_order(spec, rows)


def iso_cts_ranks(T: torch.Tensor, spec: ParamSpec, params) -> tuple[LayerRank, ...]:
    """Per matrix: the size k of the common subspace (fewer where the summed matrix has fewer directions, as LoRA
    adapters' has), and the share of the summed matrix's energy in it."""
    rows = []
    for names, tau in layer_stacks(spec, T, every_matrix(spec)):
        s = torch.linalg.svdvals(tau.sum(dim=1))  # [L, p]
        common, _ = iso_cts_split(s.shape[-1], T.shape[0], float(params["share"]))
        kept = spanned(s[:, :common], *tau.shape[-2:]).sum(dim=-1)  # [L]
        rows += [LayerRank(name, int(kept[i]), s.shape[-1], _energy(s[i], common)) for i, name in enumerate(names)]
    return _in_order(spec, rows)


def cart_ranks(T: torch.Tensor, spec: ParamSpec, params) -> tuple[LayerRank, ...]:
    """Per attention or MLP weight: the rank r kept of each centred vector, and the share of their energy."""
    rows = []
    for names, tau in layer_stacks(spec, T, attention_and_mlp(spec)):
        s = torch.linalg.svdvals(tau - tau.mean(dim=1, keepdim=True))  # [L, K, p]
        r = max(1, int(float(params["rank_share"]) * s.shape[-1]))
        rows += [LayerRank(n, r, s.shape[-1], _energy(s[i], r)) for i, n in enumerate(names)]
    return _in_order(spec, rows)


def _in_order(spec: ParamSpec, rows: list[LayerRank]) -> tuple[LayerRank, ...]:
    """Rows in network order (`network_key`), as the merge page's panel lists them."""
    return tuple(sorted(rows, key=lambda row: network_key(row.layer)))
