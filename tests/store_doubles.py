"""A factored task row for the store's tests: τ = B·A per matrix (a LoRA adapter's shape), dense elsewhere.

It densifies only the rows of each matrix that a read's column range touches, so a block or a layer costs
that part, never the whole vector: the LoRA issue's rows will read the same way from adapter files."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import torch

from engine.params import ParamSpec


@dataclass(frozen=True)
class FactoredRow:
    spec: ParamSpec
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]  # matrix name → (B [out, r], A [r, in])
    dense: dict[str, torch.Tensor]  # every other tensor's τ, flat
    densified: list[int]  # entries densified per read (a test counts them)

    @classmethod
    def random(cls, spec: ParamSpec, *, rank: int, generator: torch.Generator) -> FactoredRow:
        factors, dense = {}, {}
        for name, shape in zip(spec.names, spec.shapes):
            if len(shape) == 2:
                b = torch.randn(shape[0], rank, generator=generator)
                factors[name] = (b, torch.randn(rank, shape[1], generator=generator) / rank)
            else:
                dense[name] = torch.randn(int(torch.tensor(shape).prod()), generator=generator)
        return cls(spec, factors, dense, [])

    def full(self) -> torch.Tensor:
        """τ [P] densified whole (the tests' reference)."""
        out = torch.empty(self.spec.numel)
        self.read(0, self.spec.numel, out)
        return out

    def read(self, start: int, stop: int, out: torch.Tensor) -> None:
        first = bisect_right(self.spec.offsets, start) - 1
        for i in range(first, len(self.spec.names)):
            offset, size = self.spec.offsets[i], self.spec.sizes[i]
            if offset >= stop:
                break
            a, b = max(start, offset) - offset, min(stop, offset + size) - offset  # the tensor's flat range
            out[offset + a - start : offset + b - start].copy_(self._part(self.spec.names[i], a, b))

    def _part(self, name: str, a: int, b: int) -> torch.Tensor:
        if name in self.dense:
            return self.dense[name][a:b]
        left, right = self.factors[name]  # [out, r], [r, in]
        width = right.shape[1]
        first, last = a // width, -(-b // width)  # the matrix rows the range touches
        rows = (left[first:last] @ right).reshape(-1)  # [(last − first)·in]
        self.densified.append(rows.numel())
        return rows[a - first * width : b - first * width]


SYNTHETIC_SPEC = ParamSpec(names=("w1", "b1", "w2"), shapes=((64, 48), (64,), (32, 64)))


def synthetic_row(k: int, numel: int = SYNTHETIC_SPEC.numel) -> torch.Tensor:
    """Task row k of the synthetic pool: seeded, so every process builds the same store."""
    return torch.randn(numel, generator=torch.Generator().manual_seed(100 + k))


def open_synthetic(
    target, *, sources: dict, dtype: str = "float32", tasks: int = 3, log=None, delay: float = 0.0, spec=None
):
    """open_built_store over the synthetic pool; each row written appends a line to `log` (a path) when given,
    after `delay` seconds (so a second process arrives while the first builds)."""
    import time
    from pathlib import Path

    from engine.store.built import open_built_store, store_header

    spec = spec or SYNTHETIC_SPEC

    def fill_row(k: int, row: torch.Tensor) -> None:
        time.sleep(delay)
        row.copy_(synthetic_row(k, spec.numel))
        if log is not None:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"{k}\n")

    names = tuple(f"task{k}" for k in range(tasks))
    return open_built_store(
        Path(target),
        header=store_header(spec, names, sources, dtype),
        theta0=lambda: torch.linspace(-1, 1, spec.numel),
        fill_row=fill_row,
    )
