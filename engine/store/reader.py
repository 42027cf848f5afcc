"""How a streaming kernel reads T [K, P]: one way in, whatever holds the rows.

T reaches a merge method as a float32 tensor in memory, as a built store's mapping (float32 or bfloat16; its
pages given back as the kernel goes, engine/store/pages.py), or as `StoredRows`: a task store whose rows are
kept another way, e.g. LoRA adapters as their factors (engine/store/factored.py), densified a block or a
layer at a time. The streaming kernels (engine/merge/kernels.py, generalized.py, sparsify.py, subspace.py,
knots.py) read T only through a `Reader`: columns, one row, or one layer. A method whose kernels all do
declares `streams` (engine/merge/declaration.py); any other gets T densified in memory for the call, when that
fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.errors import ParameterError
from engine.params import ParamSpec
from engine.store.pages import Pages
from engine.store.plan import COMFORT, GIB, MemoryFacts
from engine.store.protocol import Subset, TaskStore


@dataclass(frozen=True)
class StoredRows:
    """The task rows of `store`, standing where a method takes T [K, P]: shape, dtype (reads are float32) and
    device as a tensor's; `dense()` is the whole [K, P] in memory, for a method that does not stream."""

    store: TaskStore

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.store.task_names), self.store.spec.numel))

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return self.store.theta0.device

    def dim(self) -> int:
        return 2

    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    def dense(self) -> torch.Tensor:
        return self.store.block(range(self.shape[0]), slice(0, self.shape[1]))  # [K, P]

    def row(self, k: int) -> torch.Tensor:
        """Row k [P] in memory (a LoRA adapter's densified)."""
        return self.store.block((k,), slice(0, self.shape[1]))[0]  # [P]

    def select(self, rows: Sequence[int]) -> StoredRows:
        """The rows `rows` (indices, in that order): a subset of the store, nothing copied."""
        return StoredRows(Subset(self.store, tuple(rows)))


Rows = torch.Tensor | StoredRows  # what a streaming method takes as T


def in_memory(T: Rows, *, purpose: str, facts: MemoryFacts | None = None) -> torch.Tensor:
    """T [K, P] as float32 in memory for `purpose` (a method, a job that does not stream): T itself when it is a
    float32 tensor (or a mapping), else a bfloat16 mapping widened or a store's rows made whole, when that fits
    `COMFORT` of the machine's room (`facts`, default read now); else ParameterError saying what it would need."""
    if isinstance(T, torch.Tensor) and T.dtype != torch.bfloat16:
        return T
    facts = facts or MemoryFacts.read()
    need = 4 * T.numel()  # [K, P] float32
    kind = "bfloat16 store" if isinstance(T, torch.Tensor) else "task store (e.g. LoRA factors)"
    if need > COMFORT * facts.room:
        raise ParameterError(
            purpose,
            f"reads the task vectors as float32 in memory: making this pool's {kind} whole needs "
            f"{need / GIB:.1f} GiB, {facts.room / GIB:.1f} GiB are available",
            fix="use a method that streams the task vectors (python -m engine methods marks them), or open the pool "
            'with the float32 store (--store built, or "store": "built" in config.json)',
        )
    return T.float() if isinstance(T, torch.Tensor) else T.dense()  # [K, P]


@dataclass(frozen=True)
class Reader:
    """One kernel call's reads of T: a tensor's views (copied into `out` when given), or a store's reads into
    `out` (a new float32 tensor without); `release_*` gives a mapped store's pages back once read."""

    T: Rows
    pages: Pages

    @classmethod
    def of(cls, T: Rows) -> Reader:
        return cls(T, Pages.of(T) if isinstance(T, torch.Tensor) else Pages(None))

    @property
    def stored(self) -> bool:
        """Whether each read is a new densified copy (a store's), rather than a view of T."""
        return isinstance(self.T, StoredRows)

    @property
    def out_of_core(self) -> bool:
        """Whether T's rows are outside the process's own memory (a store's, or a mapped file's pages): a kernel
        then keeps no [K, P] temporary either."""
        return self.stored or self.pages.mapped is not None

    def columns(self, cols: slice, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """T[:, cols] → [K, c]."""
        if isinstance(self.T, StoredRows):
            return self.T.store.block(range(self.T.shape[0]), cols, out=out)
        view = self.T[:, cols]  # [K, c]
        return view if out is None else out.copy_(view)

    def row(self, k: int) -> torch.Tensor:
        """T[k] → [P]."""
        return self.T.row(k) if isinstance(self.T, StoredRows) else self.T[k]

    def layer(self, spec: ParamSpec, name: str, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """2-D tensor `name` of every row → [K, out, in]."""
        if isinstance(self.T, StoredRows):
            return self.T.store.layer(range(self.T.shape[0]), name, out=out)
        view = spec.matrix_view(self.T, name)  # [K, out, in]
        return view if out is None else out.copy_(view)

    def release_columns(self, cols: slice) -> None:
        if self.pages.mapped is not None:
            self.pages.release(self.T[:, cols])

    def release_row(self, k: int) -> None:
        if self.pages.mapped is not None:
            self.pages.release(self.T[k])

    def release_layer(self, spec: ParamSpec, name: str) -> None:
        if self.pages.mapped is not None:
            self.pages.release(spec.matrix_view(self.T, name))

    def release_all(self) -> None:
        if self.pages.mapped is not None:
            self.pages.release(self.T)
