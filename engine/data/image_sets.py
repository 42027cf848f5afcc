"""Task datasets kept as image files: which file is which split and label, and decoding them.

Three layouts, all read through `load_task` (engine/data/loading.py):
- image folder `<root>/<split>/<class>/<image>`: the classes are the class folders, sorted (a split folder
  `valid/` or `validation/` is val);
- a CSV file with columns `path,label` and an optional `split` (without one every row is test);
- a folder holding `train.csv`, `val.csv`, `test.csv` (columns `path,label`); these win over class folders.
CSV paths are relative to the CSV's folder; a header row is optional; labels are class indices or
class names. Display class names come from `task.json` (`class_names`) or `classes.json` beside the
data, else from the suite task of that name (engine/data/suites.py), else from the folders or
labels themselves. Scanning reads no image, so a cache can be checked before anything is decoded.
Every file read goes through a `PathPolicy` (engine/home.py): under the dashboard's, a CSV row or a
symlinked image that resolves outside the allowed roots is refused at the scan (before any "does not
exist" could tell whether it is there), and each image is opened with its descriptor checked again.
"""

from __future__ import annotations

import csv
import io
import json
import re
import struct
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

import torch
from PIL import Image

from engine.data.suites import SuiteTask, suite_task
from engine.data.tasks import SPLITS, LabelledImages, TaskData, TaskInfo, read_task_info, task_templates
from engine.errors import DatasetError
from engine.home import PathPolicy, nesting, read_document, refuse_special

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
CSV_COLUMNS = ("path", "label", "split")
# split folder → split: RenderedSST2 (torchvision's layout) and Hugging Face exports call val "valid" / "validation"
SPLIT_FOLDERS = MappingProxyType({"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"})
# Pixels an image may declare: 33.5 M (8192 × 4096), ~100 MB as RGB, already ~600× a 224² model input. PIL only
# refuses above 2 × Image.MAX_IMAGE_PIXELS (179 M) and warns below, so a 13000² PNG of a few kB would decode
# into 507 MB and be copied twice more before it is resized.
MAX_PIXELS = 2**25
# What PIL raises on a malformed file: OSError (UnidentifiedImageError, "image file is truncated"), ValueError,
# SyntaxError (its plugins' "broken PNG file" and the like), EOFError and struct.error from parsing headers and
# chunks; an image too large to decode safely is a DecompressionBombError (an Exception, not an OSError).
PIL_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)


@dataclass(frozen=True)
class ImageFile:
    file: Path  # where to read it
    source: str  # how the dataset names it: `<split>/<class>/<file>`, or the CSV's path cell
    split: str
    label: int


@dataclass(frozen=True)
class ImageSet:
    """A task on disk before decoding: its names and prompts, and every image with split and label."""

    name: str
    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    files: tuple[ImageFile, ...]


@dataclass(frozen=True)
class _GivenNames:
    """Display class names written beside the data: a list in label order, or name → display name."""

    path: Path
    names: tuple[str, ...] | Mapping[str, str]


@dataclass(frozen=True)
class _Row:
    csv: Path
    line: int
    file: Path
    source: str
    label: str
    split: str

    def error(self, problem: str, *, fix: str) -> DatasetError:
        return DatasetError(f"{self.csv}, row {self.line}", problem, fix=fix)


def scan_image_set(path: Path, *, name: str | None = None, policy: PathPolicy | None = None) -> ImageSet:
    """List an image folder, a CSV file or a folder of split CSVs (no image is decoded).

    `name` (the task's name in a pool) wins over task.json's and the folder's; it also picks the
    suite task whose templates and class names apply when task.json gives none.
    """
    path, policy = Path(path), policy or PathPolicy.trust_all()
    root = path if path.is_dir() else path.parent
    info = read_task_info(policy.check(root / "task.json")) if (root / "task.json").exists() else TaskInfo()
    task_name = name or info.name or (path.name if path.is_dir() else path.stem)
    suite = suite_task(task_name)
    given = _given_names(root, info, policy)
    split_csvs = [root / f"{s}.csv" for s in SPLITS if (root / f"{s}.csv").exists()] if path.is_dir() else []
    if not path.is_dir():
        class_names, files = _label_rows(_read_csv(path, split=None, policy=policy), given, suite)
    elif split_csvs:
        rows = [row for file in split_csvs for row in _read_csv(file, split=file.stem, policy=policy)]
        class_names, files = _label_rows(rows, given, suite)
    else:
        class_names, files = _scan_folders(path, given, suite, policy)
    return ImageSet(task_name, class_names, task_templates(info, task_name), tuple(files))


def decode_image_set(image_set: ImageSet, *, image_size: int | None, policy: PathPolicy | None = None) -> TaskData:
    """Decode every split present (resized and centre-cropped to `image_size` when given)."""
    splits, policy = {}, policy or PathPolicy.trust_all()
    for split in SPLITS:
        files = [f for f in image_set.files if f.split == split]
        if files:
            splits[split] = _decode(files, image_size=image_size, policy=policy)
    return TaskData(image_set.name, image_set.class_names, image_set.templates, splits)


def _given_names(root: Path, info: TaskInfo, policy: PathPolicy) -> _GivenNames | None:
    """task.json's class_names, else classes.json (list or mapping), else None."""
    if info.class_names:
        return _GivenNames(root / "task.json", info.class_names)
    path = root / "classes.json"
    if not path.exists():
        return None
    fix = "write a list of names or an object"
    try:
        names = json.loads(read_document(path, error=DatasetError, fix=fix, opener=policy.open_file))
    except (ValueError, RecursionError) as exc:
        raise DatasetError(path, f"cannot be read as JSON ({nesting(exc)})", fix=fix) from exc
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return _GivenNames(path, tuple(names))
    if isinstance(names, dict) and all(isinstance(n, str) for n in names.values()):
        return _GivenNames(path, names)
    raise DatasetError(
        path,
        "is neither a list of class names nor an object of name → display name",
        fix='write ["name 0", "name 1", ...] in label order, or {"folder": "display name", ...}',
    )


def _scan_folders(
    root: Path, given: _GivenNames | None, suite: SuiteTask | None, policy: PathPolicy
) -> tuple[tuple[str, ...], list[ImageFile]]:
    """Every image of `<root>/<split>/<class>/`; the classes are the class folders of all splits, sorted.

    A class folder is a label: one that holds no image would add a class with no examples (a different label
    set and zero-shot head), so it is refused, naming it, like a split without images. A symlinked split or
    class folder must resolve inside the policy's roots, checked before it is listed. A named pipe, socket or
    device among the entries is refused, named as what it is (a pipe would block the reader)."""
    split_dirs = [root / f for f in SPLIT_FOLDERS if (root / f).is_dir()]
    if not split_dirs:
        raise DatasetError(
            root,
            "has none of the folders train/, val/, test/ (nor train.csv, val.csv, test.csv)",
            fix="arrange images as <root>/<split>/<class>/<image>.png, or list them in <root>/<split>.csv",
        )
    for split_dir in split_dirs:  # each folder checked before it is listed: a symlink may lead outside the roots
        policy.check(split_dir)
    class_dirs = {d: [p for p in _entries(d) if p.is_dir()] for d in split_dirs}
    for folder in (p for found in class_dirs.values() for p in found):
        policy.check(folder)
    folders = sorted({p.name for found in class_dirs.values() for p in found})
    files: list[ImageFile] = []
    for split_dir in split_dirs:
        images = {
            p.name: [f for f in _entries(p) if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
            for p in class_dirs[split_dir]
        }
        found = [
            ImageFile(file, f"{split_dir.name}/{folder}/{file.name}", SPLIT_FOLDERS[split_dir.name], label)
            for label, folder in enumerate(folders)
            for file in images.get(folder, ())
        ]
        for entry in found:  # a symlinked image must resolve inside the roots too
            policy.check(entry.file)
        if not found:
            raise DatasetError(split_dir, "contains no images", fix=f"add {'/'.join(IMAGE_SUFFIXES)} files per class")
        empty = next((split_dir / name for name, listed in images.items() if not listed), None)
        if empty is not None:
            raise DatasetError(
                empty,
                "is a class folder without images: it would add a class with no examples to the label set",
                fix=f"add its {'/'.join(IMAGE_SUFFIXES)} files, or remove the folder",
            )
        files += found
    return _display_names(folders, given, suite, what="class folders"), files


def _entries(folder: Path) -> list[Path]:
    """A folder's visible entries, sorted: files and folders (symlinks followed). A named pipe, socket or device
    is refused naming it, never passed over."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for entry in entries:
        refuse_special(entry, fix="replace it with the image file it stands for, or remove it")
    return [p for p in entries if p.is_file() or p.is_dir()]


def _display_names(
    keys: list[str], given: _GivenNames | None, suite: SuiteTask | None, *, what: str
) -> tuple[str, ...]:
    """Display names of `keys` (sorted folder names or labels): as given, or by the suite task's rule."""
    if given is None:
        return tuple(suite.display_name(k) for k in keys) if suite else tuple(keys)
    if isinstance(given.names, tuple):
        if len(given.names) != len(keys):
            raise DatasetError(
                given.path,
                f"lists {len(given.names)} class names for {len(keys)} {what}",
                fix=f"give one name per entry of the sorted {what}, in that order",
            )
        return given.names
    missing = [k for k in keys if k not in given.names]
    if missing:
        raise DatasetError(given.path, f"has no display name for {missing[:5]}", fix=f"map every one of the {what}")
    return tuple(given.names[k] for k in keys)


def _read_csv(path: Path, *, split: str | None, policy: PathPolicy) -> list[_Row]:
    """Rows of one CSV; `split` is the split of every row (a file of a split-CSV folder), else a column."""
    allowed = CSV_COLUMNS[:2] if split else CSV_COLUMNS
    try:
        with policy.open_file(path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as handle:
            lines = [(n, cells) for n, cells in _numbered(csv.reader(handle)) if any(c.strip() for c in cells)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(path, f"cannot be read as CSV ({exc})", fix="write UTF-8 rows path,label[,split]") from exc
    if not lines:
        raise DatasetError(path, "has no rows", fix=f"write one row {','.join(allowed)} per image")
    columns, has_header = _columns([c.strip() for c in lines[0][1]], allowed, path)
    rows = []
    for line, cells in lines[1:] if has_header else lines:
        rows.append(_parse_row(path, line, [c.strip() for c in cells], columns, split=split, policy=policy))
    if not rows:
        raise DatasetError(path, "has a header but no rows", fix=f"write one row {','.join(allowed)} per image")
    return rows


def _numbered(reader) -> Iterator[tuple[int, list[str]]]:
    """(line number where the row starts, cells): quoted cells may span lines."""
    start = 1
    for cells in reader:
        yield start, cells
        start = reader.line_num + 1


def _columns(first: list[str], allowed: tuple[str, ...], path: Path) -> tuple[dict[str, int], bool]:
    """Column positions, and whether the first row is a header (it names path and label)."""
    lowered = [c.lower() for c in first]
    if "path" in lowered and "label" in lowered:
        if any(c not in allowed for c in lowered) or len(set(lowered)) != len(lowered):
            raise DatasetError(path, f"has the header {','.join(first)}", fix=f"name the columns {','.join(allowed)}")
        return {c: i for i, c in enumerate(lowered)}, True
    if len(first) not in (2, len(allowed)):
        raise DatasetError(
            path,
            f"has {len(first)} columns in its first row",
            fix=f"write {','.join(allowed)} per row (a header row is optional)",
        )
    return {c: i for i, c in enumerate(allowed[: len(first)])}, False


def _parse_row(
    path: Path, line: int, cells: list[str], columns: dict[str, int], *, split: str | None, policy: PathPolicy
) -> _Row:
    where = f"{path}, row {line}"
    if len(cells) != len(columns):
        raise DatasetError(
            where,
            f"has {len(cells)} cells for the {len(columns)} columns {','.join(columns)}",
            fix="give every row the same columns",
        )
    source, label = cells[columns["path"]], cells[columns["label"]]
    row_split = cells[columns["split"]].lower() if "split" in columns else (split or "test")
    if row_split not in SPLITS:
        raise DatasetError(where, f"has the split {row_split!r}", fix="use train, val or test")
    if not source or not label:
        raise DatasetError(where, "has an empty path or label", fix="fill in both, or delete the row")
    file = Path(source) if Path(source).is_absolute() else path.parent / source
    policy.check(file, shown=where)  # before "does not exist", which would tell what lies outside the roots
    refuse_special(file, shown=where, fix=f"name the image file itself, not {file}")
    if not file.is_file():
        raise DatasetError(
            where,
            f"names {file}, which does not exist",
            fix="correct the path (relative to the CSV's folder) or delete the row",
        )
    if file.suffix.lower() not in IMAGE_SUFFIXES:
        raise DatasetError(
            where, f"names {file.name}, which is not an image file", fix=f"list only {'/'.join(IMAGE_SUFFIXES)} files"
        )
    return _Row(path, line, file, source, label, row_split)


def _label_rows(
    rows: list[_Row], given: _GivenNames | None, suite: SuiteTask | None
) -> tuple[tuple[str, ...], list[ImageFile]]:
    """Class names and labelled files: labels are all class indices, or else all class names."""
    if all(_is_index(r.label) for r in rows):
        class_names, labels = _index_labels(rows, given)
    else:
        class_names, labels = _named_labels(rows, given, suite)
    return class_names, [ImageFile(r.file, r.source, r.split, label) for r, label in zip(rows, labels)]


def _is_index(label: str) -> bool:
    return re.fullmatch(r"-?[0-9]+", label) is not None


def _index_labels(rows: list[_Row], given: _GivenNames | None) -> tuple[tuple[str, ...], list[int]]:
    if given is not None and not isinstance(given.names, tuple):
        raise DatasetError(
            given.path,
            f"maps names, but the labels in {rows[0].csv.name} are class indices",
            fix="write a list of display names in label order",
        )
    labels = [int(r.label) for r in rows]
    count = len(given.names) if given else max(labels) + 1
    for row, label in zip(rows, labels):
        if not 0 <= label < count:
            source = f"the {count} names in {given.path.name}" if given else "class indices"
            raise row.error(
                f"has the label {label}, outside 0..{count - 1} ({source})",
                fix="correct the label, or add the missing class names",
            )
    return (given.names if given else tuple(str(i) for i in range(count))), labels


def _named_labels(
    rows: list[_Row], given: _GivenNames | None, suite: SuiteTask | None
) -> tuple[tuple[str, ...], list[int]]:
    """Class names as labels: the given list's entries, the given mapping's keys, or the labels seen."""
    if given is not None and isinstance(given.names, tuple):
        keys, class_names = list(given.names), given.names
    else:
        keys = sorted(given.names) if given else sorted({r.label for r in rows})
        class_names = _display_names(keys, given, suite, what="labels")
    index = {key: i for i, key in enumerate(keys)}
    for row in rows:
        if row.label not in index:
            raise row.error(f"has the unknown label {row.label!r}", fix=f"use one of the classes in {given.path.name}")
    return class_names, [index[r.label] for r in rows]


def _decode(files: list[ImageFile], *, image_size: int | None, policy: PathPolicy) -> LabelledImages:
    first = _read_image(files[0].file, image_size=image_size, policy=policy)  # [3, H, W]
    images = torch.empty((len(files), *first.shape), dtype=torch.uint8)  # [N, 3, H, W]
    images[0] = first
    for i, entry in enumerate(files[1:], start=1):
        image = _read_image(entry.file, image_size=image_size, policy=policy)  # [3, H', W']
        if image.shape != first.shape:
            raise DatasetError(
                entry.file,
                f"is {image.shape[2]}×{image.shape[1]} while {files[0].file.name} is "
                f"{first.shape[2]}×{first.shape[1]}: the {entry.split} split holds images of different sizes",
                fix="load with image_size=<model input size> so they are resized",
            )
        images[i] = image
    labels = torch.tensor([f.label for f in files], dtype=torch.int64)  # [N]
    return LabelledImages(images, labels)


def _read_image(file: Path, *, image_size: int | None, policy: PathPolicy) -> torch.Tensor:
    """One image file as [3, H, W] uint8, its descriptor checked by `policy`."""
    try:
        handle = policy.open_file(file)
    except OSError as exc:
        raise DatasetError(file, f"cannot be read ({exc})", fix="check the file's permissions, or remove it") from exc
    with handle:
        return decode_image(handle, where=file, image_size=image_size)


def decode_image(handle: BinaryIO, *, where: str | Path, image_size: int | None) -> torch.Tensor:
    """One encoded image (a file, or bytes from a parquet row) as [3, H, W] uint8; any failure to decode it
    names `where` (one bad image in a dataset of thousands must be findable, not a traceback from inside PIL)."""
    try:
        with _opened_image(handle) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DatasetError(
                    where,
                    f"declares {img.width}×{img.height} pixels, more than the {MAX_PIXELS} mergelab decodes: a "
                    "decompression bomb, or an image far larger than a model input",
                    fix="downscale the file (a model reads 224×224) or remove it",
                )
            img = img.convert("RGB")
            if image_size is not None:
                img = _resize_center_crop(img, image_size)
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)  # [H·W·3]
            return data.view(img.height, img.width, 3).permute(2, 0, 1)  # [3, H, W]
    except Image.DecompressionBombError as exc:
        raise DatasetError(
            where,
            f"declares more pixels than PIL decodes ({exc}): a decompression bomb, or an image far larger than "
            "a model input",
            fix="downscale or remove the file (or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it)",
        ) from exc
    except PIL_DECODE_ERRORS as exc:
        raise DatasetError(
            where, f"is not a readable image ({type(exc).__name__}: {exc})", fix="remove or replace the file"
        ) from exc


def _opened_image(handle: BinaryIO) -> Image.Image:
    """`Image.open` without its DecompressionBombWarning: PIL warns above Image.MAX_IMAGE_PIXELS (89 M), which
    `MAX_PIXELS` (33.5 M) is below, so mergelab's own error naming the file and its size follows every such
    warning, and a library's warning printed first would only bury it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(handle)


def _resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """CLIP's eval transform: bicubic resize of the shorter side, then a centre crop."""
    scale = size / min(img.width, img.height)
    img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))), Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))
