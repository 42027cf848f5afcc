"""KnOTS (Stoica et al., "Model Merging with SVD to Tie the KnOTS", ICLR 2025, §4, Eq. 2-4).

Per layer, the task updates ΔWₜ [O, I] are concatenated along the input, [ΔW₁ … ΔW_K] = U S [V₁ … V_K] (one SVD,
float64, directions with s ≤ 1e-5 dropped), so every task lives in the shared basis U as S Vₜ [r, I]. A task
merge runs on the S Vₜ, flattened over all layers into one vector per task, and the result goes back through U:
Δ = U · merge(S V₁, …, S V_K); θ = θ₀ + λ Δ. Inner merges, as KnOTS' public code (gstoica27/KnOTS, task_merger.py,
masking_ops.py):
- "ties": each task keeps its top-d share of entries by magnitude over all its layers together (not per layer;
  entries tied with the cut are kept), signs are elected by the summed kept values (a zero sum takes the
  majority sign), and each entry is the mean of the kept entries that agree (the "disjoint mean");
- "ta": the top-d share kept the same way, then summed (d = 1: Δ = Σₜ ΔWₜ, task arithmetic exactly);
- DARE-TIES: before TIES, each entry of S Vₜ is kept with probability 1 − p and rescaled by 1/(1 − p); the drop
  mask comes from mergelab's seeded generator (KnOTS draws it from torch's global one), so it matches KnOTS in
  distribution, not bit for bit.
KnOTS merges the bare B·A of adapters with r = α (scale 1); mergelab's task vectors carry PEFT's scale s, which
is the same update for those adapters. Layers: the 2-D weights of the transformer blocks, the fused in_proj split
into its q, k and v rows (KnOTS runs on Hugging Face CLIP, whose q, k, v are separate Linears). Every other
entry stays at θ₀, as in KnOTS' code, which merges only the adapted Linears (its merge_other_params is off); on
LoRA task vectors those entries are zero anyway. Public configurations: KnOTS-TIES d = 0.2, λ = 0.6;
KnOTS-DARE-TIES d = 1, p = 0.1, λ = 0.7 (configs/vitB_r16_knots_*.py).
"""

from __future__ import annotations

import torch

from engine.merge.subspace import LayerRank, Memo, no_memo
from engine.params import ParamSpec
from engine.store.reader import Reader, Rows

SUPPORT = 1e-5  # singular values at or below this are no direction (KnOTS' threshold, absolute)
Block = tuple[str, int, int]  # (tensor name, first row, rows)


def knots_blocks(spec: ParamSpec) -> tuple[Block, ...]:
    """The layers KnOTS merges: transformer-block weight matrices, in_proj as its q, k, v row blocks."""
    blocks: list[Block] = []
    for name in spec.matrices():
        if "resblocks." not in name or not name.endswith("weight"):
            continue
        rows = spec.shapes[spec.names.index(name)][0]
        split = 3 if name.endswith("in_proj_weight") else 1
        blocks += [(name, i * rows // split, rows // split) for i in range(split)]
    return tuple(blocks)


def shared_bases(T: Rows, spec: ParamSpec, *, memo: Memo = no_memo) -> list[tuple[Block, torch.Tensor, torch.Tensor]]:
    """Per layer: (block, U [O, r], S Vₜ stacked [K, r, I]) of the concatenated task updates (cached by `memo`);
    T is read a layer at a time (engine/store/reader.py), so a store's rows are densified one layer at a time."""

    def compute() -> list[tuple[Block, torch.Tensor, torch.Tensor]]:
        out, reader = [], Reader.of(T)
        for block in knots_blocks(spec):
            name, row, rows = block
            tau = reader.layer(spec, name)[:, row : row + rows]  # [K, O, I]
            K, _, width = tau.shape
            if not bool(tau.any()):  # a layer no task changes (adapters leave most at zero): no direction, no SVD
                out.append(
                    (
                        block,
                        tau.new_zeros(rows, 0, dtype=torch.float32),
                        tau.new_zeros(K, 0, width, dtype=torch.float32),
                    )
                )
                reader.release_layer(spec, name)
                continue
            u, s, vh = torch.linalg.svd(torch.cat(tuple(tau), dim=1).double(), full_matrices=False)
            keep = s > SUPPORT
            sv = (s[keep, None] * vh[keep]).float()  # [r, K·I]
            out.append((block, u[:, keep].float(), sv.view(-1, K, width).transpose(0, 1)))  # [K, r, I]
            reader.release_layer(spec, name)
        return out

    return memo(("knots_bases",), compute)


def knots_delta(
    T: torch.Tensor,
    spec: ParamSpec,
    *,
    density: float,
    inner: str,
    drop: float = 0.0,
    seed: float = 0.0,
    memo: Memo = no_memo,
) -> torch.Tensor:
    """Δ [P] of KnOTS at λ = 1 (zero outside its layers)."""
    delta = torch.zeros(T.shape[1], dtype=torch.promote_types(T.dtype, torch.float32), device=T.device)  # [P]
    for (name, row, rows), u, part in _merged(T, spec, density=density, inner=inner, drop=drop, seed=seed, memo=memo):
        spec.matrix_view(delta, name)[row : row + rows] = u @ part  # [O, I]
    return delta


def knots_factors(
    T: torch.Tensor, spec: ParamSpec, *, lam: float, density: float, inner: str, drop: float = 0.0, seed: float = 0.0
) -> dict[Block, tuple[torch.Tensor, torch.Tensor]]:
    """The merge kept factored: (name, row, rows) → (B = λU [O, r], A = merged S V [r, I]), rank r of the shared
    basis; what engine/io/formats/peft_export.py writes as an adapter. Layers without a direction are left out."""
    merged = _merged(T, spec, density=density, inner=inner, drop=drop, seed=seed)
    return {block: (lam * u, part) for block, u, part in merged if u.shape[1] > 0}


def _merged(
    T: torch.Tensor, spec: ParamSpec, *, density: float, inner: str, drop: float, seed: float, memo: Memo = no_memo
) -> list[tuple[Block, torch.Tensor, torch.Tensor]]:
    """Per layer: (block, U [O, r], the merged S V [r, I])."""
    bases = shared_bases(T, spec, memo=memo)
    reps = torch.cat([sv.reshape(T.shape[0], -1) for _, _, sv in bases], dim=1)  # [K, D] all layers of a task
    if drop > 0:
        generator = torch.Generator(device=reps.device).manual_seed(int(seed))
        survive = torch.rand(reps.shape, generator=generator, device=reps.device) >= drop
        reps = reps * survive / (1 - drop)
    kept = reps * top_share(reps, density)  # [K, D]
    merged = disjoint_mean(kept) if inner == "ties" else kept.sum(dim=0)  # [D]
    sizes = [sv[0].numel() for _, _, sv in bases]
    parts = merged.split(sizes)
    return [(block, u, part.view(sv.shape[1:])) for (block, u, sv), part in zip(bases, parts)]


def top_share(reps: torch.Tensor, density: float) -> torch.Tensor:
    """bool [K, D]: each row's entries at or above its (D − ⌊D·d⌋)-th smallest magnitude (KnOTS' top-k)."""
    if density >= 1 or reps.shape[1] == 0:
        return torch.ones_like(reps, dtype=torch.bool)
    k = max(1, reps.shape[1] - int(reps.shape[1] * density))
    cut = reps.abs().kthvalue(k, dim=1, keepdim=True).values  # [K, 1]
    return reps.abs() >= cut


def disjoint_mean(kept: torch.Tensor) -> torch.Tensor:
    """TIES' elected-sign mean: the sign of Σₜ (zero: the majority sign), then the mean of the agreeing entries."""
    sign = torch.sign(kept.sum(dim=0))  # [D]
    sign[sign == 0] = torch.sign(sign.sum())
    agree = torch.where(sign > 0, kept > 0, kept < 0)  # [K, D]
    chosen = kept * agree
    return chosen.sum(dim=0) / agree.sum(dim=0).clamp(min=1)  # [D]


def knots_ranks(T: torch.Tensor, spec: ParamSpec, params) -> tuple[LayerRank, ...]:
    """The shared basis' rank per layer (KnOTS keeps every supported direction, so all the energy)."""
    return tuple(
        LayerRank(block_name(spec, block), u.shape[1], min(block[2], T.shape[0] * sv.shape[2]), 1.0)
        for block, u, sv in shared_bases(T, spec)
    )


def block_name(spec: ParamSpec, block: Block) -> str:
    """A layer block's name on pages: the tensor's, with its rows when it is a part (in_proj's q, k or v)."""
    name, row, rows = block
    return name if rows == spec.shapes[spec.names.index(name)][0] else f"{name}[{row}:{row + rows}]"


def _compose(parts: tuple[torch.Tensor, torch.Tensor], lam: float, out: torch.Tensor | None) -> torch.Tensor:
    base, direction = parts  # [P] each
    return torch.add(base, direction, alpha=lam, out=out)  # [P]


# The three inner merges as method kernels (engine/merge/methods/knots_*.py) and their cached parts.


def knots_ties_parts(theta0, T, *, spec: ParamSpec, density: float, memo: Memo = no_memo):
    return theta0, knots_delta(T, spec, density=density, inner="ties", memo=memo)


def knots_ties(theta0, T, *, spec: ParamSpec, density: float, lam: float, out=None) -> torch.Tensor:
    return _compose(knots_ties_parts(theta0, T, spec=spec, density=density), lam, out)


def knots_dare_ties_parts(
    theta0, T, *, spec: ParamSpec, density: float, drop: float, seed: float, memo: Memo = no_memo
):
    return theta0, knots_delta(T, spec, density=density, inner="ties", drop=drop, seed=seed, memo=memo)


def knots_dare_ties(
    theta0, T, *, spec: ParamSpec, density: float, drop: float, seed: float, lam: float, out=None
) -> torch.Tensor:
    return _compose(knots_dare_ties_parts(theta0, T, spec=spec, density=density, drop=drop, seed=seed), lam, out)


def knots_ta_parts(theta0, T, *, spec: ParamSpec, density: float, memo: Memo = no_memo):
    return theta0, knots_delta(T, spec, density=density, inner="ta", memo=memo)


def knots_ta(theta0, T, *, spec: ParamSpec, density: float, lam: float, out=None) -> torch.Tensor:
    return _compose(knots_ta_parts(theta0, T, spec=spec, density=density), lam, out)
