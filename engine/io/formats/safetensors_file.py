"""Read a safetensors file's header and describe its tensors lazily (no data read).

The format (huggingface/safetensors): u64 little-endian N, an N-byte JSON header
{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the data buffer;
offsets are relative to the buffer. Each tensor becomes a FileTensor at 8 + N + begin, so reading it is
one `readinto` into its destination.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path

import torch

from engine.errors import CheckpointError
from engine.io.formats.lazy import FileTensor

MAX_HEADER_BYTES = 100_000_000  # the format's own limit
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


def read_header(path: Path) -> SafetensorsHeader:
    """Parse and check the header: every tensor must lie inside the file and fit its dtype × shape."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise _unreadable(path, "shorter than a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise _unreadable(path, f"declares a {length}-byte header in a {size}-byte file")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _unreadable(path, f"header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _unreadable(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    start = 8 + length
    tensors = {name: _file_tensor(path, name, info, start, size) for name, info in header.items()}
    return SafetensorsHeader(tensors=tensors, metadata={str(k): str(v) for k, v in metadata.items()})


def _file_tensor(path: Path, name: str, info: object, start: int, size: int) -> FileTensor:
    try:
        dtype = DTYPES[info["dtype"]]  # type: ignore[index]
        shape = tuple(int(n) for n in info["shape"])  # type: ignore[index]
        begin, end = (int(n) for n in info["data_offsets"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError) as exc:
        raise _unreadable(path, f"tensor {name!r} has a malformed or unsupported entry ({exc!r})") from exc
    expected = prod(shape) * torch.empty((), dtype=dtype).element_size()
    if end - begin != expected or start + end > size or begin < 0:
        raise _unreadable(
            path,
            f"tensor {name!r} spans bytes {begin}..{end}, expected {expected} bytes "
            f"inside the {size - start}-byte buffer",
        )
    return FileTensor(path=path, offset=start + begin, shape=shape, dtype=dtype)


def _unreadable(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(
        path,
        f"cannot be read, likely truncated or not safetensors: {problem}",
        fix="copy or download the file again, or re-save it with safetensors",
    )
