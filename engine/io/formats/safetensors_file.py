"""Read a safetensors file's header and describe its tensors lazily (no data read).

The format (huggingface/safetensors): u64 little-endian N, an N-byte JSON header
{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the data buffer;
offsets are relative to the buffer. Each tensor becomes a FileTensor at 8 + N + begin, so reading it is
one `readinto` into its destination.

The header is checked as strictly as the safetensors library checks it before it reads a byte: a
file that `safetensors.safe_open` refuses (overlapping or gapped offsets, bytes past the last tensor,
a shape that does not match its byte count, non-text metadata) is refused here too, so a file is
never read one way by mergelab and another way (or not at all) by the tools it was exported for.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path

import torch

from engine.errors import CheckpointError
from engine.home import open_regular
from engine.io.formats.lazy import FileTensor

# The library allows 100 MB; a CLIP's header is ~100 kB, and a 100 MB JSON header of tiny tensors would
# parse into gigabytes of Python objects before any check could refuse it.
MAX_HEADER_BYTES = 16 * 2**20
DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, FileTensor]
    metadata: dict[str, str]


@dataclass(frozen=True)
class _Entry:
    """One checked header entry; `begin`/`end` are byte offsets inside the data buffer."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


def read_header(path: Path) -> SafetensorsHeader:
    """Parse and check the header: the tensors, sorted by offset, must tile the data buffer exactly."""
    path = Path(path)
    header, start, size = _header_json(path)
    metadata = _metadata(path, header.pop("__metadata__", None))
    entries = sorted((_entry(path, name, info) for name, info in header.items()), key=lambda e: (e.begin, e.end))
    _check_tiling(path, entries, buffer_size=size - start)
    tensors = {e.name: FileTensor(path=path, offset=start + e.begin, shape=e.shape, dtype=e.dtype) for e in entries}
    return SafetensorsHeader(tensors=tensors, metadata=metadata)


def _header_json(path: Path) -> tuple[dict, int, int]:
    """The header object, where the data buffer starts, and the file's size."""
    try:
        size = path.stat().st_size
        with open_regular(path) as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise _unreadable(path, "shorter than a safetensors header")
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES or 8 + length > size:
                raise _unreadable(
                    path, f"declares a {length}-byte header in a {size}-byte file (at most {MAX_HEADER_BYTES})"
                )
            raw = handle.read(length)
    except OSError as exc:
        raise CheckpointError(
            path, f"cannot be opened ({exc.strerror or exc})", fix="check the path and the file's permissions"
        ) from exc
    if not raw.startswith(b"{"):
        raise _unreadable(path, "header does not start with '{'")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested ~1000 deep
        raise _unreadable(path, f"header is not JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise _unreadable(path, "header is not a JSON object")
    return header, 8 + length, size


def _metadata(path: Path, metadata: object) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _unreadable(path, "__metadata__ is not an object of text values")
    return metadata


def _entry(path: Path, name: str, info: object) -> _Entry:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise _unreadable(path, f"tensor {name!r} is not an object of dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _unreadable(
            path, f"tensor {name!r} has the unsupported dtype {str(dtype)[:20]!r} (one of {list(DTYPES)})"
        )
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise _unreadable(path, f"tensor {name!r} has a shape that is not a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(n) for n in offsets):
        raise _unreadable(path, f"tensor {name!r} has data_offsets that are not two non-negative integers")
    begin, end = offsets
    expected = prod(shape) * torch.empty((), dtype=DTYPES[dtype]).element_size()
    if end - begin != expected:
        raise _unreadable(
            path, f"tensor {name!r} ({dtype} {shape}) needs {expected} bytes, its data_offsets span {end - begin}"
        )
    return _Entry(name=name, dtype=DTYPES[dtype], shape=tuple(shape), begin=begin, end=end)


def _check_tiling(path: Path, entries: list[_Entry], *, buffer_size: int) -> None:
    """Sorted by offset, each tensor starts where the previous one ended, and the last ends the file."""
    position = 0
    for entry in entries:
        if entry.begin != position:
            relation = "overlaps the tensor before it" if entry.begin < position else "leaves a gap before it"
            raise _unreadable(path, f"tensor {entry.name!r} at bytes {entry.begin}..{entry.end} {relation}")
        position = entry.end
    if position != buffer_size:
        raise _unreadable(path, f"its tensors cover {position} bytes of a {buffer_size}-byte data buffer")


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _unreadable(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(
        path,
        f"cannot be read, likely truncated or not safetensors: {problem}",
        fix="copy or download the file again, or re-save it with safetensors",
    )
