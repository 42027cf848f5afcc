"""Task-specific merges: one shared vector plus a bit mask and a rescaler per task, task t's model built on the fly.

TALL masks (Wang et al., ICML 2024) and EMR-Merging (Huang et al., NeurIPS 2024) keep, for K tasks, one shared
vector [P], K bit masks (P/8 bytes each) and K rescalers, and serve task t with

    θ_t = θ₀ + r_t · (m_t ⊙ v)       v [P] the shared vector, m_t ∈ {0, 1}^P, r_t a scalar

which `TaskParts.model` builds in one pass over [P]: never K full copies. The masks are stored packed, eight
entries a byte (the storage the methods declare), and unpacked per task when its model is built.

`Storage` is what a method stores to serve all K tasks; `bytes_per_task` the x axis of the storage–accuracy plane.
θ₀ is not counted: every method (and the fine-tuned models, as deltas) shares it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import ParameterError

BIT_WEIGHTS = (1, 2, 4, 8, 16, 32, 64, 128)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """bool [K, P] → uint8 [K, ⌈P/8⌉], entry j of a row in bit j % 8 of byte j // 8."""
    K, P = mask.shape
    padded = torch.zeros(K, -(-P // 8) * 8, dtype=torch.uint8, device=mask.device)  # [K, 8⌈P/8⌉]
    padded[:, :P] = mask
    weights = torch.tensor(BIT_WEIGHTS, dtype=torch.uint8, device=mask.device)  # [8]
    return (padded.view(K, -1, 8) * weights).sum(dim=-1, dtype=torch.uint8)  # [K, ⌈P/8⌉]


def unpack_bits(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """uint8 [..., ⌈P/8⌉] → bool [..., P]: the inverse of `pack_bits`."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)  # [8]
    bits = (packed.unsqueeze(-1) >> shifts) & 1  # [..., ⌈P/8⌉, 8]
    return bits.flatten(-2)[..., :numel].bool()  # [..., P]


@dataclass(frozen=True)
class TaskParts:
    """What a task-specific merge stores: the shared vector v [P], the packed masks uint8 [K, ⌈P/8⌉] and the
    rescalers r [K] (float32; ones where the method has none)."""

    shared: torch.Tensor  # [P] float32
    masks: torch.Tensor  # [K, ⌈P/8⌉] uint8
    rescale: torch.Tensor  # [K] float32

    @classmethod
    def of(cls, shared: torch.Tensor, masks: torch.Tensor, rescale: torch.Tensor | None = None) -> TaskParts:
        """From the shared vector [P] and bool masks [K, P] (packed here); rescalers default to one."""
        if masks.dtype != torch.bool or masks.shape[1] != shared.shape[0]:
            raise ParameterError(
                "task masks",
                f"got {masks.dtype} {tuple(masks.shape)} for a shared vector of {shared.shape[0]} entries",
                fix="pass one bool row per task over the shared vector",
            )
        ones = torch.ones(masks.shape[0], dtype=torch.float32, device=shared.device)
        return cls(shared, pack_bits(masks), ones if rescale is None else rescale.to(torch.float32))

    @property
    def num_tasks(self) -> int:
        return self.masks.shape[0]

    def mask(self, task: int) -> torch.Tensor:
        """bool [P]: task `task`'s mask, unpacked."""
        return unpack_bits(self.masks[task], self.shared.shape[0])

    def model(self, theta0: torch.Tensor, task: int, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """θ_t = θ₀ + r_t · (m_t ⊙ v) [P] for row `task` of the tasks the parts were built from."""
        if not 0 <= task < self.num_tasks:
            raise ParameterError(f"task {task}", f"is no row of {self.num_tasks} task masks", fix="pass a task index")
        update = torch.where(self.mask(task), self.shared, 0.0).mul_(self.rescale[task])  # [P]
        return torch.add(theta0, update, out=out)


@dataclass(frozen=True)
class Storage:
    """What a method stores to serve K tasks: `shared` float32 vectors for all of them, and per task `vectors`
    float32 vectors, `bits` bit masks and `scalars` float32 numbers."""

    shared: int = 1
    vectors: int = 0
    bits: int = 0
    scalars: int = 0

    def total_bytes(self, numel: int, num_tasks: int) -> float:
        """Bytes to serve `num_tasks` tasks of `numel` parameters each (θ₀ excluded: every method shares it)."""
        per_task = 4 * numel * self.vectors + numel / 8 * self.bits + 4 * self.scalars
        return 4 * numel * self.shared + num_tasks * per_task

    def bytes_per_task(self, numel: int, num_tasks: int) -> float:
        """`total_bytes` / K: a single model 4P/K, TALL masks 4P/K + P/8, EMR 4P/K + P/8 + 4, fine-tuned 4P."""
        return self.total_bytes(numel, num_tasks) / num_tasks


SINGLE_MODEL = Storage()
MASK_PER_TASK = Storage(bits=1)
MASK_AND_RESCALER_PER_TASK = Storage(bits=1, scalars=1)
FINE_TUNED = Storage(shared=0, vectors=1)
