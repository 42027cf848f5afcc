"""Which checkpoint files have already been checked against their sidecar's tensors_sha256.

Hashing reads every byte of every tower (sha256 runs at a few GB/s), which would make a converted pool
open slower than the pickles it came from (bench/pool_load.py). A file that has not changed since it was checked (same
resolved path, device, inode, size and mtime) is not hashed again. The records are small JSON files in
the data home's cache (`<cache>/verified/`); deleting them only means the next open hashes again. A file
rewritten in place with the same size and mtime would not be re-checked: the check guards against damage
and mix-ups, not against someone forging timestamps. Timestamps are coarse (a few ms), so a file modified
in the last `SETTLE_NS` is not recorded at all: a rewrite within the same tick would keep its mtime
(git's "racily clean" problem, solved the same way).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from engine.io.atomic import write_text_atomic

SETTLE_NS = 2_000_000_000  # files younger than this are hashed again next time


@dataclass(frozen=True)
class VerifiedFiles:
    root: Path

    def holds(self, path: Path, tensors_sha256: str) -> bool:
        """Whether `path`, unchanged since, was verified to hold tensors hashing to `tensors_sha256`."""
        try:
            record = json.loads(self._record(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return record == {**file_stamp(path), "tensors_sha256": tensors_sha256}

    def add(self, path: Path, tensors_sha256: str) -> None:
        """Remember that `path` (as it is now) hashed to `tensors_sha256`, unless it changed too recently."""
        if time.time_ns() - Path(path).stat().st_mtime_ns < SETTLE_NS:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self._record(path), json.dumps({**file_stamp(path), "tensors_sha256": tensors_sha256}))

    def _record(self, path: Path) -> Path:
        return self.root / f"{hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32]}.json"


def file_stamp(path: Path) -> dict[str, int | str]:
    """Where a file is and how it looks now (resolved path, device, inode, size, mtime): what tells a file
    unchanged since it was checked, without reading it."""
    stat = Path(path).stat()
    return {
        "path": str(Path(path).resolve()),
        "device": stat.st_dev,
        "inode": stat.st_ino,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
