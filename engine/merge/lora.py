"""Merges of LoRA adapters kept factored: the result of task arithmetic on adapters is itself low rank.

Task arithmetic on adapters, Σₜ λₜ sₜ Bₜ Aₜ, is B·A with B = [λ₁s₁B₁ | … | λ_K s_K B_K] and A = [A₁; …; A_K] per
updated block of rows (a whole weight, or q, k or v of open_clip's fused in_proj): rank Σₜ rₜ per block, written
as a PEFT adapter by engine/io/formats/peft_export.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.io.formats.peft_adapter import Adapter

Block = tuple[str, int, int]  # (open_clip tower name, first row, rows)


def task_arithmetic_factors(
    adapters: Sequence[Adapter], lams: Sequence[float]
) -> dict[Block, tuple[torch.Tensor, torch.Tensor]]:
    """(name, row, rows) → (B [rows, Σr], A [Σr, in]) of Σₜ λₜ ΔWₜ over the blocks the adapters update."""
    ups: dict[Block, list[torch.Tensor]] = {}
    downs: dict[Block, list[torch.Tensor]] = {}
    for adapter, lam in zip(adapters, lams, strict=True):
        for name, parts in adapter.parts.items():
            for part in parts:
                block = (name, part.row, part.up.shape[0])
                ups.setdefault(block, []).append((lam * part.scale) * part.up.read(dtype=torch.float32))  # [rows, r]
                downs.setdefault(block, []).append(part.down.read(dtype=torch.float32))  # [r, in]
    return {block: (torch.cat(ups[block], dim=1), torch.cat(downs[block], dim=0)) for block in ups}
