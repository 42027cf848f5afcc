"""A task store assembled row by row, each row of its own kind.

A dense row holds its task vector whole (a float32 or bfloat16 tensor, in memory or mapped from a file); a
factored row (the LoRA issue's adapters: τ = B·A per matrix) densifies only the part of a block or layer
asked for. `RowStore` asks each row of a read for its columns into the read's own float32 buffer, so a
store may mix kinds and nothing beyond one block per row is ever densified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from engine.errors import ShapeError
from engine.params import ParamSpec
from engine.store.protocol import checked_cols, checked_rows, layer_shape, output


class TaskRow(Protocol):
    """One task vector τ [P], readable a column range at a time."""

    def read(self, start: int, stop: int, out: torch.Tensor) -> None:
        """Write τ[start:stop] as float32 into `out` [stop − start]."""
        ...


@dataclass(frozen=True)
class DenseRow:
    """A task vector held whole: `values` [P] of any floating dtype (bfloat16 reads widen to float32)."""

    values: torch.Tensor  # [P]

    def read(self, start: int, stop: int, out: torch.Tensor) -> None:
        out.copy_(self.values[start:stop])  # [c], widened to float32


@dataclass(frozen=True)
class RowStore:
    """θ₀ [P] and one `TaskRow` per task: the task store of rows of mixed kinds."""

    theta0: torch.Tensor  # [P] float32
    spec: ParamSpec
    task_names: tuple[str, ...]
    rows: tuple[TaskRow, ...]

    def __post_init__(self) -> None:
        if len(self.rows) != len(self.task_names) or self.theta0.shape != (self.spec.numel,):
            raise ShapeError(
                "row store",
                f"{len(self.rows)} rows for {len(self.task_names)} tasks, θ₀ {tuple(self.theta0.shape)} "
                f"for P = {self.spec.numel}",
                fix="give one row per task and θ₀ of the spec",
            )

    def block(self, rows: Sequence[int], cols: slice, *, out: torch.Tensor | None = None) -> torch.Tensor:
        rows = checked_rows(rows, len(self.rows))
        start, stop = checked_cols(cols, self.spec.numel)
        out = output(out, (len(rows), stop - start), like=self.theta0)  # [k, c]
        for i, r in enumerate(rows):  # over tasks, not keys: each row fills its own line of the block
            self.rows[r].read(start, stop, out[i])
        return out

    def layer(self, rows: Sequence[int], name: str, *, out: torch.Tensor | None = None) -> torch.Tensor:
        shape = layer_shape(self.spec, name)
        flat = None if out is None else out.view(out.shape[0], -1)
        return self.block(rows, self.spec.slice_of(name), out=flat).view(-1, *shape)  # [k, out, in]
