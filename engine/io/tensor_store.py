"""Named tensors kept in a folder by key, for results that outlive a process (a big model's factorized
merge parts, WUDI's optimised matrices): minutes to compute, seconds to read.

A key is any text that identifies the inputs, checkpoints' sha256 included (the Workspace's
`fingerprint`), so a changed checkpoint misses. Each entry is one safetensors file named by the key's
sha256 and carrying the key itself in its metadata; it is written atomically (a crash leaves no entry),
and an entry that cannot be read, or that holds another key, is a miss and is removed.
A collection may ship entries (its warm folder, engine/jobs/warm.py): `shipped` is read after `root`, never
written or removed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.errors import CheckpointError
from engine.io.atomic import atomic_path
from engine.io.formats.safetensors_file import read_header

KEY_FIELD = "mergelab_key"


@dataclass(frozen=True)
class TensorStore:
    root: Path
    shipped: Path | None = None  # read-only entries in the same layout, looked up when `root` has none

    def path(self, key: str) -> Path:
        return self.root / _file_name(key)

    def has(self, key: str) -> bool:
        """Whether `key` has a file here or among the shipped entries (not whether it reads: `get` checks that)."""
        return self.path(key).is_file() or (self.shipped is not None and (self.shipped / _file_name(key)).is_file())

    def get(self, key: str, *, device: str | torch.device = "cpu") -> dict[str, torch.Tensor] | None:
        """The tensors stored under `key`, or None (never stored, unreadable, or another key's file). A bad file
        of `root` is removed (it is recomputed); a shipped one is left as it is."""
        tensors = _read(self.path(key), key, device)
        if tensors is None:
            self.path(key).unlink(missing_ok=True)
            if self.shipped is not None:
                tensors = _read(self.shipped / _file_name(key), key, device)
        return tensors

    def put(self, key: str, tensors: Mapping[str, torch.Tensor]) -> Path:
        """Store `tensors` under `key` (replacing what was there), atomically."""
        path = self.path(key)
        with atomic_path(path) as tmp:
            save_file({n: t.detach().contiguous().cpu() for n, t in tensors.items()}, tmp, metadata={KEY_FIELD: key})
        return path


def _file_name(key: str) -> str:
    return f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"


def _read(path: Path, key: str, device: str | torch.device) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        stored_key = read_header(path).metadata.get(KEY_FIELD)  # checks every tensor lies inside the file
        return load_file(path, device=str(device)) if stored_key == key else None
    except (CheckpointError, SafetensorError, OSError):
        return None
