"""Atomic file writes: a crash or a bad input never leaves a half-written file behind.

Everything is written to a temporary sibling and moved into place with `os.replace`, which is
atomic on POSIX when source and target share a folder. Each file lands with mode 0644 (results are
meant to be shared and read): the mode is set just before the move, because writers such as
safetensors' `save_file` replace the temporary file with a private (0600) one of their own.

A process killed mid-write leaves only its temporary sibling, `.<name>.<pid>-<start>.<random>.part`:
hidden, never under the final name, so no reader takes it for the file. The name records the writing
process (pid and start time, engine/processes.py), and the next write of the same file removes the
siblings whose writer is dead, so a crash costs disk space only until the file is written again; a
sibling whose writer still runs (another process writing the same file) is left alone.

A write that finds no room (disk full, quota used up, file-size limit) raises `DiskFullError`
naming the file, after removing its temporary siblings: nothing is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from engine.errors import DiskFullError
from engine.faults import fault_point
from engine.processes import process_alive, process_start

SHARED_MODE = 0o644
NO_ROOM = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
OS_ERROR_TEXT = re.compile(r"\(os error (\d+)\)")  # how Rust writers (safetensors) report an errno
WRITER_TAG = re.compile(r"(\d+)-(\d+)\.[a-z0-9_]+\.part")  # what follows `.<name>.` in a temporary sibling


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success move it onto `target`, else delete it."""
    target = Path(target)
    with _no_room_is_an_error(target), _tmp_sibling(target) as tmp:
        yield tmp
        os.chmod(tmp, SHARED_MODE)
        fault_point("export.before_rename")
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
    targets = [Path(t) for t in targets]
    with _no_room_is_an_error(targets[0] if targets else Path.cwd()), contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(_tmp_sibling(t)) for t in targets]
        yield tmps
        for tmp in tmps:
            os.chmod(tmp, SHARED_MODE)
        fault_point("export.before_rename")
        moved: list[Path] = []
        try:
            for tmp, target in zip(tmps, targets):
                os.replace(tmp, target)
                moved.append(target)
        except BaseException:
            for target in moved:
                target.unlink(missing_ok=True)
            raise


def sweep_stale_parts(target: Path) -> list[Path]:
    """Remove the temporary siblings of `target` that a dead process left; returns those removed."""
    target = Path(target)
    removed = []
    prefix = f".{target.name}."
    for part in target.parent.glob(f"{glob.escape(prefix)}*.part"):
        tag = WRITER_TAG.fullmatch(part.name[len(prefix) :])
        if tag and not process_alive(int(tag[1]), tag[2]):
            part.unlink(missing_ok=True)
            removed.append(part)
    return removed


@contextlib.contextmanager
def _tmp_sibling(target: Path) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_parts(target)
    pid = os.getpid()
    writer = f"{pid}-{process_start(pid) or 0}"
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.{writer}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


@contextlib.contextmanager
def _no_room_is_an_error(target: Path) -> Iterator[None]:
    """Turn a write that found no room into a `DiskFullError` naming `target` and its folder.

    Rust writers (safetensors) raise their own exception type whose text carries the errno, so that
    text is read too; any other error passes unchanged.
    """
    try:
        yield
    except Exception as exc:
        code = _errno_of(exc)
        if code not in NO_ROOM:
            raise
        raise DiskFullError(
            target,
            f"could not be written: {os.strerror(code).lower()} (the disk or quota is full, or the "
            f"file-size limit was reached); nothing was left behind",
            fix=f"free space in {target.parent}, or write it to another folder (e.g. another --out)",
        ) from exc


def _errno_of(exc: BaseException) -> int | None:
    if isinstance(exc, OSError):
        return exc.errno
    found = OS_ERROR_TEXT.search(str(exc))
    return int(found[1]) if found else None
