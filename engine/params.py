"""Flat parameter vectors: the engine's lingua franca.

A checkpoint's floating-point tensors are concatenated in a fixed, sorted key order into one vector
θ [P]. Task vectors τ_t = θ_t − θ₀ (Ilharco et al., ICLR 2023, Eq. 1) stack into a task matrix
T [K, P], so every merge is a handful of batched ops instead of a loop over keys. `ParamSpec`
records names, shapes and offsets to go back to a state dict; `unflatten` returns views (no copy),
so `torch.func.functional_call` can run a merged vector directly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from math import prod

import torch

from engine.errors import ShapeError

_BLOCK_RE = re.compile(r"^(.*?resblocks\.\d+)\.")
_BLOCK_NUMBER = re.compile(r"resblocks\.(\d+)(?:\.|$)")
_BEFORE_BLOCKS = ("conv1", "class_embedding", "positional_embedding", "ln_pre")
_IN_BLOCK = ("ln_1", "attn", "ln_2", "mlp")


def network_key(name: str) -> tuple[int, int, int, str]:
    """Where tensor (or layer block) `name` of an image tower runs: the embeddings and ln_pre, then the residual
    blocks by number (ln_1, attention, ln_2, MLP inside each), then ln_post and proj. The flat order is sorted
    keys, which puts resblocks.10 before resblocks.2 and proj before every block: per-layer charts sort by this."""
    bare = name.removeprefix("visual.")
    block = _BLOCK_NUMBER.search(bare)
    if block is not None:
        rest = bare[block.end() :]
        part = next((i for i, p in enumerate(_IN_BLOCK) if rest.startswith(p)), len(_IN_BLOCK))
        return (1, int(block.group(1)), part, rest)
    stem = bare.split(".")[0]
    if stem in _BEFORE_BLOCKS:
        return (0, _BEFORE_BLOCKS.index(stem), 0, bare)
    return (2, 0, 0, bare)


def network_order(names: Sequence[str]) -> list[int]:
    """The positions of `names` in network order (`network_key`)."""
    return sorted(range(len(names)), key=lambda i: network_key(names[i]))


@dataclass(frozen=True)
class ParamSpec:
    """Names, shapes and offsets of the floating tensors of a state dict, in sorted key order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> ParamSpec:
        names = tuple(sorted(k for k, v in state.items() if v.is_floating_point()))
        return cls(names=names, shapes=tuple(tuple(state[k].shape) for k in names))

    @classmethod
    def from_shapes(cls, tensors: Mapping[str, tuple[tuple[int, ...], torch.dtype]]) -> ParamSpec:
        """The same spec from names → (shape, dtype), for checkpoints not read yet."""
        names = tuple(sorted(k for k, (_, dtype) in tensors.items() if dtype.is_floating_point))
        return cls(names=names, shapes=tuple(tuple(tensors[k][0]) for k in names))

    @cached_property
    def sizes(self) -> tuple[int, ...]:
        return tuple(prod(s) for s in self.shapes)

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """Start of each tensor in the flat vector; offsets[-1] + sizes[-1] == numel."""
        starts, total = [], 0
        for size in self.sizes:
            starts.append(total)
            total += size
        return tuple(starts)

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    def slice_of(self, name: str) -> slice:
        """Where tensor `name` lives in the flat vector."""
        try:
            i = self.names.index(name)
        except ValueError:
            raise KeyError(f"{name!r} is not in this ParamSpec ({len(self.names)} tensors)") from None
        return slice(self.offsets[i], self.offsets[i] + self.sizes[i])

    def blocks(self, *, level: str = "tensor") -> tuple[tuple[str, slice], ...]:
        """Contiguous blocks of the flat vector, labelled.

        level="tensor": one block per tensor (aTLAS's blocks, Zhang et al. 2024, Eq. 2-3).
        level="layer": one block per residual block (`...resblocks.i`), the remaining tensors
        (embeddings, ln_pre, ln_post, proj) each on their own. Sorted key order keeps every
        residual block contiguous.
        """
        if level == "tensor":
            return tuple((n, self.slice_of(n)) for n in self.names)
        if level != "layer":
            raise ValueError(f"level must be 'tensor' or 'layer', not {level!r}")
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(self.names):
            match = _BLOCK_RE.match(name)
            groups.setdefault(match.group(1) if match else name, []).append(i)
        return tuple(
            (label, slice(self.offsets[idx[0]], self.offsets[idx[-1]] + self.sizes[idx[-1]]))
            for label, idx in groups.items()
        )

    def matrix_view(self, flat: torch.Tensor, name: str) -> torch.Tensor:
        """Tensor `name` of flat rows [..., P] as [..., out, in] (e.g. T [K, P] → [K, out, in]): a view, no copy.

        Per-layer methods (TSV-M, Iso-C, CART) read a task matrix's rows as matrices this way; the tensor
        must be 2-D (ShapeError otherwise)."""
        shape = self.shapes[self.names.index(name)] if name in self.names else None
        if shape is None or len(shape) != 2:
            raise ShapeError(name, f"is not a 2-D tensor of this spec (shape {shape})", fix="choose a matrix")
        return flat[..., self.slice_of(name)].view(*flat.shape[:-1], *shape)  # [..., out, in]

    def matrices(self) -> tuple[str, ...]:
        """The names of the 2-D tensors, in flat order."""
        return tuple(n for n, s in zip(self.names, self.shapes) if len(s) == 2)

    def by_shape(self, names: Sequence[str]) -> dict[tuple[int, ...], tuple[str, ...]]:
        """`names` grouped by shape (first appearance order), so a per-layer method factors each group in one
        batched call instead of a Python loop over layers."""
        groups: dict[tuple[int, ...], list[str]] = {}
        for name in names:
            groups.setdefault(self.shapes[self.names.index(name)], []).append(name)
        return {shape: tuple(group) for shape, group in groups.items()}

    def check_state_dict(self, state: Mapping[str, torch.Tensor], *, source: str) -> None:
        """Raise ShapeError naming the first missing key or shape mismatch."""
        self.check_shapes({k: tuple(v.shape) for k, v in state.items()}, source=source)

    def check_shapes(self, shapes: Mapping[str, tuple[int, ...]], *, source: str) -> None:
        """The same check on names → shapes (tensors not read yet)."""
        for name, shape in zip(self.names, self.shapes):
            if name not in shapes:
                raise ShapeError(source, f"missing tensor {name!r}", fix="use a checkpoint of the same architecture")
            if tuple(shapes[name]) != shape:
                raise ShapeError(
                    source,
                    f"tensor {name!r} has shape {tuple(shapes[name])}, expected {shape}",
                    fix="use a checkpoint of the same architecture",
                )


def flatten(
    state: Mapping[str, torch.Tensor],
    spec: ParamSpec,
    *,
    source: str = "state dict",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Concatenate the spec's tensors into one vector [P] (into `out` when given)."""
    spec.check_state_dict(state, source=source)
    if out is None:
        device = device or state[spec.names[0]].device
        out = torch.empty(spec.numel, dtype=dtype, device=device)  # [P]
    for name, start, size in zip(spec.names, spec.offsets, spec.sizes):
        out[start : start + size].copy_(state[name].reshape(-1))
    return out


def unflatten(flat: torch.Tensor, spec: ParamSpec) -> dict[str, torch.Tensor]:
    """Views of `flat` [P] shaped like the original tensors (no copy)."""
    if flat.shape != (spec.numel,):
        raise ShapeError(
            "flat vector",
            f"has shape {tuple(flat.shape)}, expected ({spec.numel},)",
            fix="flatten with the same ParamSpec",
        )
    parts = torch.split(flat, list(spec.sizes))
    return {name: part.view(shape) for name, part, shape in zip(spec.names, parts, spec.shapes)}


def take_rows(matrix: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
    """matrix[rows] [k, ...]: a view when `rows` are consecutive and in order, else a copy."""
    if rows and list(rows) == list(range(rows[0], rows[0] + len(rows))):
        return matrix[rows[0] : rows[0] + len(rows)]
    return matrix[list(rows)]


@dataclass(frozen=True)
class TaskMatrix:
    """θ₀ [P] and the task vectors T [K, P] of K fine-tuned checkpoints, on one device: the in-memory float32
    backing of the task store (engine/store/protocol.py), whose `block` and `layer` are views of T."""

    theta0: torch.Tensor  # [P]
    T: torch.Tensor  # [K, P]; a store's rows (engine/store/reader.py's StoredRows) when opened factored
    spec: ParamSpec
    task_names: tuple[str, ...]

    @classmethod
    def from_state_dicts(
        cls,
        pretrained: Mapping[str, torch.Tensor],
        finetuned: Mapping[str, Mapping[str, torch.Tensor]],
        *,
        device: torch.device | str = "cpu",
    ) -> TaskMatrix:
        """Build from a pretrained state dict and {task name: fine-tuned state dict}."""
        spec = ParamSpec.from_state_dict(pretrained)
        theta0 = flatten(pretrained, spec, source="pretrained", device=device)  # [P]
        T = torch.empty(len(finetuned), spec.numel, dtype=torch.float32, device=device)  # [K, P]
        for k, (task, state) in enumerate(finetuned.items()):
            flatten(state, spec, source=f"fine-tuned {task!r}", out=T[k])
            T[k].sub_(theta0)
        return cls(theta0=theta0, T=T, spec=spec, task_names=tuple(finetuned))

    @property
    def num_tasks(self) -> int:
        return self.T.shape[0]

    def select(self, tasks: Sequence[str]) -> TaskMatrix:
        """A TaskMatrix holding only `tasks` (in that order), its T from `rows`."""
        return TaskMatrix(self.theta0, self.rows(tasks), self.spec, tuple(tasks))

    def rows(self, tasks: Sequence[str]) -> torch.Tensor:
        """T's rows of `tasks` [k, P], in that order: a view when they are consecutive rows in order (merging
        every task, the usual case: a copy of a ViT-B/32 T is 2.6 GiB), else a copy. Read-only either way."""
        missing = [t for t in tasks if t not in self.task_names]
        if missing:
            raise KeyError(f"tasks {missing} not in {list(self.task_names)}")
        rows = [self.task_names.index(t) for t in tasks]
        if not isinstance(self.T, torch.Tensor):  # a store's rows (engine/store/reader.py): their subset, no copy
            return self.T.select(rows)
        return take_rows(self.T, rows)  # [k, P]

    def row(self, task: str) -> torch.Tensor:
        """τ of `task` [P]: a view of T in memory, or its row read from a store (a LoRA adapter densified)."""
        k = self.task_names.index(task)
        return self.T[k] if isinstance(self.T, torch.Tensor) else self.T.row(k)

    def vector(self, task: str) -> TaskVector:
        return TaskVector(self.row(task), self.spec)

    def block(self, rows: Sequence[int], cols: slice, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """T[rows, cols] [k, c]: the task store's read (engine/store/protocol.py) of this in-memory backing. A view
        of T when `rows` are consecutive and ascending and no `out` is given; else only the block is copied."""
        part = self.T[:, cols]  # [K, c] a view
        if out is None:
            return take_rows(part, list(rows))  # [k, c]
        index = torch.as_tensor(list(rows), dtype=torch.long, device=self.T.device)
        return torch.index_select(part, 0, index, out=out)  # [k, c]

    def layer(self, rows: Sequence[int], name: str, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """Tensor `name` of rows `rows` as [k, out, in] (a view of T for consecutive rows, as `block`)."""
        shape = self.spec.shapes[self.spec.names.index(name)] if name in self.spec.names else None
        if shape is None or len(shape) != 2:
            raise ShapeError(name, f"is not a 2-D tensor of this spec (shape {shape})", fix="choose a matrix")
        flat = None if out is None else out.view(out.shape[0], -1)
        return self.block(rows, self.spec.slice_of(name), out=flat).view(-1, *shape)  # [k, out, in]


@dataclass(frozen=True)
class TaskVector:
    """One task vector τ [P] with its spec; the algebra of Ilharco et al. (2023) for notebooks.

    `a + b`, `a - b`, `-a`, `0.5 * a` and `sum([a, b, c])` return new TaskVectors;
    `tv.apply_to(theta0)` gives θ₀ + τ.
    """

    values: torch.Tensor  # [P]
    spec: ParamSpec

    def _check(self, other: TaskVector) -> None:
        if other.spec != self.spec:
            raise ShapeError(
                "TaskVector",
                "operands come from different ParamSpecs",
                fix="combine task vectors of the same architecture",
            )

    def __add__(self, other: TaskVector | int) -> TaskVector:
        if isinstance(other, int) and other == 0:  # lets built-in sum() start from 0
            return self
        self._check(other)
        return TaskVector(self.values + other.values, self.spec)

    __radd__ = __add__

    def __sub__(self, other: TaskVector) -> TaskVector:
        self._check(other)
        return TaskVector(self.values - other.values, self.spec)

    def __neg__(self) -> TaskVector:
        return TaskVector(-self.values, self.spec)

    def __mul__(self, scale: float) -> TaskVector:
        if not isinstance(scale, (int, float)):
            return NotImplemented
        return TaskVector(self.values * scale, self.spec)

    __rmul__ = __mul__

    def apply_to(self, theta0: torch.Tensor) -> torch.Tensor:
        """θ₀ + τ as a new flat vector [P]."""
        return theta0 + self.values

    def state_dict(self) -> dict[str, torch.Tensor]:
        return unflatten(self.values, self.spec)
