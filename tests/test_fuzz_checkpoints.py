"""Hostile and malformed checkpoint files: each ends in a clear MergelabError, in bounded time and memory.

Every file is generated here (nothing binary is committed) and loaded by the loader the CLI uses
(`engine.io.checkpoints.load_checkpoint`) through the harness of tests/fuzz.py: one subprocess imports the
engine once and forks a fresh child per case (60 s alarm, peak-RSS growth measured with ru_maxrss); the test
checks a MergelabError naming the file with a "Fix:", at most 1 GiB of growth, no payload run (canary file
absent), no `*.part` file left.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import socket
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.models import expected_visual_shapes
from tests.builders import TINY_ARCH
from tests.fuzz import Case, Outcome, check_cases, check_refused, run_cases

# --- torch zip files, assembled entry by entry -------------------------------------------------------


class _Storage:
    """Pickles as torch.save's persistent storage id: ('storage', FloatStorage, key, 'cpu', numel)."""

    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class _Tensor:
    """Pickles as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None


def _pickled(obj: object) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None) -> Path:
    """A zip laid out as torch.save lays it out (all entries stored), around a given data.pkl."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", b"little")
        for key, data in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", b"3\n")
    return path


def short_storage(folder: Path, _: Path) -> Path:
    """torch.save's own file with its storage entry cut to 40 of 400 bytes; the next entry follows it."""
    whole = folder / "whole.pt"
    torch.save({"w": torch.arange(100, dtype=torch.float32)}, whole)
    path = folder / "short.pt"
    with zipfile.ZipFile(whole) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info.filename, data[:40] if info.filename.endswith("/data/0") else data)
    whole.unlink()
    return path


def view_past_storage(folder: Path, _: Path) -> Path:
    """A [64] view of a 16-element storage whose entry really holds 16 elements."""
    return _torch_zip(folder / "view.pt", _pickled({"w": _Tensor(_Storage("0", 16), 0, (64,), (1,))}), {"0": bytes(64)})


def strided_view_past_storage(folder: Path, _: Path) -> Path:
    """A [4, 4] view with row stride 8 reaches element 1 + 3·8 + 3 = 28 of a 16-element storage."""
    tensor = _Tensor(_Storage("0", 16), 0, (4, 4), (8, 1))
    return _torch_zip(folder / "strided.pt", _pickled({"w": tensor}), {"0": bytes(64)})


def offset_view_past_storage_with_sidecar(folder: Path, _: Path) -> Path:
    """A view starting at element 12 of 16 with 8 elements, read through a sidecar (the native path)."""
    path = _torch_zip(
        folder / "native.pt", _pickled({"w": _Tensor(_Storage("0", 16), 12, (8,), (1,))}), {"0": bytes(64)}
    )
    sidecar = {"architecture": TINY_ARCH, "variant": "standard", "tensors_sha256": "0" * 64}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def storage_longer_than_entry(folder: Path, _: Path) -> Path:
    """The pickle claims 1000 elements; the entry holds 4 bytes."""
    tensor = _Tensor(_Storage("0", 1000), 0, (1,), (1,))
    return _torch_zip(folder / "claims.pt", _pickled({"w": tensor}), {"0": bytes(4)})


def malformed_tensor_record(folder: Path, _: Path) -> Path:
    """_rebuild_tensor_v2 called with text where the storage offset and size belong."""
    tensor = _Tensor(_Storage("0", 1), 0, (1,), (1,))
    tensor.args = (tensor.args[0], "zero", "one", (1,), False, collections.OrderedDict())
    return _torch_zip(folder / "record.pt", _pickled({"w": tensor}), {"0": bytes(4)})


def _deflated_pickle(path: Path, inflated_bytes: int, *, declared: int | None = None) -> Path:
    """A zip whose data.pkl deflates `inflated_bytes` zeros (a ~1000× bomb); `declared` patches the
    central directory's uncompressed size to lie."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data.pkl", "w") as entry:
            chunk = bytes(2**20)
            for _ in range(inflated_bytes // len(chunk)):
                entry.write(chunk)
        archive.writestr("archive/version", b"3\n")
    if declared is not None:
        data = bytearray(path.read_bytes())
        central = data.index(b"PK\x01\x02")
        struct.pack_into("<I", data, central + 24, declared)  # the uncompressed size zipfile trusts
        path.write_bytes(bytes(data))
    return path


def zip_bomb_pickle(folder: Path, _: Path) -> Path:
    return _deflated_pickle(folder / "bomb.pt", 256 * 2**20)


def zip_bomb_lying_size(folder: Path, _: Path) -> Path:
    return _deflated_pickle(folder / "liar.pt", 64 * 2**20, declared=1000)


def shared_dict_40_levels(folder: Path, _: Path) -> Path:
    """Each level holds the level below twice: 1.8 kB of pickle, 2⁴⁰ paths."""
    level: dict = {}
    for _ in range(40):
        level = {"a": level, "b": level}
    return _torch_zip(folder / "shared.pt", _pickled(level))


def self_referencing_dict(folder: Path, _: Path) -> Path:
    loop: dict = {"w": None}
    loop["w"] = loop
    return _torch_zip(folder / "loop.pt", _pickled({"state_dict": loop}))


def dicts_150_deep(folder: Path, _: Path) -> Path:
    nested: dict = {}
    for _ in range(150):
        nested = {"x": nested}
    return _torch_zip(folder / "deep.pt", _pickled(nested))


def tuple_key_3m_deep(folder: Path, _: Path) -> Path:
    """{((((...)))): 1}: hashing this key recurses 3 million levels in C (a segfault, not an exception)."""
    return _torch_zip(folder / "tuple.pt", b"\x80\x02}" + b")" + b"\x85" * 3_000_000 + b"K\x01s.")


def lists_1m_deep(folder: Path, _: Path) -> Path:
    return _torch_zip(folder / "lists.pt", b"\x80\x02" + b"]" * 1_000_000 + b"a" * 999_999 + b".")


def memo_slot_2_31(folder: Path, _: Path) -> Path:
    """LONG_BINPUT 2³¹: the C unpickler would grow its memo array to 16 GiB."""
    return _torch_zip(folder / "memo.pt", b"\x80\x02}r" + struct.pack("<I", 2**31) + b".")


def three_million_opcodes(folder: Path, _: Path) -> Path:
    return _torch_zip(folder / "ops.pt", b"\x80\x02" + b"N0" * 1_500_000 + b"}.")


def _payload(module: str, name: str, argument: str) -> bytes:
    """Protocol-0 GLOBAL module.name, called (REDUCE) with one text argument."""
    return f"c{module}\n{name}\n(V{argument}\ntR.".encode()


def os_system(folder: Path, canary: Path) -> Path:
    return _torch_zip(folder / "os.pt", _payload("os", "system", f"touch {canary}"))


def posix_system(folder: Path, canary: Path) -> Path:
    return _torch_zip(folder / "posix.pt", _payload("posix", "system", f"touch {canary}"))


def builtins_eval(folder: Path, canary: Path) -> Path:
    code = f"__import__('pathlib').Path('{canary}').touch()"
    return _torch_zip(folder / "eval.pt", _payload("builtins", "eval", code))


def payload_inside_state_dict(folder: Path, canary: Path) -> Path:
    """A real torch.save file whose state dict holds an os.system REDUCE next to a tensor."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {canary}",))

    path = folder / "mixed.pt"
    torch.save({"w": torch.zeros(3), "x": Payload()}, path)
    return path


def truncated_zip(folder: Path, _: Path) -> Path:
    path = folder / "cut.pt"
    torch.save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def bad_magic(folder: Path, _: Path) -> Path:
    path = folder / "magic.pt"
    path.write_bytes(b"NOTAZIP!" + bytes(range(256)) * 8)
    return path


def legacy_torch_pickle(folder: Path, _: Path) -> Path:
    path = folder / "legacy.pt"
    torch.save({"w": torch.zeros(3)}, path, _use_new_zipfile_serialization=False)
    return path


def empty_pt(folder: Path, _: Path) -> Path:
    path = folder / "empty.pt"
    path.write_bytes(b"")
    return path


# --- safetensors files, header written by hand -------------------------------------------------------


def _safetensors(path: Path, header: object, data: bytes, *, length: int | None = None) -> Path:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _f32(name: str, shape: list, begin: int, end: int) -> dict:
    return {name: {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}}


def overlapping_offsets(folder: Path, _: Path) -> Path:
    header = {**_f32("a", [4], 0, 16), **_f32("b", [4], 8, 24)}
    return _safetensors(folder / "overlap.safetensors", header, bytes(24))


def gap_between_tensors(folder: Path, _: Path) -> Path:
    header = {**_f32("a", [2], 0, 8), **_f32("b", [2], 16, 24)}
    return _safetensors(folder / "gap.safetensors", header, bytes(24))


def bytes_past_last_tensor(folder: Path, _: Path) -> Path:
    return _safetensors(folder / "trailing.safetensors", _f32("a", [2], 0, 8), bytes(64))


def list_metadata(folder: Path, _: Path) -> Path:
    header = {"__metadata__": ["format", "pt"], **_f32("a", [2], 0, 8)}
    return _safetensors(folder / "listmeta.safetensors", header, bytes(8))


def number_metadata(folder: Path, _: Path) -> Path:
    header = {"__metadata__": {"quick_gelu": 1}, **_f32("a", [2], 0, 8)}
    return _safetensors(folder / "nummeta.safetensors", header, bytes(8))


def huge_header_length(folder: Path, _: Path) -> Path:
    return _safetensors(folder / "huge.safetensors", _f32("a", [2], 0, 8), bytes(8), length=2**63)


def negative_shape(folder: Path, _: Path) -> Path:
    return _safetensors(folder / "negative.safetensors", _f32("a", [-2, -1], 0, 8), bytes(8))


def float_shape(folder: Path, _: Path) -> Path:
    return _safetensors(folder / "float.safetensors", _f32("a", [2.0], 0, 8), bytes(8))


def unknown_dtype(folder: Path, _: Path) -> Path:
    header = {"a": {"dtype": "F7", "shape": [2], "data_offsets": [0, 8]}}
    return _safetensors(folder / "dtype.safetensors", header, bytes(8))


def size_mismatch(folder: Path, _: Path) -> Path:
    return _safetensors(folder / "size.safetensors", _f32("a", [10], 0, 8), bytes(8))


def truncated_data(folder: Path, _: Path) -> Path:
    path = folder / "cut.safetensors"
    save_file({"a": torch.zeros(100), "b": torch.ones(100)}, str(path))
    path.write_bytes(path.read_bytes()[:-200])
    return path


def json_nested_100k_deep(folder: Path, _: Path) -> Path:
    raw = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return _safetensors(folder / "nested.safetensors", raw, b"")


def empty_safetensors(folder: Path, _: Path) -> Path:
    path = folder / "empty.safetensors"
    path.write_bytes(b"")
    return path


# --- weights that are not floating point -----------------------------------------------------------


def _integer_tower(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The tiny architecture's image tower, every key and shape right, its values integers (×1000)."""
    generator = torch.Generator().manual_seed(3)
    shapes = expected_visual_shapes(TINY_ARCH)
    return {k: (torch.randint(-3, 4, tuple(v), generator=generator) * 1000).to(dtype) for k, v in shapes.items()}


def int64_safetensors(folder: Path, _: Path) -> Path:
    """Written by the safetensors library: it used to be cast to float and merged, every weight 1000× too large."""
    path = folder / "int64.safetensors"
    save_file(_integer_tower(torch.int64), str(path))
    return path


def int8_torch_save(folder: Path, _: Path) -> Path:
    path = folder / "int8.pt"
    torch.save(_integer_tower(torch.int8), path)
    return path


def bool_with_sidecar(folder: Path, _: Path) -> Path:
    """A sidecar'd (native) file whose tensors are booleans."""
    path = folder / "bool.safetensors"
    save_file({k: v != 0 for k, v in _integer_tower(torch.int64).items()}, str(path))
    sidecar = {"architecture": TINY_ARCH, "variant": "standard", "tensors_sha256": "0" * 64}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


# --- paths that are not files ------------------------------------------------------------------------


def folder_named_safetensors(folder: Path, _: Path) -> Path:
    path = folder / "model.safetensors"
    path.mkdir()
    return path


def folder_named_pt(folder: Path, _: Path) -> Path:
    path = folder / "model.pt"
    path.mkdir()
    (path / "data.pkl").write_bytes(b"")
    return path


def named_pipe(folder: Path, _: Path) -> Path:
    """Opening a pipe to read blocks until a writer comes: it must be refused unopened (the alarm ends a hang)."""
    path = folder / "model.safetensors"
    os.mkfifo(path)
    return path


def named_pipe_with_sidecar(folder: Path, _: Path) -> Path:
    path = named_pipe(folder, _)
    path.with_suffix(".json").write_text(json.dumps({"architecture": TINY_ARCH, "variant": "standard"}))
    return path


def sidecar_is_a_pipe(folder: Path, _: Path) -> tuple[Path, Path]:
    """A pipe where the sidecar belongs used to be passed over: the file was read as a foreign checkpoint."""
    path = folder / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    os.mkfifo(path.with_suffix(".json"))
    return path, path.with_suffix(".json")


def hf_weights_are_a_pipe(folder: Path, _: Path) -> tuple[Path, Path]:
    """A Hugging Face folder whose model.safetensors is a pipe used to read "a folder without model.safetensors"."""
    model = folder / "hf"
    model.mkdir()
    (model / "config.json").write_text("{}")
    os.mkfifo(model / "model.safetensors")
    return model, model / "model.safetensors"


def hf_config_is_a_pipe(folder: Path, _: Path) -> tuple[Path, Path]:
    model = folder / "hf"
    model.mkdir()
    save_file({"w": torch.zeros(2)}, str(model / "model.safetensors"))
    os.mkfifo(model / "config.json")
    return model, model / "config.json"


def unix_socket(folder: Path, _: Path) -> Path:
    path = folder / "model.pt"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))  # the socket file stays after the socket closes
    return path


def character_device(folder: Path, _: Path) -> Path:
    path = folder / "model.safetensors"
    path.symlink_to("/dev/zero")  # endless zeros: a reader that trusts it would never stop
    return path


CASES = [
    Case("short_storage", short_storage, r"declares 100 float32 values \(400 bytes\), its zip entry holds 40"),
    Case("view_past_storage", view_past_storage, r"tensor 'w' views bytes up to 256 of storage data/0"),
    Case("strided_view_past_storage", strided_view_past_storage, r"tensor 'w' views bytes up to 112 .*stride \[8, 1\]"),
    Case("offset_view_with_sidecar", offset_view_past_storage_with_sidecar, r"tensor 'w' views bytes up to 80"),
    Case("storage_longer_than_entry", storage_longer_than_entry, r"declares 1000 float32 values"),
    Case("malformed_tensor_record", malformed_tensor_record, r"data.pkl cannot be read .*malformed tensor record"),
    Case("zip_bomb_pickle", zip_bomb_pickle, r"entry archive/data.pkl declares 268435456 bytes"),
    Case("zip_bomb_lying_size", zip_bomb_lying_size, r"entry archive/data.pkl cannot be read"),
    Case("shared_dict_40_levels", shared_dict_40_levels, r"reaches more than 500000 objects"),
    Case("self_referencing_dict", self_referencing_dict, r"contains itself \(at 'state_dict.w'\)"),
    Case("dicts_150_deep", dicts_150_deep, r"nests containers more than 100 deep"),
    Case("tuple_key_3m_deep", tuple_key_3m_deep, r"data.pkl nests objects more than 200 deep"),
    Case("lists_1m_deep", lists_1m_deep, r"data.pkl nests objects more than 200 deep"),
    Case("memo_slot_2_31", memo_slot_2_31, r"not a well-formed pickle \(memo slot 2147483648 out of range\)"),
    Case("three_million_opcodes", three_million_opcodes, r"more than 2000000 pickle opcodes"),
    Case("os_system", os_system, r"names the global 'os.system'.*nothing was executed"),
    Case("posix_system", posix_system, r"names the global 'posix.system'"),
    Case("builtins_eval", builtins_eval, r"names the global 'builtins.eval'"),
    Case("payload_inside_state_dict", payload_inside_state_dict, r"names the global '(posix|os).system'"),
    Case("truncated_zip", truncated_zip, r"is not a torch zip checkpoint"),
    Case("bad_magic", bad_magic, r"is not a torch zip checkpoint"),
    Case("legacy_torch_pickle", legacy_torch_pickle, r"is not a torch zip checkpoint .*legacy"),
    Case("empty_pt", empty_pt, r"is not a torch zip checkpoint"),
    Case("overlapping_offsets", overlapping_offsets, r"tensor 'b' at bytes 8..24 overlaps the tensor before it"),
    Case("gap_between_tensors", gap_between_tensors, r"tensor 'b' at bytes 16..24 leaves a gap"),
    Case("bytes_past_last_tensor", bytes_past_last_tensor, r"tensors cover 8 bytes of a 64-byte data buffer"),
    Case("list_metadata", list_metadata, r"__metadata__ is not an object of text values"),
    Case("number_metadata", number_metadata, r"__metadata__ is not an object of text values"),
    Case("huge_header_length", huge_header_length, r"declares a 9223372036854775808-byte header"),
    Case("negative_shape", negative_shape, r"shape that is not a list of non-negative integers"),
    Case("float_shape", float_shape, r"shape that is not a list of non-negative integers"),
    Case("unknown_dtype", unknown_dtype, r"unsupported dtype 'F7'"),
    Case("size_mismatch", size_mismatch, r"needs 40 bytes, its data_offsets span 8"),
    Case("truncated_data", truncated_data, r"tensors cover 800 bytes of a 600-byte data buffer"),
    Case("json_nested_100k_deep", json_nested_100k_deep, r"header is not JSON \(RecursionError\)"),
    Case("empty_safetensors", empty_safetensors, r"shorter than a safetensors header"),
    Case("folder_named_safetensors", folder_named_safetensors, r"is a folder without model.safetensors"),
    Case("folder_named_pt", folder_named_pt, r"is a folder without model.safetensors"),
    Case("int64_safetensors", int64_safetensors, r"tensor '\w+' is int64 \(and \d+ more\): weights must be float32"),
    Case("int8_torch_save", int8_torch_save, r"tensor '\w+' is int8 .*float32, float16, bfloat16 or float64"),
    Case("bool_with_sidecar", bool_with_sidecar, r"tensor '\w+' is bool "),
    Case("named_pipe", named_pipe, r"is a named pipe \(FIFO\), not a regular file"),
    Case("named_pipe_with_sidecar", named_pipe_with_sidecar, r"is a named pipe \(FIFO\), not a regular file"),
    Case("sidecar_is_a_pipe", sidecar_is_a_pipe, r"is a named pipe \(FIFO\), not a regular file"),
    Case("hf_weights_are_a_pipe", hf_weights_are_a_pipe, r"is a named pipe \(FIFO\), not a regular file"),
    Case("hf_config_is_a_pipe", hf_config_is_a_pipe, r"is a named pipe \(FIFO\), not a regular file"),
    Case("unix_socket", unix_socket, r"is a socket, not a regular file"),
    Case("character_device", character_device, r"is a character device, not a regular file"),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    """Every case's outcome, from one fork server (a fresh forked child per case)."""
    return run_cases(CASES, tmp_path_factory.mktemp("fuzz"))


def test_there_are_enough_cases():
    check_cases(CASES, 20)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_file_is_refused_clearly(outcomes, case):
    check_refused(outcomes[case.name], case)
