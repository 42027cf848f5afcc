"""Hostile and malformed inputs to every loader besides checkpoints: each ends in a clear MergelabError, in
bounded time and memory, through the entry point a user reaches.

The loaders: collection.json, pool manifests (pool.yaml / pool.json) and discovered pool folders, opened as the
dashboard opens a typed path (`open_for_user` under the dashboard's policy, then the workspace), which also
reaches checkpoint sidecars and head files named by a manifest; recipes (`load_recipe`); tasks (`load_task`:
CSV files, image folders, packed task files); head files (`load_head_file`); the data home's config.json.
Every file is generated here and read through the fork server of tests/fuzz.py (a fresh child per case, 60 s
alarm, peak-RSS growth ≤ 1 GiB, the error's type and message reported as JSON). A few cases then go through
the dashboard itself (Streamlit's AppTest): the page shows the error naming the file, and the app keeps working.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest

from tests.builders import build_tiny_collection
from tests.fuzz import Case, Outcome, check_cases, check_refused, run_cases
from tests.test_fuzz_checkpoints import _payload, _torch_zip
from tests.test_views import APP, _open

HUGE = 2**31  # bytes of a sparse file: nothing is written, a reader that trusts its size allocates 2 GiB


def _sparse(path: Path, head: bytes, size: int = HUGE) -> Path:
    path.write_bytes(head)
    os.truncate(path, size)
    return path


def _nested(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def _laughs() -> str:
    """YAML "billion laughs": nine levels of nine aliases each, 9⁹ strings when expanded, 1 kB of text."""
    levels = ["&l0 [" + ", ".join(['"lol"'] * 9) + "]"]
    levels += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "[" + ", ".join(levels) + "]"


# --- pools and collections (opened as the dashboard opens them) --------------------------------------


def _tiny_pool(folder: Path) -> Path:
    """The tiny collection of tests/builders.py, built once per run and copied."""
    base = folder.parent / "_base"
    if not base.exists():
        build_tiny_collection(base)
    shutil.copytree(base, folder, dirs_exist_ok=True)
    return folder


def collection_nested_100k_deep(folder: Path, _: Path) -> tuple[Path, Path]:
    (folder / "collection.json").write_text('{"name": ' + _nested() + "}")
    return folder, folder / "collection.json"


def collection_huge(folder: Path, _: Path) -> tuple[Path, Path]:
    return folder, _sparse(folder / "collection.json", b'{"name": "')


def collection_not_an_object(folder: Path, _: Path) -> tuple[Path, Path]:
    (folder / "collection.json").write_text("[1, 2, 3]")
    return folder, folder / "collection.json"


def pool_yaml_python_tag(folder: Path, canary: Path) -> tuple[Path, Path]:
    (folder / "pool.yaml").write_text(f"pretrained: !!python/object/apply:os.system ['touch {canary}']\ntasks: {{}}\n")
    return folder, folder / "pool.yaml"


def pool_yaml_billion_laughs(folder: Path, _: Path) -> Path:
    text = (
        f"pretrained: zeroshot.pt\ntasks:\n  colour:\n    checkpoint: c.pt\n    data: d\n    templates: {_laughs()}\n"
    )
    (folder / "pool.yaml").write_text(text)
    return folder / "pool.yaml"


def pool_yaml_nested_100k_deep(folder: Path, _: Path) -> Path:
    (folder / "pool.yaml").write_text("pretrained: " + _nested() + "\n")
    return folder / "pool.yaml"


def pool_json_wrong_types(folder: Path, _: Path) -> Path:
    manifest = {"pretrained": 5, "tasks": {"colour": {"checkpoint": ["a.pt"], "data": "d"}}}
    (folder / "pool.json").write_text(json.dumps(manifest))
    return folder / "pool.json"


def pool_reaching_outside(folder: Path, _: Path) -> tuple[Path, Path]:
    manifest = {"pretrained": "/etc/hostname", "tasks": {"colour": {"checkpoint": "c.pt", "data": "d"}}}
    (folder / "pool.json").write_text(json.dumps(manifest))
    return folder / "pool.json", Path("/etc/hostname")


def discovered_only_empty_checkpoints(folder: Path, _: Path) -> Path:
    (folder / "zeroshot.pt").write_bytes(b"PK" + bytes(62))
    for task in ("colour", "shape"):
        (folder / task).mkdir()
        (folder / task / "finetuned.pt").write_bytes(b"")
    return folder


def discovered_garbage_pretrained(folder: Path, _: Path) -> tuple[Path, Path]:
    (folder / "zeroshot.pt").write_bytes(bytes(range(256)) * 4)
    (folder / "colour").mkdir()
    (folder / "colour" / "finetuned.pt").write_bytes(bytes(range(256)) * 4)
    (folder / "data" / "colour").mkdir(parents=True)
    return folder, folder / "zeroshot.pt"


def _discovered(folder: Path, broken: str) -> Path:
    """A flat pool found by layout (no manifest): a good task `colour` and the task `shape` whose fine-tune is
    `broken` ("empty": a 0-byte file, "folder": an empty folder, "pipe": a named pipe). Opening it used to leave
    `shape` out with a warning, and every merge of the pool merged one task fewer."""
    (folder / "finetuned").mkdir()
    (folder / "pretrained.safetensors").write_bytes(b"not read: refused before any checkpoint is opened")
    (folder / "finetuned" / "colour.safetensors").write_bytes(b"not read either")
    for task in ("colour", "shape"):
        (folder / "data" / task).mkdir(parents=True)
    shape = folder / "finetuned" / ("shape" if broken == "folder" else "shape.safetensors")
    {"empty": lambda: shape.write_bytes(b""), "folder": shape.mkdir, "pipe": lambda: os.mkfifo(shape)}[broken]()
    return folder


def discovered_empty_checkpoint(folder: Path, _: Path) -> Path:
    return _discovered(folder, "empty")


def discovered_empty_task_folder(folder: Path, _: Path) -> Path:
    return _discovered(folder, "folder")


def discovered_piped_checkpoint(folder: Path, _: Path) -> Path:
    return _discovered(folder, "pipe")


def pool_yaml_is_a_pipe(folder: Path, _: Path) -> tuple[Path, Path]:
    os.mkfifo(folder / "pool.yaml")
    return folder, folder / "pool.yaml"


def collection_json_is_a_pipe(folder: Path, _: Path) -> tuple[Path, Path]:
    os.mkfifo(folder / "collection.json")
    return folder, folder / "collection.json"


def _socket(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))  # the socket file stays after the socket closes
    return path


def pool_checkpoint_is_a_socket(folder: Path, _: Path) -> tuple[Path, Path]:
    """A manifest whose pretrained model is a socket: it used to read "no such file"."""
    _image(folder / "colour" / "test" / "red" / "a.png")
    manifest = {"pretrained": "zeroshot.pt", "tasks": {"colour": {"checkpoint": "zeroshot.pt", "data": "colour"}}}
    (folder / "pool.json").write_text(json.dumps(manifest))
    return folder / "pool.json", _socket(folder / "zeroshot.pt")


# --- checkpoint sidecars, in a collection ------------------------------------------------------------


def _edit_sidecar(folder: Path, name: str, **fields) -> Path:
    side = folder / name
    side.write_text(json.dumps({**json.loads(side.read_text()), **fields}))
    return side


def sidecar_unknown_field(folder: Path, _: Path) -> tuple[Path, Path]:
    return _tiny_pool(folder), _edit_sidecar(folder, "pretrained.json", archtecture="ViT-B-32")


def sidecar_wrong_types(folder: Path, _: Path) -> tuple[Path, Path]:
    _tiny_pool(folder)
    return folder, _edit_sidecar(folder, "finetuned/colour.standard.json", class_names=5, tensors_sha256=12)


def sidecar_sha_mismatch(folder: Path, _: Path) -> tuple[Path, Path]:
    """The last tensor's last value changed to 1.0 (finite: the hash, not the NaN check, must catch it)."""
    path = _tiny_pool(folder) / "finetuned" / "texture.standard.safetensors"
    data = bytearray(path.read_bytes())
    data[-4:] = struct.pack("<f", 1.0) if data[-4:] != struct.pack("<f", 1.0) else struct.pack("<f", 2.0)
    path.write_bytes(bytes(data))
    return folder, path


def sidecar_huge(folder: Path, _: Path) -> tuple[Path, Path]:
    return _tiny_pool(folder), _sparse(folder / "pretrained.json", b'{"source": "')


def sidecar_not_utf8(folder: Path, _: Path) -> tuple[Path, Path]:
    side = _tiny_pool(folder) / "pretrained.json"
    side.write_bytes(side.read_bytes().replace(b'"source": "tests"', b'"source": "caf\xe9"'))
    return folder, side


def head_wrong_embedding(folder: Path, _: Path) -> tuple[Path, Path]:
    """A [3, 7] head for a model whose embedding is 16: the pool must refuse it, not a matmul deep in evaluation."""
    _tiny_pool(folder)
    head = folder / "heads" / "colour.safetensors"
    head.parent.mkdir()
    save_file({"head": torch.randn(3, 7)}, str(head))
    manifest = json.loads((folder / "collection.json").read_text())
    manifest["tasks"]["colour"]["head"] = "heads/colour.safetensors"
    (folder / "collection.json").write_text(json.dumps(manifest))
    return folder, head


# --- recipes -----------------------------------------------------------------------------------------


def _recipe(folder: Path, text: str, name: str = "recipe.yaml") -> Path:
    (folder / name).write_text(text)
    return folder / name


def recipe_python_tag(folder: Path, canary: Path) -> Path:
    return _recipe(folder, f"collection: .\nmethod: !!python/object/apply:os.system ['touch {canary}']\n")


def recipe_python_name(folder: Path, canary: Path) -> Path:
    return _recipe(folder, f"collection: .\nparams:\n  lam: !!python/name:os.system\nx: touch {canary}\n")


def recipe_laughs_unknown_field(folder: Path, _: Path) -> Path:
    return _recipe(folder, f"collection: .\nlaughs: {_laughs()}\n")


def recipe_laughs_in_params(folder: Path, _: Path) -> Path:
    return _recipe(folder, f"collection: .\nparams: {{lam: {_laughs()}}}\n")


def recipe_nested_100k_deep(folder: Path, _: Path) -> Path:
    return _recipe(folder, "collection: " + _nested() + "\n")


def recipe_is_a_pipe(folder: Path, _: Path) -> Path:
    os.mkfifo(folder / "recipe.yaml")
    return folder / "recipe.yaml"


def recipe_huge(folder: Path, _: Path) -> Path:
    return _sparse(folder / "recipe.yaml", b"collection: .\ndescription: ")


def recipe_wrong_types(folder: Path, _: Path) -> Path:
    return _recipe(folder, json.dumps({"collection": ".", "tasks": 5, "params": {"lam": "lots"}}), "recipe.json")


def recipe_unknown_method(folder: Path, _: Path) -> Path:
    return _recipe(folder, "collection: .\nmethod: magic_merge\n")


def recipe_out_of_range(folder: Path, _: Path) -> Path:
    return _recipe(folder, "collection: .\nmethod: task_arithmetic\nparams: {lam: 1000}\n")


def recipe_unknown_param(folder: Path, _: Path) -> Path:
    return _recipe(folder, "collection: .\nmethod: ties\nparams: {lambda: 0.3}\n")


def recipe_nan_param(folder: Path, _: Path) -> Path:
    return _recipe(folder, "collection: .\nmethod: task_arithmetic\nparams: {lam: [0.3, .nan]}\n")


# --- tasks: CSV files, image folders, packed files ---------------------------------------------------


def _image(path: Path, size: int = 16, colour: tuple = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(path: Path, width: int, height: int, *, rows: int) -> Path:
    """An RGB PNG declaring width × height whose IDAT holds `rows` rows of zeros (deflated ~1000×)."""
    packer = zlib.compressobj(1)
    row = bytes(1 + 3 * width)  # filter byte + pixels
    idat = b"".join(packer.compress(row) for _ in range(rows)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


def _csv(folder: Path, text: str | bytes, name: str = "task.csv") -> Path:
    path = folder / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def csv_100mb_cell(folder: Path, _: Path) -> Path:
    return _csv(folder, b"path,label\n" + b"a" * 100 * 2**20 + b".png,0\n")


def csv_million_columns(folder: Path, _: Path) -> tuple[Path, Path]:
    _image(folder / "a.png")
    return _csv(folder, "path,label\na.png,0\n" + "x," * 1_000_000 + "0\n"), folder / "task.csv"


def csv_binary_garbage(folder: Path, _: Path) -> Path:
    return _csv(folder, bytes(torch.randint(0, 256, (65536,), generator=torch.Generator().manual_seed(0)).tolist()))


def csv_not_utf8(folder: Path, _: Path) -> Path:
    _image(folder / "café.png")
    return _csv(folder, "path,label\ncafé.png,0\ncafé.png,1\n".encode("latin-1"))


def csv_label_out_of_range(folder: Path, _: Path) -> Path:
    _image(folder / "a.png")
    _image(folder / "b.png", colour=(0, 0, 255))
    (folder / "classes.json").write_text('["red", "blue"]')
    return _csv(folder, "path,label\na.png,0\nb.png,7\n")


def csv_negative_label(folder: Path, _: Path) -> Path:
    _image(folder / "a.png")
    return _csv(folder, "path,label\na.png,0\na.png,1\na.png,-1\n")


def csv_header_only(folder: Path, _: Path) -> Path:
    return _csv(folder, "path,label,split\n")


def folder_empty_split(folder: Path, _: Path) -> tuple[Path, Path]:
    _image(folder / "test" / "red" / "a.png")
    _image(folder / "test" / "blue" / "b.png")
    (folder / "train" / "red").mkdir(parents=True)
    (folder / "train" / "blue").mkdir()
    return folder, folder / "train"


def image_is_a_pipe(folder: Path, _: Path) -> tuple[Path, Path]:
    """A named pipe among a split's images used to be dropped without a word (and opening it would block)."""
    _image(folder / "test" / "red" / "a.png")
    _image(folder / "test" / "blue" / "a.png")
    os.mkfifo(folder / "test" / "blue" / "b.png")
    return folder, folder / "test" / "blue" / "b.png"


def image_is_a_socket(folder: Path, _: Path) -> tuple[Path, Path]:
    _image(folder / "test" / "red" / "a.png")
    _image(folder / "test" / "blue" / "a.png")
    return folder, _socket(folder / "test" / "blue" / "notes")  # no image suffix: still named, not passed over


def class_folder_is_a_pipe(folder: Path, _: Path) -> tuple[Path, Path]:
    _image(folder / "test" / "red" / "a.png")
    os.mkfifo(folder / "test" / "blue")
    return folder, folder / "test" / "blue"


def csv_row_names_a_pipe(folder: Path, _: Path) -> Path:
    _image(folder / "a.png")
    os.mkfifo(folder / "b.png")
    return _csv(folder, "path,label\na.png,0\nb.png,1\n")


def task_csv_is_a_pipe(folder: Path, _: Path) -> Path:
    os.mkfifo(folder / "task.csv")
    return folder / "task.csv"


def class_folder_empty(folder: Path, _: Path) -> tuple[Path, Path]:
    """An empty class folder used to become a class with no images: another label set, another zero-shot head."""
    _image(folder / "test" / "red" / "a.png")
    _image(folder / "test" / "blue" / "a.png")
    (folder / "test" / "green").mkdir()
    return folder, folder / "test" / "green"


def class_folder_linked_outside(folder: Path, _: Path) -> tuple[Path, Path]:
    """A class folder symlinked out of the allowed roots: refused as it is, before it is listed."""
    _image(folder / "test" / "red" / "a.png")
    (folder / "test" / "blue").symlink_to("/etc")
    return folder, folder / "test" / "blue"


def split_linked_outside(folder: Path, _: Path) -> tuple[Path, Path]:
    (folder / "test").symlink_to("/usr/share")
    return folder, folder / "test"


def image_not_an_image(folder: Path, _: Path) -> tuple[Path, Path]:
    _image(folder / "test" / "red" / "a.png")
    (folder / "test" / "blue").mkdir()
    (folder / "test" / "blue" / "b.png").write_text("not an image, a note")
    return folder, folder / "test" / "blue" / "b.png"


def png_declaring_100000_squared(folder: Path, _: Path) -> tuple[Path, Path]:
    _image(folder / "test" / "red" / "a.png")
    (folder / "test" / "blue").mkdir()
    return folder, _png(folder / "test" / "blue" / "bomb.png", 100_000, 100_000, rows=4)


def png_just_under_pil_bomb_limit(folder: Path, _: Path) -> tuple[Path, Path]:
    """13000² = 169 M pixels: PIL only warns below 2 × MAX_IMAGE_PIXELS (179 M) and decodes 507 MB of RGB."""
    _image(folder / "test" / "red" / "a.png")
    (folder / "test" / "blue").mkdir()
    return folder, _png(folder / "test" / "blue" / "big.png", 13_000, 13_000, rows=13_000)


def truncated_png(folder: Path, _: Path) -> tuple[Path, Path]:
    _image(folder / "test" / "red" / "a.png")
    cut = folder / "test" / "blue" / "cut.png"
    noise = torch.randint(0, 256, (64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    cut.parent.mkdir()
    Image.fromarray(noise.numpy()).save(cut)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    return folder, cut


def _packed(folder: Path, tensors: dict[str, torch.Tensor], info: object = None) -> Path:
    path = folder / "task.safetensors"
    save_file(tensors, str(path))
    info = {"name": "t", "class_names": ["a", "b", "c"]} if info is None else info
    path.with_suffix(".json").write_text(json.dumps(info))
    return path


def _images(n: int = 4) -> torch.Tensor:
    return torch.zeros(n, 3, 8, 8, dtype=torch.uint8)


def packed_missing_labels(folder: Path, _: Path) -> Path:
    return _packed(folder, {"train.images": _images(), "test.images": _images(), "test.labels": torch.zeros(4).long()})


def packed_no_split(folder: Path, _: Path) -> Path:
    return _packed(folder, {"images": _images(), "labels": torch.zeros(4).long()})


def packed_negative_labels(folder: Path, _: Path) -> Path:
    return _packed(folder, {"test.images": _images(), "test.labels": torch.tensor([0, 1, -1, 2])})


def packed_float_labels(folder: Path, _: Path) -> Path:
    return _packed(folder, {"test.images": _images(), "test.labels": torch.tensor([0.0, 0.5, 1.0, 2.0])})


def packed_float_images(folder: Path, _: Path) -> Path:
    return _packed(folder, {"test.images": _images().float(), "test.labels": torch.zeros(4).long()})


def packed_images_wrong_shape(folder: Path, _: Path) -> Path:
    return _packed(
        folder, {"test.images": torch.zeros(4, 8, 8, dtype=torch.uint8), "test.labels": torch.zeros(4).long()}
    )


def packed_empty_split(folder: Path, _: Path) -> Path:
    tensors = {"test.images": _images(), "test.labels": torch.zeros(4).long()}
    return _packed(folder, {**tensors, "val.images": _images(0), "val.labels": torch.zeros(0).long()})


def packed_json_not_an_object(folder: Path, _: Path) -> tuple[Path, Path]:
    path = _packed(folder, {"test.images": _images(), "test.labels": torch.zeros(4).long()}, ["a", "b"])
    return path, path.with_suffix(".json")


def packed_json_not_utf8(folder: Path, _: Path) -> tuple[Path, Path]:
    path = _packed(folder, {"test.images": _images(), "test.labels": torch.zeros(4).long()})
    path.with_suffix(".json").write_bytes(b'{"name": "caf\xe9", "class_names": ["a", "b"]}')
    return path, path.with_suffix(".json")


def packed_garbage(folder: Path, _: Path) -> Path:
    path = _packed(folder, {"test.images": _images(), "test.labels": torch.zeros(4).long()})
    path.write_bytes(bytes(range(256)) * 8)
    return path


# --- head files --------------------------------------------------------------------------------------


def _head(folder: Path, tensor: torch.Tensor) -> Path:
    save_file({"head": tensor}, str(folder / "head.safetensors"))
    return folder / "head.safetensors"


def head_one_dimensional(folder: Path, _: Path) -> Path:
    return _head(folder, torch.randn(16))


def head_wrong_class_count(folder: Path, _: Path) -> Path:
    return _head(folder, torch.randn(5, 16))


def head_nan(folder: Path, _: Path) -> Path:
    head = torch.randn(3, 16)
    head[1, 4] = float("nan")
    return _head(folder, head)


def head_integer(folder: Path, _: Path) -> Path:
    return _head(folder, torch.randint(-100, 100, (3, 16)))


def head_is_a_pipe(folder: Path, _: Path) -> Path:
    os.mkfifo(folder / "head.safetensors")
    return folder / "head.safetensors"


def head_pickle_payload(folder: Path, canary: Path) -> Path:
    return _torch_zip(folder / "head_colour.pt", _payload("os", "system", f"touch {canary}"))


# --- the data home's config.json ---------------------------------------------------------------------


def config_roots_not_a_list(folder: Path, _: Path) -> Path:
    (folder / "config.json").write_text('{"allowed_roots": "/data"}')
    return folder / "config.json"


def config_unknown_field(folder: Path, _: Path) -> Path:
    (folder / "config.json").write_text('{"allowed_root": ["/data"]}')
    return folder / "config.json"


def config_is_a_pipe(folder: Path, _: Path) -> Path:
    os.mkfifo(folder / "config.json")
    return folder / "config.json"


def config_nested_100k_deep(folder: Path, _: Path) -> Path:
    (folder / "config.json").write_text('{"allowed_roots": ' + _nested() + "}")
    return folder / "config.json"


def config_huge(folder: Path, _: Path) -> Path:
    return _sparse(folder / "config.json", b'{"allowed_roots": ["')


def config_not_an_object(folder: Path, _: Path) -> Path:
    (folder / "config.json").write_text('["/data"]')
    return folder / "config.json"


def config_budget_wrong_type(folder: Path, _: Path) -> Path:
    (folder / "config.json").write_text('{"cache_budget_mb": "lots"}')
    return folder / "config.json"


CASES = [
    Case("collection_nested_100k_deep", collection_nested_100k_deep, r"unreadable manifest", "pool"),
    Case("collection_huge", collection_huge, r"is larger than 16 MiB", "pool"),
    Case("collection_not_an_object", collection_not_an_object, r"invalid manifest", "pool"),
    Case("pool_yaml_python_tag", pool_yaml_python_tag, r"cannot be parsed .*python/object/apply", "pool"),
    Case(
        "pool_yaml_billion_laughs", pool_yaml_billion_laughs, r"invalid pool manifest: tasks.colour.templates", "pool"
    ),
    Case("pool_yaml_nested_100k_deep", pool_yaml_nested_100k_deep, r"cannot be parsed .*nest", "pool"),
    Case("pool_json_wrong_types", pool_json_wrong_types, r"invalid pool manifest: pretrained", "pool"),
    Case("pool_reaching_outside", pool_reaching_outside, r"lies outside the allowed roots", "pool"),
    Case("discovered_only_empty_checkpoints", discovered_only_empty_checkpoints, r"is not a pool.*empty file", "pool"),
    Case(
        "discovered_empty_checkpoint",
        discovered_empty_checkpoint,
        r"tasks shape would be left out: finetuned/shape.safetensors is an empty file.*--skip-unreadable",
        "pool",
    ),
    Case(
        "discovered_empty_task_folder",
        discovered_empty_task_folder,
        r"tasks shape would be left out: finetuned/shape/ is empty.*--skip-unreadable",
        "pool",
    ),
    Case(
        "discovered_piped_checkpoint",
        discovered_piped_checkpoint,
        r"tasks shape would be left out: finetuned/shape.safetensors is a named pipe \(FIFO\), not a checkpoint",
        "pool",
    ),
    Case("pool_yaml_is_a_pipe", pool_yaml_is_a_pipe, r"is a named pipe \(FIFO\), not a regular file", "pool"),
    Case("collection_json_is_a_pipe", collection_json_is_a_pipe, r"is a named pipe \(FIFO\)", "pool"),
    Case("pool_checkpoint_is_a_socket", pool_checkpoint_is_a_socket, r"is a socket, not a regular file", "pool"),
    Case("discovered_garbage_pretrained", discovered_garbage_pretrained, r"is not a torch zip checkpoint", "pool"),
    Case("sidecar_unknown_field", sidecar_unknown_field, r"archtecture: Extra inputs", "pool"),
    Case("sidecar_wrong_types", sidecar_wrong_types, r"class_names: .*tensors_sha256", "pool"),
    Case("sidecar_sha_mismatch", sidecar_sha_mismatch, r"do not match the sidecar's tensors_sha256", "pool"),
    Case("sidecar_huge", sidecar_huge, r"is larger than 16 MiB", "pool"),
    Case("sidecar_not_utf8", sidecar_not_utf8, r"is not UTF-8 text", "pool"),
    Case(
        "head_wrong_embedding", head_wrong_embedding, r"head has shape \(3, 7\), the model's embedding has 16", "pool"
    ),
    Case("recipe_python_tag", recipe_python_tag, r"not valid JSON or YAML .*python/object/apply", "recipe"),
    Case("recipe_python_name", recipe_python_name, r"not valid JSON or YAML .*python/name", "recipe"),
    Case("recipe_laughs_unknown_field", recipe_laughs_unknown_field, r"laughs: Extra inputs", "recipe"),
    Case("recipe_laughs_in_params", recipe_laughs_in_params, r"params.lam", "recipe"),
    Case("recipe_nested_100k_deep", recipe_nested_100k_deep, r"not valid JSON or YAML .*nest", "recipe"),
    Case("recipe_huge", recipe_huge, r"is larger than 16 MiB", "recipe"),
    Case("recipe_is_a_pipe", recipe_is_a_pipe, r"is a named pipe \(FIFO\), not a regular file", "recipe"),
    Case("recipe_wrong_types", recipe_wrong_types, r"tasks: ", "recipe"),
    Case("recipe_unknown_method", recipe_unknown_method, r"method: .*magic_merge", "recipe"),
    Case("recipe_out_of_range", recipe_out_of_range, r"params.lam: task_arithmetic.lam: value 1000.0 out", "recipe"),
    Case("recipe_unknown_param", recipe_unknown_param, r"params.lambda: is not a parameter of ties", "recipe"),
    Case("recipe_nan_param", recipe_nan_param, r"params.lam: task_arithmetic.lam: value nan outside", "recipe"),
    Case("csv_100mb_cell", csv_100mb_cell, r"cannot be read as CSV .*field larger than field limit", "task"),
    Case("csv_million_columns", csv_million_columns, r"row 3: has 1000001 cells for the 2 columns", "task"),
    Case("csv_binary_garbage", csv_binary_garbage, r"cannot be read as CSV", "task"),
    Case("csv_not_utf8", csv_not_utf8, r"cannot be read as CSV .*utf-8", "task"),
    Case("csv_label_out_of_range", csv_label_out_of_range, r"row 3: has the label 7, outside 0..1", "task"),
    Case("csv_negative_label", csv_negative_label, r"row 4: has the label -1, outside 0..1", "task"),
    Case("csv_header_only", csv_header_only, r"has a header but no rows", "task"),
    Case("folder_empty_split", folder_empty_split, r"contains no images", "task"),
    Case("image_not_an_image", image_not_an_image, r"is not a readable image", "task"),
    Case("image_is_a_pipe", image_is_a_pipe, r"is a named pipe \(FIFO\), not a regular file", "task"),
    Case("image_is_a_socket", image_is_a_socket, r"is a socket, not a regular file", "task"),
    Case("class_folder_is_a_pipe", class_folder_is_a_pipe, r"is a named pipe \(FIFO\)", "task"),
    Case("csv_row_names_a_pipe", csv_row_names_a_pipe, r"row 3: is a named pipe \(FIFO\)", "task"),
    Case("task_csv_is_a_pipe", task_csv_is_a_pipe, r"is a named pipe \(FIFO\)", "task"),
    Case("class_folder_empty", class_folder_empty, r"is a class folder without images", "task"),
    Case("class_folder_linked_outside", class_folder_linked_outside, r"lies outside the allowed roots", "task"),
    Case("split_linked_outside", split_linked_outside, r"lies outside the allowed roots", "task"),
    Case("png_declaring_100000_squared", png_declaring_100000_squared, r"decompression bomb", "task"),
    Case("png_just_under_pil_bomb_limit", png_just_under_pil_bomb_limit, r"13000×13000 pixels", "task"),
    Case("truncated_png", truncated_png, r"is not a readable image", "task"),
    Case("packed_missing_labels", packed_missing_labels, r"has train.images but no train.labels", "task"),
    Case("packed_no_split", packed_no_split, r"holds no split", "task"),
    Case("packed_negative_labels", packed_negative_labels, r"test labels do not fit 3 classes", "task"),
    Case("packed_float_labels", packed_float_labels, r"test.labels must be int64 \[N\], got torch.float32", "task"),
    Case("packed_float_images", packed_float_images, r"test.images must be uint8 \[N, 3, H, W\]", "task"),
    Case("packed_images_wrong_shape", packed_images_wrong_shape, r"test.images must be uint8 \[N, 3, H, W\]", "task"),
    Case("packed_empty_split", packed_empty_split, r"the val split holds no images", "task"),
    Case("packed_json_not_an_object", packed_json_not_an_object, r"invalid task JSON", "task"),
    Case("packed_json_not_utf8", packed_json_not_utf8, r"is not UTF-8 text", "task"),
    Case("packed_garbage", packed_garbage, r"cannot be read", "task"),
    Case("head_one_dimensional", head_one_dimensional, r"head has shape \(16,\), not \[classes, embedding\]", "head"),
    Case("head_wrong_class_count", head_wrong_class_count, r"the task has 3 classes", "head"),
    Case("head_nan", head_nan, r"contains NaN or Inf values", "head"),
    Case("head_integer", head_integer, r"head tensor 'head' is int64: weights must be float32", "head"),
    Case("head_is_a_pipe", head_is_a_pipe, r"is a named pipe \(FIFO\), not a regular file", "head"),
    Case("head_pickle_payload", head_pickle_payload, r"names the global 'os.system'", "head"),
    Case("config_roots_not_a_list", config_roots_not_a_list, r"allowed_roots is not a list of strings", "config"),
    Case("config_roots_a_string_cli", config_roots_not_a_list, r"allowed_roots is not a list of strings", "shell"),
    Case("config_unknown_field", config_unknown_field, r"has the unknown field 'allowed_root'", "config"),
    Case("config_unknown_field_cli", config_unknown_field, r"has the unknown field 'allowed_root'", "shell"),
    Case("config_is_a_pipe", config_is_a_pipe, r"is a named pipe \(FIFO\)", "shell"),
    Case("config_nested_100k_deep", config_nested_100k_deep, r"unreadable config", "config"),
    Case("config_huge", config_huge, r"is larger than 16 MiB", "config"),
    Case("config_not_an_object", config_not_an_object, r"is not a JSON object", "config"),
    Case("config_budget_wrong_type", config_budget_wrong_type, r"cache_budget_mb is 'lots'", "config"),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    """Every case's outcome, from one fork server (a fresh forked child per case)."""
    return run_cases(CASES, tmp_path_factory.mktemp("fuzz-inputs"))


def test_there_are_enough_cases():
    check_cases(CASES, 20)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_refused_clearly(outcomes, case):
    check_refused(outcomes[case.name], case)


# --- through the dashboard ---------------------------------------------------------------------------


@pytest.fixture()
def dashboard_pool(data_home):
    """A good tiny collection under the data home (an allowed root), to switch back to."""
    return build_tiny_collection(data_home / "pools" / "good")


def _hostile_collection(data_home: Path, kind: str, canary: Path) -> tuple[str, Path]:
    """(what the user types, the file the error must name)."""
    folder = data_home / "pools" / kind
    folder.mkdir(parents=True)
    if kind == "nested_collection":
        return str(folder), collection_nested_100k_deep(folder, canary)[1]
    if kind == "python_tag":
        return str(folder), pool_yaml_python_tag(folder, canary)[1]
    if kind == "sidecar_not_utf8":
        return str(folder), sidecar_not_utf8(folder, canary)[1]
    if kind == "truncated_png":
        build_tiny_collection(folder)
        task, cut = truncated_png(folder / "colour", canary)
        manifest = json.loads((folder / "collection.json").read_text())
        manifest["tasks"]["colour"]["data"] = "colour"
        (folder / "collection.json").write_text(json.dumps(manifest))
        return str(folder), cut
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["nested_collection", "python_tag", "sidecar_not_utf8", "truncated_png"])
def test_the_dashboard_shows_the_error_and_keeps_working(data_home, dashboard_pool, tmp_path, kind):
    typed, named = _hostile_collection(data_home, kind, tmp_path / "canary")
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["collection"] = typed
    _open(at, "views/merge.py")
    assert not at.exception, at.exception
    messages = [e.value for e in at.error]
    assert any(m.startswith(f"{named}: ") and "Fix: " in m for m in messages), messages
    assert not (tmp_path / "canary").exists()
    at.session_state["collection"] = str(dashboard_pool)  # the app stays usable, on another page too
    at.switch_page("views/zoo.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]


def test_a_pasted_recipe_bomb_is_refused_on_the_merge_page(data_home, dashboard_pool):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["collection"] = str(dashboard_pool)
    _open(at, "views/merge.py")
    at.text_area(key="_recipe_text").set_value(f"method: task_arithmetic\nlaughs: {_laughs()}\n").run()
    next(b for b in at.button if b.label == "Apply recipe").click().run()
    assert not at.exception, at.exception
    assert any(e.value.startswith("pasted recipe: laughs: Extra inputs") for e in at.error), [e.value for e in at.error]
    at.switch_page("views/home.py").run()
    assert not at.exception and not at.error
