"""Task rows read lazily from the checkpoints themselves: mergekit's way, no store built.

A `CheckpointRow` answers a read of columns [start, stop) by reading each tensor of θ_t that the range
touches (one `LazyTensor.read_into`, i.e. a positioned read of the file, no whole-checkpoint load) and
subtracting θ₀'s columns. A tensor is read whole even when the range covers a part of it, and the last one read
is kept, so walking a row block by block reads each tensor about once. Nothing is written to disk, but every
read pays the format's cost again (a bfloat16 file widened, a pickle's zip members located, HF tensors
renamed), and a checkpoint whose sidecar hash is not yet checked is hashed once, whole, when its row is made.
bench/scale.py measures it against the built store (engine/store/built.py).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

import torch

from engine.io.checkpoints import LazyCheckpoint
from engine.params import ParamSpec


@dataclass(frozen=True)
class CheckpointRow:
    """τ = θ − θ₀ of one lazily opened checkpoint, read by column range."""

    checkpoint: LazyCheckpoint
    spec: ParamSpec
    theta0: torch.Tensor  # [P] float32
    last: list = field(default_factory=list, compare=False)  # [(index, tensor)]: the last tensor read

    @classmethod
    def open(cls, checkpoint: LazyCheckpoint, spec: ParamSpec, theta0: torch.Tensor) -> CheckpointRow:
        """The row of `checkpoint`; a sidecar hash still to check is checked now (one full read, remembered)."""
        if checkpoint.verify:
            checkpoint.read_visual_into(spec, torch.empty(spec.numel, dtype=torch.float32))
        return cls(checkpoint, spec, theta0)

    def read(self, start: int, stop: int, out: torch.Tensor) -> None:
        visual = self.checkpoint.visual
        first = bisect_right(self.spec.offsets, start) - 1
        for i in range(first, len(self.spec.names)):  # the tensors the range touches: few per block
            offset, size = self.spec.offsets[i], self.spec.sizes[i]
            if offset >= stop:
                break
            a, b = max(start, offset), min(stop, offset + size)
            out[a - start : b - start].copy_(self._tensor(i, visual)[a - offset : b - offset])
        out.sub_(self.theta0[start:stop])  # [c]

    def _tensor(self, i: int, visual: dict) -> torch.Tensor:
        """Tensor i of θ, flat float32, read whole (or the one kept from the last read)."""
        if self.last and self.last[0][0] == i:
            return self.last[0][1]
        values = torch.empty(self.spec.sizes[i], dtype=torch.float32)  # [size_i]
        visual[self.spec.names[i]].read_into(values.view(self.spec.shapes[i]))
        self.last[:] = [(i, values)]
        return values
