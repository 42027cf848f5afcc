"""The out-of-core task store: θ₀ and T [K, P] built once into one memory-mapped file in the data home.

Layout of a `.taskstore` file: the magic `MLSTORE1`, the header's length (u64, little endian), the header (JSON:
format, dtype, task names, the spec's names and shapes, and the identity of every source checkpoint), then θ₀
as float32 [P] and T [K, P] row by row in the store's dtype (float32, or bfloat16: half the bytes, every read
widened to float32 so sums accumulate in float32), each starting on a page boundary.

- Keyed by the sources' identity, not their bytes: the caller names each checkpoint by its tensors_sha256 and
  file stamp (engine/io/verified.py's `file_stamp`: path, device, inode, size, mtime), so opening hashes
  nothing. A header whose identities differ (a checkpoint rewritten), a size that does not match, or a header
  that does not parse (a damaged file) means the store is rebuilt under the same name.
- Built atomically: rows are written into a temporary sibling (engine/io/atomic.py) that takes the final name
  only when complete, so a killed build leaves nothing under it, and its sibling is swept by the next build.
- Built once: the opener holds an exclusive `flock` on `.<name>.lock` while it checks and builds, so a second
  process opening the same pool at once waits, then finds the store built (the lock dies with its holder).
- Free disk is checked first: a store that would not fit raises DiskFullError "needs X GB on PATH".
- Pages are released: each written row is synced and dropped from the page cache (posix_fadvise DONTNEED);
  each block read is copied out and its mapped pages dropped from the process (madvise DONTNEED), so the
  resident size stays about one block, not the file. The page cache itself is left alone on reads: processes
  sharing the store (Ray workers, the dashboard and the CLI) share those pages.
- Damage inside the rows (flipped bits) is not detected: checking would read and hash the whole file on every
  open; the file lives in the data home's cache and `python -m engine home clear-cache` removes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import shutil
import struct
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import DiskFullError, ParameterError
from engine.faults import fault_point
from engine.io.atomic import atomic_path
from engine.params import ParamSpec, TaskMatrix
from engine.store.protocol import checked_cols, checked_rows, layer_shape, output

MAGIC = b"MLSTORE1"
FORMAT = 1
PAGE = mmap.PAGESIZE
MAX_HEADER_BYTES = 64 << 20
STORE_DTYPES: Mapping[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
RowFiller = Callable[[int, torch.Tensor], None]
"""(task row k, float32 [P]) → writes τ_k = θ_k − θ₀ into the row."""


def _aligned(offset: int) -> int:
    return -(-offset // PAGE) * PAGE


@dataclass(frozen=True)
class Layout:
    """Where θ₀ and the rows lie in a store file with a header of `header_bytes`."""

    num_tasks: int
    numel: int
    itemsize: int
    header_bytes: int

    @property
    def theta0_offset(self) -> int:
        return _aligned(16 + self.header_bytes)

    @property
    def rows_offset(self) -> int:
        return _aligned(self.theta0_offset + 4 * self.numel)

    @property
    def row_bytes(self) -> int:
        return self.numel * self.itemsize

    @property
    def size(self) -> int:
        return self.rows_offset + self.num_tasks * self.row_bytes


def store_header(spec: ParamSpec, task_names: Sequence[str], sources: Mapping[str, Any], dtype: str) -> dict:
    """What a store file must say to be the store of these sources (JSON-able)."""
    if dtype not in STORE_DTYPES:
        raise ParameterError("store dtype", f"{dtype!r} is not one of {sorted(STORE_DTYPES)}", fix="pick one of them")
    return {
        "format": FORMAT,
        "dtype": dtype,
        "task_names": list(task_names),
        "spec": {"names": list(spec.names), "shapes": [list(s) for s in spec.shapes]},
        "sources": json.loads(json.dumps(sources)),  # as it reads back
    }


def open_built_store(
    target: Path, *, header: dict, theta0: Callable[[], torch.Tensor], fill_row: RowFiller
) -> BuiltStore:
    """The store at `target` when its header is `header` and it is whole, else built there first (atomically,
    once across processes) from `theta0()` (float32 [P]) and `fill_row`; then opened mapped."""
    target = Path(target)
    with _locked(target):
        problem = stale_or_damaged(target, header)
        if problem is not None:
            _build(target, header, theta0, fill_row)
    return BuiltStore.open(target)


def stale_or_damaged(target: Path, header: dict) -> str | None:
    """Why the file at `target` is not the whole store of `header` ("missing", "stale: ...", "damaged: ..."),
    or None when it is."""
    try:
        found, layout = read_header(target)
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError, KeyError, TypeError) as exc:  # unreadable, not JSON, or JSON of another shape
        return f"damaged: {exc!r}"
    if found != header:
        changed = sorted(k for k in header if found.get(k) != header[k])
        return f"stale: its {', '.join(changed)} differ"
    if target.stat().st_size != layout.size:
        return f"damaged: {target.stat().st_size} bytes, expected {layout.size}"
    return None


def read_header(path: Path) -> tuple[dict, Layout]:
    """The header and layout of a store file (ValueError when it is not one)."""
    with open(path, "rb") as handle:
        start = handle.read(16)
        if len(start) != 16 or start[:8] != MAGIC:
            raise ValueError("not a task store file (no MLSTORE1 magic)")
        (length,) = struct.unpack("<Q", start[8:])
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"header of {length} bytes")
        text = handle.read(length)
    header = json.loads(text.decode("utf-8"))
    if not isinstance(header, dict) or header.get("dtype") not in STORE_DTYPES:
        raise ValueError("header is not a store's")
    numel = sum(int(np.prod(s)) for s in header["spec"]["shapes"])
    itemsize = STORE_DTYPES[header["dtype"]].itemsize
    return header, Layout(len(header["task_names"]), numel, itemsize, length)


def needed_bytes(spec: ParamSpec, num_tasks: int, dtype: str) -> int:
    """The size of a store file of `num_tasks` rows (header aside): θ₀ in float32 and the rows in `dtype`."""
    return Layout(num_tasks, spec.numel, STORE_DTYPES[dtype].itemsize, 0).size


def check_room(folder: Path, need: int) -> None:
    """DiskFullError "needs X GB on PATH" when `folder`'s file system has less than `need` bytes free."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise DiskFullError(
            folder,
            f"needs {need / 1e9:.1f} GB on {folder} for the task store, {free / 1e9:.1f} GB are free",
            fix="free space there, or point MERGELAB_HOME at a data home on a larger disk",
        )


def _build(target: Path, header: dict, theta0: Callable[[], torch.Tensor], fill_row: RowFiller) -> None:
    """Write the store of `header` at `target`: the room checked before anything is read or written."""
    text = json.dumps(header).encode("utf-8")
    dtype = STORE_DTYPES[header["dtype"]]
    numel = sum(int(np.prod(s)) for s in header["spec"]["shapes"])
    layout = Layout(len(header["task_names"]), numel, dtype.itemsize, len(text))
    check_room(target.parent, layout.size)
    row = torch.empty(layout.numel, dtype=torch.float32)  # [P] what fill_row writes
    stored = row if dtype == torch.float32 else torch.empty(layout.numel, dtype=dtype)  # [P] as written
    with atomic_path(target) as tmp, open(tmp, "r+b") as handle:
        handle.write(MAGIC + struct.pack("<Q", len(text)) + text)
        _write_at(handle, layout.theta0_offset, theta0().detach().cpu().float().contiguous())
        for k in range(layout.num_tasks):
            fill_row(k, row)
            if stored is not row:
                stored.copy_(row)  # rounded to bfloat16 (round to nearest even)
            _write_at(handle, layout.rows_offset + k * layout.row_bytes, stored)
            if k == 0:
                fault_point("store.mid_build")
        handle.truncate(layout.size)


def _write_at(handle: Any, offset: int, values: torch.Tensor) -> None:
    """Write `values`' bytes at `offset`, sync them and drop them from the page cache (no second copy kept)."""
    handle.seek(offset)
    handle.write(values.view(torch.uint8).numpy().data)
    handle.flush()
    os.fdatasync(handle.fileno())
    os.posix_fadvise(handle.fileno(), offset, values.numel() * values.element_size(), os.POSIX_FADV_DONTNEED)


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """An exclusive lock on `.<name>.lock` beside `target`, released when the holder exits or dies."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True, eq=False)
class BuiltStore:
    """A built store, mapped: θ₀ in memory (float32 [P]), the rows read from the mapping block by block."""

    path: Path
    spec: ParamSpec
    task_names: tuple[str, ...]
    theta0: torch.Tensor  # [P] float32
    dtype: torch.dtype
    mapping: mmap.mmap
    rows: torch.Tensor  # [K, P] of `dtype`, over the mapping (not resident until read)
    layout: Layout

    @classmethod
    def open(cls, path: Path) -> BuiltStore:
        header, layout = read_header(path)
        spec = ParamSpec(tuple(header["spec"]["names"]), tuple(tuple(s) for s in header["spec"]["shapes"]))
        dtype = STORE_DTYPES[header["dtype"]]
        with open(path, "rb") as handle:
            theta0 = torch.from_numpy(
                np.fromfile(handle, dtype=np.float32, count=layout.numel, offset=layout.theta0_offset)
            )
            mapping = mmap.mmap(handle.fileno(), layout.size, access=mmap.ACCESS_READ)
        with warnings.catch_warnings():  # the mapping is read-only, and so is every use of it here
            warnings.filterwarnings("ignore", message="The given buffer is not writable")
            count = layout.num_tasks * layout.numel
            rows = torch.frombuffer(mapping, dtype=dtype, count=count, offset=layout.rows_offset)
        rows = rows.view(layout.num_tasks, layout.numel)  # [K, P]
        return cls(Path(path), spec, tuple(header["task_names"]), theta0, dtype, mapping, rows, layout)

    def block(self, rows: Sequence[int], cols: slice, *, out: torch.Tensor | None = None) -> torch.Tensor:
        rows = checked_rows(rows, len(self.task_names))
        start, stop = checked_cols(cols, self.spec.numel)
        out = output(out, (len(rows), stop - start), like=self.theta0)  # [k, c]
        for i, r in enumerate(rows):
            out[i].copy_(self.rows[r, start:stop])  # widened to float32
            self.release(r, start, stop)
        return out

    def layer(self, rows: Sequence[int], name: str, *, out: torch.Tensor | None = None) -> torch.Tensor:
        shape = layer_shape(self.spec, name)
        flat = None if out is None else out.view(out.shape[0], -1)
        return self.block(rows, self.spec.slice_of(name), out=flat).view(-1, *shape)  # [k, out, in]

    def release(self, row: int, start: int, stop: int) -> None:
        """Drop the mapped pages of row `row`, columns [start, stop), from this process (they stay cached)."""
        first = self.layout.rows_offset + row * self.layout.row_bytes + start * self.layout.itemsize
        last = self.layout.rows_offset + row * self.layout.row_bytes + stop * self.layout.itemsize
        first -= first % PAGE
        if last > first:
            self.mapping.madvise(mmap.MADV_DONTNEED, first, last - first)

    def matrix(self) -> TaskMatrix:
        """A TaskMatrix whose T is the mapping itself, in the store's dtype: its pages are the file's, released by
        the kernels as they stream it (engine/store/pages.py). A bfloat16 T is read by the methods that declare
        it (`MergeMethod.streams`: they widen what they read and compute in float32); the others get it widened
        whole for the call where that fits in memory (engine/merge/declaration.py: `rows_as_read`)."""
        return TaskMatrix(self.theta0, self.rows, self.spec, self.task_names)
