"""Named tensors kept in a folder by key, for results that outlive a process (a big model's factorized
merge parts, WUDI's optimised matrices): minutes to compute, seconds to read.

A key is any text that identifies the inputs, checkpoints' sha256 included (the Workspace's
`fingerprint`), so a changed checkpoint misses. Each entry is one safetensors file named by the key's
sha256 and carrying the key itself in its metadata; it is written atomically (a crash leaves no entry),
and an entry that cannot be read, or that holds another key, is a miss and is removed.
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

    def path(self, key: str) -> Path:
        return self.root / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"

    def get(self, key: str, *, device: str | torch.device = "cpu") -> dict[str, torch.Tensor] | None:
        """The tensors stored under `key`, or None (never stored, unreadable, or another key's file)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            stored_key = read_header(path).metadata.get(KEY_FIELD)  # checks every tensor lies inside the file
            tensors = load_file(path, device=str(device)) if stored_key == key else None
        except (CheckpointError, SafetensorError, OSError):
            tensors = None
        if tensors is None:
            path.unlink(missing_ok=True)
        return tensors

    def put(self, key: str, tensors: Mapping[str, torch.Tensor]) -> Path:
        """Store `tensors` under `key` (replacing what was there), atomically."""
        path = self.path(key)
        with atomic_path(path) as tmp:
            save_file({n: t.detach().contiguous().cpu() for n, t in tensors.items()}, tmp, metadata={KEY_FIELD: key})
        return path
