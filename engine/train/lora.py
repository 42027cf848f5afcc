"""LoRA's trainable part for fine-tuning an open_clip image tower: θ = θ₀ + s·B·A on chosen Linears.

Hu et al., ICLR 2022 (LoRA), Eq. 3: a frozen weight W₀ [out, in] is used as W₀ + s·B·A with B [out, r] and
A [r, in] trained. As in PEFT (which users compare against): B starts at zero and A uniform in ±1/√in (PEFT's
kaiming_uniform with a = √5), so training starts at θ₀; the scale is s = α/r. Targets, named as the Hugging Face
CLIP modules they become on export (engine/io/formats/peft_export.py): `q`, `k`, `v` (the row blocks 0:W, W:2W,
2W:3W of open_clip's fused `attn.in_proj_weight`, one factor pair each, as PEFT adapts HF's separate q/k/v_proj),
`out` (`attn.out_proj`), `fc1` (`mlp.c_fc`), `fc2` (`mlp.c_proj`). The KnOTS benchmark (Stoica et al., ICLR 2025)
adapts q, k, v and out; so does the default.

Every adapted block of rows is a contiguous run of the flat θ [P], so the update is placed with one index_add per
shape of factor (at most three: [W, W], [4W, W], [W, 4W]); the factors of one shape are stacked and multiplied in
one batched matmul.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from engine.errors import ParameterError
from engine.params import ParamSpec

LORA_TARGETS: dict[str, tuple[str, int | None]] = {  # target → (weight in a resblock, its q/k/v block of in_proj)
    "q": ("attn.in_proj_weight", 0),
    "k": ("attn.in_proj_weight", 1),
    "v": ("attn.in_proj_weight", 2),
    "out": ("attn.out_proj.weight", None),
    "fc1": ("mlp.c_fc.weight", None),
    "fc2": ("mlp.c_proj.weight", None),
}
DEFAULT_TARGETS = ("q", "k", "v", "out")
_RESBLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class LoraSite:
    """One adapted block of rows: rows row:row + rows of tower weight `name` [.., columns]; its first entry sits at
    flat offset `start` of θ."""

    name: str
    row: int
    rows: int
    columns: int
    start: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.columns


def lora_sites(spec: ParamSpec, targets: tuple[str, ...]) -> tuple[LoraSite, ...]:
    """The blocks `targets` adapt in a tower with parameters `spec`, in the spec's order; ParameterError when a
    target is unknown or the tower has no such Linear."""
    unknown = sorted(set(targets) - set(LORA_TARGETS))
    if unknown or not targets:
        raise ParameterError("lora targets", f"{unknown or 'none'} given", fix=f"choose among {list(LORA_TARGETS)}")
    sites = []
    for name, shape, offset in zip(spec.names, spec.shapes, spec.offsets):
        match = _RESBLOCK.match(name)
        for target in targets if match else ():
            weight, block = LORA_TARGETS[target]
            if match.group(2) == weight:
                rows = shape[0] if block is None else shape[0] // 3
                row = 0 if block is None else block * rows
                sites.append(LoraSite(name, row, rows, shape[1], offset + row * shape[1]))
    if not sites:
        raise ParameterError("lora targets", f"{list(targets)} match no Linear of this tower", fix="fine-tune a ViT")
    return tuple(sites)


class LoraUpdate(nn.Module):
    """The trainable factors of every site, grouped by shape: A [n, r, in] and B [n, out, r] per group."""

    def __init__(self, spec: ParamSpec, *, rank: int, alpha: float, targets: tuple[str, ...], seed: int) -> None:
        super().__init__()
        if rank < 1 or not alpha > 0:
            raise ParameterError("lora", f"rank {rank}, α {alpha}", fix="use a rank ≥ 1 and α > 0")
        self.rank, self.scale, self.numel = rank, alpha / rank, spec.numel
        sites = lora_sites(spec, targets)
        self.groups = tuple(
            tuple(s for s in sites if s.shape == shape) for shape in dict.fromkeys(s.shape for s in sites)
        )
        generator = torch.Generator().manual_seed(seed)
        self.down = nn.ParameterList(
            nn.Parameter(
                (torch.rand(len(g), rank, g[0].columns, generator=generator) * 2 - 1) / math.sqrt(g[0].columns)
            )
            for g in self.groups
        )  # [n, r, in] each
        self.up = nn.ParameterList(
            nn.Parameter(torch.zeros(len(g), g[0].rows, rank)) for g in self.groups
        )  # [n, out, r]
        for i, group in enumerate(self.groups):
            starts = torch.tensor([s.start for s in group])  # [n]
            self.register_buffer(
                f"positions{i}", (starts[:, None] + torch.arange(group[0].rows * group[0].columns)).flatten()
            )

    def theta(self, theta0: torch.Tensor) -> torch.Tensor:
        """θ₀ + s·B·A placed at every site → [P], differentiable in the factors."""
        theta = theta0
        for i, (down, up) in enumerate(zip(self.down, self.up)):
            delta = torch.bmm(up, down)  # [n, out, in]
            theta = theta.index_add(0, getattr(self, f"positions{i}"), delta.flatten(), alpha=self.scale)  # [P]
        return theta

    def factors(self) -> dict[tuple[str, int, int], tuple[torch.Tensor, torch.Tensor]]:
        """(tower name, row, rows) → (s·B [rows, r], A [r, in]), detached: what a PEFT adapter stores at scale 1."""
        return {
            (site.name, site.row, site.rows): (self.scale * up[j].detach().clone(), down[j].detach().clone())
            for group, down, up in zip(self.groups, self.down, self.up)
            for j, site in enumerate(group)
        }
