"""Read torch.save zip files (state dicts, and whole pickled modules) without running their code.

The task_vectors release (Ilharco et al., 2023), tangent task arithmetic and aTLAS store fine-tuned
encoders as pickled `src.modeling.ImageEncoder` modules; torch ≥ 2.6 refuses them with weights_only=True,
and a plain unpickler would run whatever the file names. This reader unpickles `data.pkl` itself with a
restricted `find_class`:
- tensor rebuild functions become FileTensor records (offset of the storage inside the uncompressed zip
  entry `data/<key>`), so no tensor data is read while unpickling;
- classes from the module packages these files use (src., open_clip., torchvision., torch.nn.modules.,
  fusion_bench.) become inert `StandIn` objects that only keep their pickled state;
- containers (OrderedDict, set) and torch dtypes are the real, harmless ones;
- any other global (os.system, builtins.eval, ...) is refused with `UnsafeCheckpointError` naming it.
`state_tensors` then walks `_parameters`/`_buffers`/`_modules` of the stand-ins as `state_dict()` would.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.errors import CheckpointError
from engine.io.formats.lazy import FileTensor, LazyTensor

STAND_IN_PACKAGES = ("src.", "open_clip.", "torchvision.", "torch.nn.modules.", "fusion_bench.", "modeling.")
STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}
DTYPE_NAMES = {"float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"}


class UnsafeCheckpointError(CheckpointError):
    """The pickle names a global outside the allowlist; nothing of it was executed."""


class StandIn:
    """An inert stand-in for a pickled class: accepts any constructor arguments, keeps pickled state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], (dict, type(None))):
            state = {**(state[0] or {}), **(state[1] or {})}  # (dict, slotstate) form
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state


@dataclass(frozen=True)
class _StorageRef:
    """A persistent storage reference: which zip entry, its element type, where its data starts."""

    dtype: torch.dtype
    offset: int  # byte offset of the entry's data in the zip file
    numel: int


@dataclass(frozen=True)
class TorchZip:
    """The unpickled top-level object (tensors as FileTensor, modules as StandIn) and the globals it named."""

    path: Path
    root: Any
    globals: frozenset[str]


def read_torch_zip(path: Path) -> TorchZip:
    """Unpickle `path`'s data.pkl under the allowlist; tensors are located, not read."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise CheckpointError(
            path,
            "is not a torch zip checkpoint (a legacy pre-1.6 torch.save file, or not a checkpoint at all)",
            fix="re-save it with torch ≥ 1.6, or as safetensors",
        ) from exc
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if not pickles:
            raise CheckpointError(path, "has no <archive>/data.pkl entry", fix="save it with torch.save")
        prefix = pickles[0].rsplit("/", 1)[0]
        byteorder = f"{prefix}/byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise CheckpointError(path, "stores big-endian tensors", fix="re-save it on a little-endian machine")
        unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), path, archive, prefix)
        try:
            root = unpickler.load()
        except UnsafeCheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(
                path, f"data.pkl cannot be read ({exc})", fix="copy or download the file again"
            ) from exc
    return TorchZip(path=path, root=root, globals=frozenset(unpickler.seen))


def state_tensors(obj: Any, *, prefix: str = "") -> dict[str, LazyTensor]:
    """The state dict of an unpickled object: a dict of tensors, or a module tree of stand-ins.

    Non-persistent buffers (`_non_persistent_buffers_set`) are left out, as `state_dict()` does.
    """
    if isinstance(obj, LazyTensor):
        return {prefix.removesuffix("."): obj}
    if isinstance(obj, dict):
        out: dict[str, LazyTensor] = {}
        for key, value in obj.items():
            if isinstance(value, (LazyTensor, dict, StandIn)):
                out.update(state_tensors(value, prefix=f"{prefix}{key}."))
        return out
    if isinstance(obj, StandIn):
        state = obj.__dict__
        skip = set(state.get("_non_persistent_buffers_set") or ())
        out = {f"{prefix}{k}": v for k, v in (state.get("_parameters") or {}).items() if isinstance(v, LazyTensor)}
        out.update(
            {
                f"{prefix}{k}": v
                for k, v in (state.get("_buffers") or {}).items()
                if isinstance(v, LazyTensor) and k not in skip
            }
        )
        for name, child in (state.get("_modules") or {}).items():
            if child is not None:
                out.update(state_tensors(child, prefix=f"{prefix}{name}."))
        return out
    return {}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, path: Path, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.path, self.archive, self.prefix = path, archive, prefix
        self.seen: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # protocol-2 pickles use Python 2's name
        qualified = f"{module}.{name}"
        self.seen.add(qualified)
        if qualified in _REBUILDERS:
            return _bind(_REBUILDERS[qualified], self.path)
        if module == "torch" and name in STORAGE_DTYPES:
            return ("storage", STORAGE_DTYPES[name])
        if module == "torch.storage" and name == "UntypedStorage":
            return ("storage", torch.uint8)
        if module == "torch" and name in DTYPE_NAMES:
            return getattr(torch, name)
        if qualified in ("collections.OrderedDict", "builtins.set", "builtins.frozenset"):
            return {
                "collections.OrderedDict": collections.OrderedDict,
                "builtins.set": set,
                "builtins.frozenset": frozenset,
            }[qualified]
        if qualified == "torch.Size":
            return tuple
        if qualified in ("torch.Tensor", "torch._tensor.Tensor", "torch.nn.parameter.Parameter"):
            return StandIn  # only passed to _rebuild_from_type_v2 as the tensor's type, never instantiated
        if module.startswith(STAND_IN_PACKAGES) or module in ("src", "open_clip", "torchvision"):
            return type(name, (StandIn,), {"__module__": f"stand-in:{module}"})
        raise UnsafeCheckpointError(
            self.path,
            f"names the global {qualified!r}, which is not a tensor, container or "
            "known module class; refusing to unpickle it (nothing was executed)",
            fix="load it only if you trust it, and re-save its state_dict() as safetensors",
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        dtype = storage_type[1] if isinstance(storage_type, tuple) else torch.uint8
        return _StorageRef(
            dtype=dtype, offset=_entry_offset(self.archive, f"{self.prefix}/data/{key}", self.path), numel=numel
        )


def _entry_offset(archive: zipfile.ZipFile, name: str, path: Path) -> int:
    """Where an uncompressed zip entry's bytes start (after its local header)."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointError(
            path, f"lacks the storage entry {name}", fix="the file is damaged; save it again"
        ) from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise CheckpointError(path, f"entry {name} is compressed", fix="save it with torch.save (stores uncompressed)")
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise CheckpointError(path, f"entry {name} has no local header", fix="the file is damaged; save it again")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _rebuild_tensor(
    path: Path, storage: _StorageRef, storage_offset: int, size: Any, stride: Any, *_: Any
) -> FileTensor:
    itemsize = torch.empty((), dtype=storage.dtype).element_size()
    return FileTensor(
        path=path,
        offset=storage.offset + int(storage_offset) * itemsize,
        shape=tuple(int(n) for n in size),
        dtype=storage.dtype,
        stride=tuple(int(s) for s in stride),
    )


def _rebuild_parameter(path: Path, data: Any, *_: Any) -> Any:
    return data


def _rebuild_from_type(path: Path, func: Any, new_type: Any, args: tuple, state: Any) -> Any:
    return func(*args)


_REBUILDERS = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type,
}


def _bind(function: Any, path: Path) -> Any:
    def bound(*args: Any) -> Any:
        return function(path, *args)

    return bound
