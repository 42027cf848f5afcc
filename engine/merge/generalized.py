"""The generalized task-arithmetic kernel: masks × sign consensus × rescale, in one pass over T.

    τ̂ₖ = mₖ ⊙ τₖ · sₖ                 (mask from sparsify.py, rescale sₖ, e.g. DARE's 1/(1−p))
    no consensus:   θ = θ₀ + Σₖ λₖ τ̂ₖ
    TIES consensus: γ = sign(Σₖ τ̂ₖ);  τ_m = Σₖ τ̂ₖ·[sign τ̂ₖ = γ, τ̂ₖ ≠ 0] / #{k : sign τ̂ₖ = γ, τ̂ₖ ≠ 0};
                    θ = θ₀ + λ τ_m     (Yadav et al., NeurIPS 2023, §3: trim, elect sign, disjoint merge)

The mask mₖ is either given (bool [K, P]), TIES's trim as a magnitude cut per task (sparsify.MagnitudeCut), or
DARE's random drop drawn block by block (sparsify.DropStream, for a T out of core); the last two are applied
chunk by chunk so no [K, P] mask is ever written. Columns are processed in
chunks whose [K, c] temporaries live in two scratch buffers allocated once per merge: a fresh temporary per
chunk costs page faults that, on the CPU, took as long as the arithmetic (bench/sparse_merge.py). A T mapped
from a built store has each chunk's pages released once merged (engine/store/pages.py); a bfloat16 one (a bf16
store) is widened chunk by chunk into a third buffer, the arithmetic staying float32.
"""

from __future__ import annotations

import torch

from engine.merge.sparsify import DropStream, MagnitudeCut, chunk_columns
from engine.store.reader import Reader, Rows

CPU_CHUNK_ENTRIES = 1 << 18  # K·c floats per scratch buffer on the CPU (1 MiB): cache-resident


def masked_merge(
    theta0: torch.Tensor,
    T: Rows,
    *,
    mask: torch.Tensor | None,
    lam: torch.Tensor,
    cut: MagnitudeCut | None = None,
    drops: DropStream | None = None,
    rescale: torch.Tensor | None = None,
    ties: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """θ₀ [P], T [K, P], mask bool [K, P] or a magnitude cut or a drop stream or none (every entry kept), lam [K]
    (TIES: its first entry is λ) → θ [P]."""
    K, P = T.shape
    work = torch.promote_types(T.dtype, torch.float32)  # a bfloat16 T (a bf16 store) is merged in float32
    out = torch.empty_like(theta0) if out is None else out  # [P]
    lam = lam.to(device=T.device, dtype=work)  # [K]
    scale = None if rescale is None else rescale.to(device=T.device, dtype=work)[:, None]  # [K, 1]
    width = min(P, chunk_columns(T, CPU_CHUNK_ENTRIES))
    tau_buf = torch.empty(K, width, dtype=work, device=T.device)  # [K, c] kept entries of the chunk
    aux_buf = torch.empty(K, width, dtype=work, device=T.device)  # [K, c] cut mask, then agreement
    sum_buf = torch.empty(width, dtype=work, device=T.device)  # [c] the weighted sum of a linear merge
    reader = Reader.of(T)
    copied = reader.stored or T.dtype != work
    wide_buf = torch.empty(K, width, dtype=work, device=T.device) if copied else None  # [K, c] widened or densified
    for start in range(0, P, width):
        cols = slice(start, start + width)
        n = min(width, P - start)
        tau, aux = tau_buf[:, :n], aux_buf[:, :n]  # [K, n]
        block = reader.columns(cols, out=None if wide_buf is None else wide_buf[:, :n])  # [K, n] in `work`
        if mask is not None:
            torch.mul(block, aux.copy_(mask[:, cols].view(torch.uint8)), out=tau)  # uint8 → float: 3× bool's
        elif cut is not None:
            torch.mul(block, cut.keep(torch.abs(block, out=tau), start, out=aux), out=tau)
        elif drops is not None:
            torch.mul(block, drops.keep(start, n, out=aux), out=tau)
        else:
            tau.copy_(block)
        if scale is not None:
            tau.mul_(scale)
        if ties:
            torch.add(theta0[cols], _disjoint_mean(tau, agree=aux).mul_(lam[0]), out=out[cols])  # [n]
        else:
            torch.add(theta0[cols], torch.mv(tau.t(), lam, out=sum_buf[:n]), out=out[cols])  # [n]
        reader.release_columns(cols)
    return out


def _disjoint_mean(tau: torch.Tensor, *, agree: torch.Tensor) -> torch.Tensor:
    """TIES elect + disjoint merge of trimmed vectors [K, c] → [c]; overwrites `tau` and `agree` [K, c].

    The agreement indicator stays a float 0/1 tensor: summing bools over K (an integer reduction) and
    `where` is about twice as slow on the CPU, with identical results (bench/sparse_merge.py)."""
    elected = tau.sum(dim=0).sign_()  # [c]
    torch.mul(tau, elected, out=agree).gt_(0)  # [K, c] 1.0 where same sign as elected and non-zero, else 0.0
    return tau.mul_(agree).sum(dim=0).div_(agree.sum(dim=0).clamp_(min=1))  # [c]
