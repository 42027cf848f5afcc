"""The task store: what merges, analyses and evaluations read task vectors through.

A store holds θ₀ [P] and K task vectors τₜ = θₜ − θ₀ (Ilharco et al., ICLR 2023, Eq. 1) over one `ParamSpec`,
and gives them out in the two shapes the kernels stream:
- `block(rows, cols)`: the columns `cols` of the task rows `rows` as float32 [k, c] (the flat kernels' chunks);
- `layer(rows, name)`: one 2-D tensor of those rows as float32 [k, out, in] (the per-layer methods' matrices).
Rows are task indices: a subset of tasks is a list of indices (`subset`), never a copy of their vectors, so
merging 19 of 20 tasks costs no second [19, P] matrix. However a backing keeps its rows (a dense float32
tensor in memory, a memory-mapped file in float32 or bfloat16, a factored row densified on demand), a read
gives float32, so accumulation is float32 whatever the storage. A read may be a view of the store's own
memory (the in-memory backing, consecutive rows): callers treat it as read-only, and pass `out=` to reuse a
buffer across blocks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from engine.errors import ParameterError, ShapeError
from engine.params import ParamSpec


@runtime_checkable
class TaskStore(Protocol):
    """θ₀ and task vectors, read by row indices, column blocks and layers (float32 reads)."""

    @property
    def spec(self) -> ParamSpec: ...

    @property
    def task_names(self) -> tuple[str, ...]: ...

    @property
    def theta0(self) -> torch.Tensor: ...  # [P] float32

    def block(self, rows: Sequence[int], cols: slice, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """float32 [len(rows), cols width] of the task rows `rows` (indices)."""
        ...

    def layer(self, rows: Sequence[int], name: str, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """float32 [len(rows), out, in] of 2-D tensor `name` of the task rows `rows`."""
        ...


def row_indices(store: TaskStore, tasks: Sequence[str]) -> tuple[int, ...]:
    """The row index of each task name, in the order given (KeyError naming the unknown ones)."""
    missing = [t for t in tasks if t not in store.task_names]
    if missing:
        raise KeyError(f"tasks {missing} not in {list(store.task_names)}")
    return tuple(store.task_names.index(t) for t in tasks)


def checked_rows(rows: Sequence[int], num_tasks: int) -> tuple[int, ...]:
    """`rows` as a tuple of ints, each in [0, num_tasks) (ParameterError naming the first that is not)."""
    rows = tuple(int(r) for r in rows)
    bad = [r for r in rows if not 0 <= r < num_tasks]
    if bad:
        raise ParameterError("task rows", f"row {bad[0]} is not one of the store's {num_tasks}", fix="pick 0…K-1")
    return rows


def checked_cols(cols: slice, numel: int) -> tuple[int, int]:
    """(start, stop) of a step-1 column slice inside [0, numel]."""
    start, stop, step = cols.indices(numel)
    if step != 1 or stop < start:
        raise ParameterError("columns", f"{cols} is not a forward range of step 1", fix="read contiguous columns")
    return start, stop


def consecutive(rows: tuple[int, ...]) -> bool:
    """Whether `rows` are consecutive and ascending (a slice of a dense [K, P] matrix, so a view)."""
    return bool(rows) and rows == tuple(range(rows[0], rows[0] + len(rows)))


def output(out: torch.Tensor | None, shape: tuple[int, ...], *, like: torch.Tensor) -> torch.Tensor:
    """`out` when given (checked: float32 of `shape`), else a new float32 tensor on `like`'s device."""
    if out is None:
        return torch.empty(shape, dtype=torch.float32, device=like.device)
    if tuple(out.shape) != shape or out.dtype != torch.float32:
        raise ShapeError(
            "out", f"is {out.dtype} {tuple(out.shape)}, expected float32 {shape}", fix="pass a fitting buffer"
        )
    return out


def layer_shape(spec: ParamSpec, name: str) -> tuple[int, int]:
    """[out, in] of 2-D tensor `name` (ShapeError otherwise)."""
    shape = spec.shapes[spec.names.index(name)] if name in spec.names else None
    if shape is None or len(shape) != 2:
        raise ShapeError(name, f"is not a 2-D tensor of this spec (shape {shape})", fix="choose a matrix")
    return shape[0], shape[1]


def column_blocks(numel: int, width: int) -> Iterator[slice]:
    """[0, numel) in consecutive slices of at most `width` columns: how a flat kernel walks a store."""
    if width < 1:
        raise ParameterError("block width", f"is {width}", fix="read at least one column per block")
    for start in range(0, numel, width):
        yield slice(start, min(start + width, numel))


@dataclass(frozen=True)
class Subset:
    """The tasks `rows` of `store`, as a store: indices only, nothing of the vectors is copied.

    θ₀ is the parent's own tensor; a read maps the subset's row numbers onto the parent's."""

    parent: TaskStore
    rows: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", checked_rows(self.rows, len(self.parent.task_names)))

    @property
    def spec(self) -> ParamSpec:
        return self.parent.spec

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(self.parent.task_names[r] for r in self.rows)

    @property
    def theta0(self) -> torch.Tensor:
        return self.parent.theta0

    def block(self, rows: Sequence[int], cols: slice, *, out: torch.Tensor | None = None) -> torch.Tensor:
        return self.parent.block(self._parent_rows(rows), cols, out=out)

    def layer(self, rows: Sequence[int], name: str, *, out: torch.Tensor | None = None) -> torch.Tensor:
        return self.parent.layer(self._parent_rows(rows), name, out=out)

    def _parent_rows(self, rows: Sequence[int]) -> tuple[int, ...]:
        return tuple(self.rows[r] for r in checked_rows(rows, len(self.rows)))


def subset(store: TaskStore, tasks: Sequence[str]) -> Subset:
    """The store of `tasks` (names, in that order) of `store`: a list of row indices, no copy."""
    return Subset(store, row_indices(store, tasks))
