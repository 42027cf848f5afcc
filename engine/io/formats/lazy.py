"""Tensors not read yet: where their bytes lie in a file, and how to assemble them.

Every checkpoint reader (safetensors, torch zip pickles, Hugging Face names) describes a checkpoint as
name → LazyTensor without reading any data. The task matrix then reads each tensor straight into its
row of T with `read_into`, so opening a pool of K checkpoints needs T and little else (no mmap of whole
files held while copying, no intermediate state dicts).
Each read opens its file through an `Opener` (default: plain `open`); a collection opened for the
dashboard rebinds its checkpoints' tensors to its path policy's `open_file` (`opened_by`), so every
read checks the real path of the descriptor it reads from.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from math import prod
from pathlib import Path
from typing import BinaryIO

import torch

from engine.errors import CheckpointError
from engine.home import open_regular

Opener = Callable[[Path], BinaryIO]


def open_plain(path: Path) -> BinaryIO:
    return open_regular(path)  # a pipe put in the file's place is refused, not waited on


class LazyTensor(ABC):
    shape: tuple[int, ...]
    dtype: torch.dtype

    @abstractmethod
    def read_into(self, out: torch.Tensor) -> None:
        """Fill `out` (contiguous, of `shape`, any floating dtype) with this tensor's values."""

    @abstractmethod
    def opened_by(self, opener: Opener) -> LazyTensor:
        """The same tensor, its file(s) opened by `opener` when read."""

    def read(self, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        out = torch.empty(self.shape, dtype=dtype or self.dtype)
        self.read_into(out)
        return out

    @property
    def numel(self) -> int:
        return prod(self.shape)


@dataclass(frozen=True)
class FileTensor(LazyTensor):
    """`shape` values of `dtype` at byte `offset` of `path`, little-endian; `stride` None means contiguous."""

    path: Path
    offset: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    stride: tuple[int, ...] | None = None
    opener: Opener = field(default=open_plain, compare=False, repr=False)

    def opened_by(self, opener: Opener) -> FileTensor:
        return replace(self, opener=opener)

    def read_into(self, out: torch.Tensor) -> None:
        _check_out(out, self.shape, self.path)
        if self.stride is not None and self.stride != _contiguous_stride(self.shape):
            span = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride) if n > 0)
            flat = torch.empty(span, dtype=self.dtype)  # [span]
            self._read_bytes(flat)
            out.copy_(flat.as_strided(self.shape, self.stride))
            return
        if out.dtype == self.dtype:
            self._read_bytes(out)
            return
        staged = torch.empty(self.shape, dtype=self.dtype)
        self._read_bytes(staged)
        out.copy_(staged)

    def _read_bytes(self, dest: torch.Tensor) -> None:
        """One readinto from the file straight into `dest`'s memory (a contiguous CPU tensor)."""
        view = memoryview(dest.reshape(-1).view(torch.uint8).numpy())
        with self.opener(self.path) as handle:
            handle.seek(self.offset)
            got = handle.readinto(view)
        if got != len(view):
            raise CheckpointError(
                self.path,
                f"ends early: {got} of {len(view)} bytes at offset {self.offset}",
                fix="the file is truncated; copy or download it again",
            )


@dataclass(frozen=True)
class Concatenated(LazyTensor):
    """Parts stacked along dim 0: Hugging Face's separate q, k, v projections → open_clip's in_proj."""

    parts: tuple[LazyTensor, ...]

    def opened_by(self, opener: Opener) -> Concatenated:
        return Concatenated(tuple(p.opened_by(opener) for p in self.parts))

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        first = self.parts[0].shape
        return (sum(p.shape[0] for p in self.parts), *first[1:])

    @property
    def dtype(self) -> torch.dtype:  # type: ignore[override]
        return self.parts[0].dtype

    def read_into(self, out: torch.Tensor) -> None:
        start = 0
        for part in self.parts:
            part.read_into(out.narrow(0, start, part.shape[0]))  # rows of a contiguous tensor stay contiguous
            start += part.shape[0]


@dataclass(frozen=True)
class Transposed(LazyTensor):
    """A 2-D tensor transposed: HF's visual_projection.weight [E, W] → open_clip's proj [W, E]."""

    part: LazyTensor

    def opened_by(self, opener: Opener) -> Transposed:
        return Transposed(self.part.opened_by(opener))

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        rows, cols = self.part.shape
        return (cols, rows)

    @property
    def dtype(self) -> torch.dtype:  # type: ignore[override]
        return self.part.dtype

    def read_into(self, out: torch.Tensor) -> None:
        out.copy_(self.part.read().T)


def materialize(tensors: dict[str, LazyTensor], *, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Read every tensor (floating ones cast to `dtype` when given)."""
    return {
        k: v.read(dtype=dtype if dtype is not None and v.dtype.is_floating_point else None) for k, v in tensors.items()
    }


def _contiguous_stride(shape: Sequence[int]) -> tuple[int, ...]:
    stride, step = [], 1
    for n in reversed(shape):
        stride.append(step)
        step *= max(n, 1)
    return tuple(reversed(stride))


def _check_out(out: torch.Tensor, shape: tuple[int, ...], path: Path) -> None:
    if tuple(out.shape) != tuple(shape) or not out.is_contiguous() or out.device.type != "cpu":
        raise CheckpointError(
            path,
            f"cannot read a {tuple(shape)} tensor into {tuple(out.shape)} "
            f"(contiguous={out.is_contiguous()}, device={out.device})",
            fix="read into a contiguous CPU tensor of the same shape",
        )
