"""Releasing a memory-mapped task matrix's pages once a kernel has read them.

A float32 built store hands the merge methods T [K, P] as its own read-only mapping (`BuiltStore.matrix`).
Every page a kernel touches then stays in the process's resident set until the kernel reclaims it under
pressure, so the peak resident size (VmHWM) grows by one model size per task even though the anonymous memory
does not. The kernels that stream T (engine/merge/kernels.py, generalized.py, sparsify.py, subspace.py) call
`release` on each block they are done with, and the merge registry releases the whole of T after any
method (those that read T whole keep it only for the call). Where a block lies in a shared read-only file
mapping, its pages, and the pages around it that faults mapped too, are dropped from this process (madvise
MADV_DONTNEED); the next read maps them again from the page cache, which the processes opening the same store
share. Anywhere else (anonymous memory, a GPU) `release` does nothing: dropping anonymous pages would zero
them, so the mapping is identified from /proc/self/maps (a file-backed, read-only, shared region holding the
tensor), never guessed.
"""

from __future__ import annotations

import ctypes
import mmap
from dataclasses import dataclass
from pathlib import Path

import torch

PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4  # linux/mman.h
MARGIN = 2 << 20  # bytes either side of a block also released: what faults in it mapped around it
_madvise = ctypes.CDLL(None, use_errno=True).madvise
_madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


@dataclass(frozen=True)
class MappedPages:
    """The address range [start, stop) of the shared read-only file mapping that holds a tensor's memory."""

    start: int
    stop: int

    @classmethod
    def of(cls, tensor: torch.Tensor, *, maps: Path = Path("/proc/self/maps")) -> MappedPages | None:
        """The mapping holding `tensor` when it is a file's read-only shared mapping, else None (anonymous or
        device memory, or a writable mapping: never released)."""
        if tensor.device.type != "cpu" or tensor.untyped_storage().resizable():  # torch's own allocation
            return None
        address = tensor.data_ptr()
        try:
            lines = maps.read_text(encoding="ascii").splitlines()
        except OSError:
            return None
        for line in lines:
            fields = line.split()
            low, high = (int(a, 16) for a in fields[0].split("-"))
            if low <= address < high:
                file_backed = len(fields) >= 6 and fields[4] != "0"  # inode 0: anonymous
                return cls(low, high) if fields[1] == "r--s" and file_backed else None
        return None

    def release(self, view: torch.Tensor) -> None:
        """Drop the pages under `view` (a view of the mapped tensor: rows along dim 0, each row's rest
        contiguous, e.g. T[:, a:b] or one layer [K, m, n]) from this process; they stay in the page cache."""
        if view.dim() <= 1 or view.shape[0] == 1:
            self._drop(view.data_ptr(), view.numel() * view.element_size())
            return
        row_bytes = view[0].numel() * view.element_size()
        step = view.stride(0) * view.element_size()
        for i in range(view.shape[0]):  # over task rows: K calls per block
            self._drop(view.data_ptr() + i * step, row_bytes)

    def _drop(self, address: int, length: int) -> None:
        """Unmap [address − MARGIN, address + length + MARGIN) from this process, page-aligned, inside the
        mapping. A read fault maps the cached pages around it too (the kernel's fault-around window, a large
        folio): some before the block, released already, some after it; the margins catch both (a page
        released before its own read is mapped again by that read)."""
        first = max(self.start, address - MARGIN - (address - MARGIN) % PAGE)
        last = min(self.stop, -(-(address + length + MARGIN) // PAGE) * PAGE)
        if last > first:
            _madvise(first, last - first, _MADV_DONTNEED)


@dataclass(frozen=True)
class Pages:
    """`release` for one kernel call over T: a no-op unless T lies in a mapped store (see the module)."""

    mapped: MappedPages | None

    @classmethod
    def of(cls, T: torch.Tensor) -> Pages:
        return cls(MappedPages.of(T))

    def release(self, view: torch.Tensor) -> None:
        if self.mapped is not None:
            self.mapped.release(view)
