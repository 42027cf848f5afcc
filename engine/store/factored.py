"""Task rows kept as LoRA factors: τ = Σ s·B·A on the adapted matrices, zero elsewhere, densified where read.

A LoRA adapter's task vector (engine/io/formats/peft_adapter.py) is the update ΔW = s·B·A of each adapted
weight (q, k, v landing in their row blocks of open_clip's fused in_proj) and zero on every other tensor, but for
`modules_to_save` copies, whose τ is dense. A `LowRankRow` keeps the factors (s folded into B) and densifies only
the matrix rows a read's column range touches: a block of columns costs that part of B·A, a layer its rows, so
a pool of adapters takes the factors' megabytes (8 rank-16 ViT-B/32 adapters on q, k, v, out: 38 MB) instead
of K model sizes (2.8 GB; bench/lora.py). τ here is s·B·A itself; a pool read in memory computes
(θ₀ + s·B·A) − θ₀, equal up to float32 rounding of θ₀'s magnitude.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import torch

from engine.io.checkpoints import LazyCheckpoint
from engine.io.formats.lazy import LowRankUpdated
from engine.io.formats.peft_adapter import read_adapter
from engine.params import ParamSpec


@dataclass(frozen=True)
class LowRankUpdate:
    """s·B·A added to matrix rows row:row + rows of one tensor."""

    row: int
    up: torch.Tensor  # s·B [rows, r] float32
    down: torch.Tensor  # A [r, in] float32

    def touched(self, a: int, b: int, width: int) -> tuple[int, int, torch.Tensor] | None:
        """(lo, hi, values) of this update inside the tensor's flat range [a, b): values [hi − lo], or None."""
        lo, hi = max(a, self.row * width), min(b, (self.row + self.up.shape[0]) * width)
        if lo >= hi:
            return None
        first, last = lo // width - self.row, -(-hi // width) - self.row  # the update's rows the range touches
        rows = (self.up[first:last] @ self.down).reshape(-1)  # [(last − first)·in]
        skip = lo - (self.row + first) * width
        return lo, hi, rows[skip : skip + hi - lo]


@dataclass(frozen=True)
class LowRankRow:
    """One task vector as low-rank updates per tensor (spec index → updates) and dense τ of replaced tensors."""

    spec: ParamSpec
    updates: Mapping[int, tuple[LowRankUpdate, ...]]
    dense: Mapping[int, torch.Tensor]  # [size] float32 τ of a modules_to_save tensor

    @classmethod
    def of_adapter(cls, checkpoint: LazyCheckpoint, spec: ParamSpec, theta0: torch.Tensor) -> LowRankRow:
        """The row of an adapter opened on the pool's base (`checkpoint.format == "peft_lora"`): its factors read
        now (megabytes), through the checkpoint's own tensors (and so its path policy)."""
        replaced = set(read_adapter(checkpoint.path).replaced)
        updates, dense = {}, {}
        for i, name in enumerate(spec.names):
            tensor = checkpoint.visual[name]
            if isinstance(tensor, LowRankUpdated):
                updates[i] = tuple(
                    LowRankUpdate(row, scale * up.read(dtype=torch.float32), down.read(dtype=torch.float32))
                    for row, scale, down, up in tensor.updates
                )
            elif name in replaced:
                values = torch.empty(spec.shapes[i], dtype=torch.float32)
                tensor.read_into(values)
                dense[i] = values.reshape(-1) - theta0[spec.offsets[i] : spec.offsets[i] + spec.sizes[i]]
        return cls(spec, updates, dense)

    @property
    def nbytes(self) -> int:
        factors = sum(u.up.nbytes + u.down.nbytes for us in self.updates.values() for u in us)
        return factors + sum(v.nbytes for v in self.dense.values())

    @cached_property
    def held(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(spec indices of the tensors this row changes, ascending; their flat offsets)."""
        held = tuple(sorted({*self.updates, *self.dense}))
        return held, tuple(self.spec.offsets[i] for i in held)

    def read(self, start: int, stop: int, out: torch.Tensor) -> None:
        out.zero_()  # [stop − start]: τ is zero outside the adapted tensors
        held, offsets = self.held
        for i in held[max(0, bisect_right(offsets, start) - 1) :]:  # the adapted tensors the range touches
            offset, size = self.spec.offsets[i], self.spec.sizes[i]
            if offset >= stop:
                break
            a, b = max(start, offset) - offset, min(stop, offset + size) - offset  # the tensor's flat range
            if a >= b:
                continue
            if i in self.dense:
                out[offset + a - start : offset + b - start].copy_(self.dense[i][a:b])
                continue
            width = self.spec.shapes[i][1]
            for update in self.updates[i]:  # q, k, v of one in_proj: up to three
                placed = update.touched(a, b, width)
                if placed is not None:
                    lo, hi, values = placed
                    out[offset + lo - start : offset + hi - start].add_(values)
