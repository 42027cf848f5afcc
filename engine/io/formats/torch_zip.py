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

A hostile file gets no further than a clear CheckpointError, like torch.load refuses it or better:
- data.pkl is read with a hard cap (a deflated entry could inflate 1000×), and its opcodes are scanned
  before unpickling (engine/io/formats/pickle_scan.py: nesting, object count, memo slots);
- every tensor view must lie inside its storage, and every storage inside its zip entry (else reading it
  would return the next entry's bytes);
- the walk of the unpickled structure refuses cycles and bounds its depth and its number of visits
  (a dict shared twice per level, 40 levels deep, would otherwise be walked 2⁴⁰ times).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any, NoReturn

import torch

from engine.errors import CheckpointError
from engine.io.formats.lazy import FileTensor, LazyTensor
from engine.io.formats.pickle_scan import check_pickle

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
# data.pkl describes tensors (~150 bytes each) and module attributes: a ViT-L/14 ImageEncoder's is ~95 kB.
MAX_PICKLE_BYTES = 32 * 2**20
MAX_INFLATION = 100  # a compressed entry may inflate at most this much (pickles deflate ~3-10×) ...
INFLATION_FLOOR = 2**20  # ... unless it stays this small
MAX_STAND_IN_CLASSES = 10_000  # distinct pickled class names (an open_clip module tree names ~30)
MAX_WALK_DEPTH = 100  # dict/module levels to a tensor: ~12 in a pickled ImageEncoder
MAX_WALK_VISITS = 500_000  # containers and tensors visited, shared ones once per path
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

    key: str  # the zip entry data/<key>
    dtype: torch.dtype
    offset: int  # byte offset of the entry's data in the zip file
    numel: int  # elements of `dtype` the pickle says the storage holds
    entry_bytes: int  # bytes the zip entry actually holds

    @property
    def nbytes(self) -> int:
        return self.numel * _itemsize(self.dtype)


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
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:  # ValueError: a damaged zip64 record
        raise CheckpointError(
            path,
            "is not a torch zip checkpoint (a legacy pre-1.6 torch.save file, or not a checkpoint at all)",
            fix="re-save it with torch ≥ 1.6, or as safetensors",
        ) from exc
    except OSError as exc:
        raise CheckpointError(
            path, f"cannot be opened ({exc.strerror or exc})", fix="check the path and the file's permissions"
        ) from exc
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if not pickles:
            raise CheckpointError(path, "has no <archive>/data.pkl entry", fix="save it with torch.save")
        prefix = pickles[0].rsplit("/", 1)[0]
        byteorder = f"{prefix}/byteorder"
        if byteorder in archive.namelist() and _read_entry(archive, byteorder, 16, path).strip() != b"little":
            raise CheckpointError(path, "stores big-endian tensors", fix="re-save it on a little-endian machine")
        data = _read_entry(archive, pickles[0], MAX_PICKLE_BYTES, path)
        check_pickle(data, path)
        unpickler = _RestrictedUnpickler(io.BytesIO(data), path, archive, prefix)
        root = _unpickle(unpickler, path)
    if unpickler.bad_views:
        _refuse_view(path, root, *unpickler.bad_views[0])
    return TorchZip(path=path, root=root, globals=frozenset(unpickler.seen))


def _unpickle(unpickler: _RestrictedUnpickler, path: Path) -> Any:
    """Run the restricted unpickler; whatever a malformed stream raises becomes a CheckpointError.

    Every exception is caught on purpose: the stream is untrusted input, and its opcodes can make the
    allowed callables fail in any way (TypeError, KeyError, RecursionError from a deep repr, MemoryError).
    """
    try:
        return unpickler.load()
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(
            path,
            f"data.pkl cannot be read ({type(exc).__name__}: {str(exc)[:200]})",
            fix="copy or download the file again",
        ) from None


def _read_entry(archive: zipfile.ZipFile, name: str, cap: int, path: Path) -> bytes:
    """The uncompressed bytes of entry `name`, at most `cap` of them, whatever sizes the zip declares."""
    info = archive.getinfo(name)
    inflation = info.file_size / max(info.compress_size, 1)
    if info.file_size > cap or (info.file_size > INFLATION_FLOOR and inflation > MAX_INFLATION):
        raise CheckpointError(
            path,
            f"entry {name} declares {info.file_size} bytes from {info.compress_size} compressed "
            f"(at most {cap} bytes, inflating at most {MAX_INFLATION}×): not a checkpoint torch.save wrote",
            fix="re-save the model with torch.save (it stores entries uncompressed), or as safetensors",
        )
    try:
        with archive.open(info) as entry:
            data = entry.read(cap + 1)  # the declared size can lie: never inflate more than the cap
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
        # RuntimeError: an encrypted entry; NotImplementedError: an unknown compression method
        raise CheckpointError(
            path, f"entry {name} cannot be read ({exc})", fix="copy or download the file again"
        ) from exc
    if len(data) > cap:
        raise CheckpointError(
            path, f"entry {name} inflates past {cap} bytes", fix="re-save the model with torch.save, or as safetensors"
        )
    return data


def state_tensors(unpickled: TorchZip) -> dict[str, LazyTensor]:
    """The state dict of an unpickled object: a dict of tensors, or a module tree of stand-ins.

    Non-persistent buffers (`_non_persistent_buffers_set`) are left out, as `state_dict()` does. A container
    reached along two paths appears under both names, as a tied submodule does in `state_dict()`.
    """
    walk = _Walk(unpickled.path)
    walk.visit(unpickled.root, "", depth=0)
    return walk.out


@dataclass
class _Walk:
    """One bounded walk: `ancestors` (ids of the containers on the current path) catches cycles."""

    path: Path
    out: dict[str, LazyTensor] = field(default_factory=dict)
    ancestors: set[int] = field(default_factory=set)
    visits: int = 0

    def visit(self, obj: Any, prefix: str, *, depth: int) -> None:
        self.visits += 1
        if isinstance(obj, LazyTensor):
            self.out[prefix.removesuffix(".")] = obj
            return
        if not isinstance(obj, (dict, StandIn)):
            return
        self._check(obj, prefix, depth)
        self.ancestors.add(id(obj))
        for name, child in self._children(obj):
            self.visit(child, f"{prefix}{name}.", depth=depth + 1)
        self.ancestors.discard(id(obj))

    def _check(self, obj: Any, prefix: str, depth: int) -> None:
        where = repr(prefix.removesuffix(".")[:200] or "the top-level object")
        if id(obj) in self.ancestors:
            problem = f"contains itself (at {where}): a state dict is a tree"
        elif depth > MAX_WALK_DEPTH:
            problem = f"nests containers more than {MAX_WALK_DEPTH} deep (at {where})"
        elif self.visits > MAX_WALK_VISITS:
            problem = f"reaches more than {MAX_WALK_VISITS} objects along its paths (at {where})"
        else:
            return
        raise CheckpointError(
            self.path, problem, fix="save model.state_dict() (tensors only) with torch.save, or as safetensors"
        )

    @staticmethod
    def _children(obj: Any) -> list[tuple[str, Any]]:
        """Named children that may hold tensors; keys that are not text or integers name no tensor."""
        if isinstance(obj, dict):
            return [(str(k), v) for k, v in obj.items() if _is_name(k) and isinstance(v, (LazyTensor, dict, StandIn))]
        state = obj.__dict__
        skip = state.get("_non_persistent_buffers_set")
        skip = {k for k in skip if isinstance(k, str)} if isinstance(skip, (set, frozenset, list, tuple)) else set()
        children = [(k, v) for part in ("_parameters", "_buffers") for k, v in _items(state.get(part)) if k not in skip]
        children = [(k, v) for k, v in children if isinstance(v, LazyTensor)]
        return children + [(k, v) for k, v in _items(state.get("_modules")) if v is not None]


def _items(value: Any) -> list[tuple[str, Any]]:
    return [(str(k), v) for k, v in value.items() if _is_name(k)] if isinstance(value, dict) else []


def _is_name(key: Any) -> bool:
    return isinstance(key, str) or (isinstance(key, int) and not isinstance(key, bool))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, path: Path, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.path, self.archive, self.prefix = path, archive, prefix
        self.seen: set[str] = set()
        self.rebuilders: dict[str, Any] = {}
        self.stand_ins: dict[str, type] = {}  # one class per pickled name, however often the pickle names it
        self.storages: dict[tuple[str, torch.dtype, int], _StorageRef] = {}
        self.bad_views: list[tuple[FileTensor, str]] = []  # refused once the tensors' names are known

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # protocol-2 pickles use Python 2's name
        qualified = f"{module}.{name}"
        self.seen.add(qualified)
        if qualified in _REBUILDERS:
            return self.rebuilders.setdefault(qualified, _bind(_REBUILDERS[qualified], self))
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
            return self._stand_in(module, name)
        raise UnsafeCheckpointError(
            self.path,
            f"names the global {qualified!r}, which is not a tensor, container or "
            "known module class; refusing to unpickle it (nothing was executed)",
            fix="load it only if you trust it, and re-save its state_dict() as safetensors",
        )

    def _stand_in(self, module: str, name: str) -> type:
        qualified = f"{module}.{name}"
        if qualified not in self.stand_ins:
            if len(self.stand_ins) >= MAX_STAND_IN_CLASSES:
                raise CheckpointError(
                    self.path,
                    f"data.pkl names more than {MAX_STAND_IN_CLASSES} classes",
                    fix="save model.state_dict() (tensors only) with torch.save, or as safetensors",
                )
            self.stand_ins[qualified] = type(name, (StandIn,), {"__module__": f"stand-in:{module}"})
        return self.stand_ins[qualified]

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id of type {type(pid).__name__}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        dtype = storage_type[1] if isinstance(storage_type, tuple) else torch.uint8
        if not isinstance(key, str) or not _is_count(numel) or dtype not in STORAGE_DTYPES.values():
            raise pickle.UnpicklingError("malformed storage reference")
        name = f"{self.prefix}/data/{key}"
        if (name, dtype, numel) not in self.storages:
            offset, entry_bytes = _entry_offset(self.archive, name, self.path)
            storage = _StorageRef(key=key, dtype=dtype, offset=offset, numel=numel, entry_bytes=entry_bytes)
            if storage.nbytes > entry_bytes:
                raise CheckpointError(
                    self.path,
                    f"storage {name} declares {numel} {str(dtype).removeprefix('torch.')} values "
                    f"({storage.nbytes} bytes), its zip entry holds {entry_bytes} bytes",
                    fix="the file is damaged or was not written by torch.save; save it again",
                )
            self.storages[name, dtype, numel] = storage
        return self.storages[name, dtype, numel]


def _entry_offset(archive: zipfile.ZipFile, name: str, path: Path) -> tuple[int, int]:
    """Where an uncompressed zip entry's bytes start (after its local header), and how many there are."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointError(
            path, f"lacks the storage entry {name}", fix="the file is damaged; save it again"
        ) from None
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise CheckpointError(path, f"entry {name} is compressed", fix="save it with torch.save (stores uncompressed)")
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        file_size = handle.seek(0, io.SEEK_END)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise CheckpointError(path, f"entry {name} has no local header", fix="the file is damaged; save it again")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    if start + info.file_size > file_size:
        raise CheckpointError(
            path,
            f"entry {name} ends at byte {start + info.file_size}, past the file's {file_size}",
            fix="the file is truncated; copy or download it again",
        )
    return start, info.file_size


def _rebuild_tensor(
    unpickler: _RestrictedUnpickler, storage: Any, storage_offset: Any, size: Any, stride: Any, *_: Any
) -> FileTensor:
    """torch._utils._rebuild_tensor_v2 as a record; a view past its storage is noted for `_refuse_view`."""
    if not (
        isinstance(storage, _StorageRef)
        and _is_count(storage_offset)
        and isinstance(size, tuple)
        and isinstance(stride, tuple)
        and len(size) == len(stride)
        and all(_is_count(n) for n in (*size, *stride))
    ):
        raise pickle.UnpicklingError("malformed tensor record")
    itemsize = _itemsize(storage.dtype)
    tensor = FileTensor(
        path=unpickler.path,
        offset=storage.offset + storage_offset * itemsize,
        shape=size,
        dtype=storage.dtype,
        stride=stride,
    )
    span = 0 if prod(size) == 0 else 1 + sum((n - 1) * s for n, s in zip(size, stride))  # elements it reaches
    needed = (storage_offset + span) * itemsize
    if needed > storage.nbytes:
        unpickler.bad_views.append(
            (
                tensor,
                f"views bytes up to {needed} of storage data/{storage.key} (offset {storage_offset}, "
                f"size {list(size)}, stride {list(stride)}), which holds {storage.nbytes}",
            )
        )
    return tensor


def _refuse_view(path: Path, root: Any, tensor: FileTensor, problem: str) -> NoReturn:
    """Refuse a file whose tensor views lie past their storage, naming the tensor as its state dict would."""
    try:
        names = [name for name, t in state_tensors(TorchZip(path, root, frozenset())).items() if t is tensor]
    except CheckpointError:
        names = []
    name = repr(names[0]) if names else f"of shape {list(tensor.shape)}"
    raise CheckpointError(
        path,
        f"tensor {name} {problem}: reading it would return other data",
        fix="the file is damaged or was not written by torch.save; save it again",
    )


def _rebuild_parameter(unpickler: _RestrictedUnpickler, data: Any, *_: Any) -> Any:
    return data


def _rebuild_from_type(unpickler: _RestrictedUnpickler, func: Any, new_type: Any, args: tuple, state: Any) -> Any:
    return func(*args)


_REBUILDERS = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type,
}


def _bind(function: Any, unpickler: _RestrictedUnpickler) -> Any:
    def bound(*args: Any) -> Any:
        return function(unpickler, *args)

    return bound


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
