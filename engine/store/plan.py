"""The memory plan: which task-store backing a pool opens with, and the one line that says why.

In memory (float32) the pool costs about (K + 3)·P·4 bytes resident: T, θ₀, the merged vector and one scratch
vector; the process's cache of computed results (its budget, engine/cache/memory.py) comes on top. The room is
the least of MemAvailable (/proc/meminfo) and what the process's cgroup still allows (limit − usage), shared
by the `jobs` processes that open pools at once (Ray workers, the dashboard beside the CLI). The plan opens in
memory when that fits in `COMFORT` of the room, so the page cache, the evaluation's activations and the other
programs keep the rest; else, when every task is a LoRA adapter, kept as its factors (megabytes, nothing
built; each read densifies the block it needs); else out of core: a float32 store (exact) when its file fits
the store folder's free disk, else a bfloat16 one (half the bytes) when that fits, else the float32 store,
whose build then says how much disk it needs. An explicit choice (`--store`, or "store" in config.json) wins
over the plan.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ParameterError
from engine.home import STORE_CHOICES

CHOICES = STORE_CHOICES
COMFORT = 0.6  # share of the room a pool in memory may take
GIB = float(1 << 30)
_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a number near 2^63


@dataclass(frozen=True)
class MemoryFacts:
    """What the machine offers now: bytes available, the cgroup's limit and usage (None: no limit)."""

    mem_available: int
    cgroup_limit: int | None = None
    cgroup_usage: int = 0

    @classmethod
    def read(cls, *, proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> MemoryFacts:
        """MemAvailable from /proc/meminfo and this process's cgroup (v2, else v1) memory limit and usage."""
        meminfo = (proc / "meminfo").read_text(encoding="ascii")
        available = next(
            int(line.split()[1]) * 1024 for line in meminfo.splitlines() if line.startswith("MemAvailable:")
        )
        limit, usage = _cgroup_memory(proc, cgroup_root)
        return cls(available, limit, usage)

    @property
    def room(self) -> int:
        """The bytes this process may still take: the least of MemAvailable and the cgroup's headroom."""
        if self.cgroup_limit is None:
            return self.mem_available
        return max(0, min(self.mem_available, self.cgroup_limit - self.cgroup_usage))


def _cgroup_memory(proc: Path, root: Path) -> tuple[int | None, int]:
    """(limit or None, usage) of this process's memory cgroup; (None, 0) where none can be read."""
    try:
        lines = (proc / "self" / "cgroup").read_text(encoding="ascii").splitlines()
    except OSError:
        return None, 0
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified hierarchy
            folder, files = root / path.lstrip("/"), ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):  # v1: the memory controller's own hierarchy
            folder, files = root / "memory" / path.lstrip("/"), ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        limit, usage = _read_number(folder / files[0]), _read_number(folder / files[1])
        if limit is not None or usage is not None:
            return (limit if limit is not None and limit < _UNLIMITED else None), usage or 0
    return None, 0


def _read_number(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


@dataclass(frozen=True)
class StorePlan:
    """The backing a pool of K tasks × P parameters opens with, and the estimate behind it."""

    backing: str
    num_tasks: int
    numel: int
    architecture: str
    room_bytes: int
    asked: bool  # chosen by --store / config.json rather than by the plan
    device: str = "cpu"  # where T lives in memory: out of core is a CPU affair, so a GPU pool opens in memory

    @property
    def float32_bytes(self) -> int:
        """T [K, P] as float32: what an in-memory pool holds beyond one model."""
        return 4 * self.num_tasks * self.numel

    def summary(self) -> str:
        """One line for the command line and the dashboard's sidebar, e.g.
        "20 × ViT-L-14: 22.6 GiB as float32; opening out of core"."""
        where = {
            "memory": "opening in memory" + ("" if self.device == "cpu" else f" on {self.device}"),
            "built": "opening out of core",
            "built-bf16": f"opening out of core as bfloat16 ({_size(self.float32_bytes // 2)})",
            "factored": "keeping LoRA adapters as their factors",
        }[self.backing]
        why = " (as asked)" if self.asked else f" ({_size(self.room_bytes)} free)"
        return f"{self.num_tasks} × {self.architecture}: {_size(self.float32_bytes)} as float32; {where}{why}"


def _size(num_bytes: int) -> str:
    """22.6 GiB, 11 MiB or 180 KiB: the demo zoo's pool would read "0.0 GiB", a test pool "0 MiB"."""
    if num_bytes >= GIB:
        return f"{num_bytes / GIB:.1f} GiB"
    if num_bytes >= 1 << 20:
        return f"{num_bytes / (1 << 20):.0f} MiB"
    return f"{num_bytes / 1024:.0f} KiB"


def in_memory_bytes(num_tasks: int, numel: int) -> int:
    """Resident bytes of a pool opened in memory: T, θ₀, the merged vector and one scratch vector, float32."""
    return 4 * numel * (num_tasks + 3)


def plan_store(
    *,
    num_tasks: int,
    numel: int,
    facts: MemoryFacts,
    cache_budget: int,
    disk_free: int | None = None,
    jobs: int = 1,
    choice: str = "auto",
    architecture: str = "",
    device: str = "cpu",
    adapters: bool = False,
) -> StorePlan:
    """The backing for a pool of `num_tasks` × `numel` (module docstring: the rule; `adapters`: every task is a
    LoRA adapter); a pool on a GPU `device` opens in memory unless asked otherwise (its memory is the device's)."""
    if choice not in CHOICES:
        raise ParameterError("store", f"{choice!r} is not one of {', '.join(CHOICES)}", fix="pick one of them")
    if jobs < 1:
        raise ParameterError("store.jobs", f"is {jobs}", fix="count at least this process")
    room = facts.room // jobs
    plan = StorePlan(choice, num_tasks, numel, architecture or "model", room, asked=True, device=device)
    if choice != "auto":
        return plan
    if device != "cpu" or in_memory_bytes(num_tasks, numel) + cache_budget <= COMFORT * room:
        backing = "memory"
    elif adapters:
        backing = "factored"
    else:
        float32_file, bfloat16_file = 4 * numel * (num_tasks + 1), 4 * numel + 2 * numel * num_tasks
        half_only = disk_free is not None and bfloat16_file <= disk_free < float32_file
        backing = "built-bf16" if half_only else "built"  # neither fitting: the float32 build says what it needs
    return StorePlan(backing, num_tasks, numel, architecture or "model", room, asked=False, device=device)


def disk_free(folder: Path) -> int:
    """Free bytes on `folder`'s file system (its nearest existing parent's)."""
    folder = Path(folder)
    while not folder.exists():
        folder = folder.parent
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize
