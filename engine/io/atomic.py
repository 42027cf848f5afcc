"""Atomic file writes: a crash or a bad input never leaves a half-written file behind.

Everything is written to a temporary sibling and moved into place with `os.replace`, which is
atomic on POSIX when source and target share a folder. Each file lands with mode 0644 (results are
meant to be shared and read): the mode is set just before the move, because writers such as
safetensors' `save_file` replace the temporary file with a private (0600) one of their own.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

SHARED_MODE = 0o644


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success move it onto `target`, else delete it."""
    with _tmp_sibling(Path(target)) as tmp:
        yield tmp
        os.chmod(tmp, SHARED_MODE)
        os.replace(tmp, target)


def write_text_atomic(target: Path, text: str) -> None:
    """Write `text` (UTF-8) to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def all_or_nothing(targets: list[Path]) -> Iterator[list[Path]]:
    """Yield temp paths for several files; all land together or none does.

    If moving one of them fails, the ones already moved are removed again, so a merge never leaves
    a safetensors file without its sidecar.
    """
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(_tmp_sibling(t)) for t in targets]
        yield tmps
        moved: list[Path] = []
        try:
            for tmp, target in zip(tmps, targets):
                os.chmod(tmp, SHARED_MODE)
                os.replace(tmp, target)
                moved.append(target)
        except BaseException:
            for target in moved:
                target.unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def _tmp_sibling(target: Path) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
