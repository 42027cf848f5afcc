"""The TALL20 datasets released as arrays, read in their own formats with the format's library.

Layouts (as torchvision and the papers' code expect them under a dataset folder, the files in the folder
itself or in its `raw/` or release sub-folder):
- SVHN: `{train,test}_32x32.mat` (scipy.io): X [32, 32, 3, N], y [N, 1] with 10 standing for the digit 0;
- MNIST, FashionMNIST, KMNIST: idx files `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`; the three
  share the file names, so the task's name says which it is;
- EMNIST letters: `emnist-letters-{train,test}-{images-idx3,labels-idx1}-ubyte[.gz]`; its labels are 1..26
  (torchvision's unused class 0), the suite's 0..25, so one is subtracted; the images stay as stored (as
  torchvision reads them);
- CIFAR10 / CIFAR100: the binary release, `data_batch_{1..5}.bin` + `test_batch.bin` (label byte + 3072
  bytes, R, G, B planes) and `{train,test}.bin` (coarse and fine label bytes + 3072; the fine label is read),
  or the python release torchvision downloads (`cifar-10-batches-py/data_batch_{1..5}`, `test_batch`;
  `cifar-100-python/{train,test}`): pickles, opened only after an opcode scan (engine/io/formats/pickle_scan.py)
  by an unpickler that builds numpy arrays and plain containers and refuses every other global;
- STL10: `{train,test}_X.bin` (N × 3 × 96 × 96 bytes, each plane column-major) and `{train,test}_y.bin` (1..10);
- PCAM: `camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5` (h5py): x [N, 96, 96, 3], y [N, 1, 1, 1];
- FER2013: `fer2013.csv` or `icml_face_data.csv` (emotion, pixels, Usage: Training → train, PublicTest → val,
  PrivateTest → test); the CSV numbers the emotions angry, disgust, fear, happy, sad, surprise, neutral, the
  suite (FusionBench's heads) angry, disgusted, fearful, happy, neutral, sad, surprised, so they are remapped.
Grey images become three equal channels. Class names are the suite task's (engine/data/suites.py).
"""

from __future__ import annotations

import csv
import gzip
import io
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

import h5py
import numpy as np
import scipy.io
import torch

from engine.data.suites import suite_task
from engine.data.tasks import LabelledImages, TaskData
from engine.errors import CheckpointError, DatasetError
from engine.io.formats.pickle_scan import check_pickle

SplitReader = Callable[[Path], dict[str, LabelledImages]]
RELEASE_FOLDERS = (
    "",
    "raw",
    "cifar-10-batches-bin",
    "cifar-100-binary",
    "cifar-10-batches-py",
    "cifar-100-python",
    "stl10_binary",
    "fer2013",
)
# what a CIFAR python batch may build: numpy arrays (pickled by numpy 1 or 2), and bytes as Python 3 writes them
ARRAY_GLOBALS = MappingProxyType(
    {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
        ("_codecs", "encode"): ("_codecs", "encode"),
    }
)
IDX_SPLITS = MappingProxyType({"train": "train", "t10k": "test"})
FER_USAGE = MappingProxyType({"Training": "train", "PublicTest": "val", "PrivateTest": "test"})
FER_TO_SUITE = (0, 1, 2, 3, 5, 6, 4)  # CSV code → suite index (sad, surprise, neutral move)
PCAM_SPLITS = MappingProxyType({"train": "train", "valid": "val", "test": "test"})
H5_ROWS = 4096  # PCAM rows copied at once


def _from_hwc(array: np.ndarray) -> torch.Tensor:
    """[N, H, W] grey or [N, H, W, 3] uint8 → [N, 3, H, W]."""
    tensor = torch.from_numpy(np.require(array, dtype=np.uint8, requirements=["C", "W"]))  # read-only → a copy
    if tensor.ndim == 3:
        return tensor.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()  # [N, 3, H, W]
    return tensor.permute(0, 3, 1, 2).contiguous()  # [N, 3, H, W]


def _read_bytes(file: Path) -> bytes:
    try:
        with gzip.open(file, "rb") if file.suffix == ".gz" else open(file, "rb") as handle:
            return handle.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(file, f"cannot be read ({exc})", fix="download or extract it again") from exc


def read_idx(file: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format): magic 0x0000080<d>, d big-endian sizes, then uint8 data."""
    data = _read_bytes(file)
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DatasetError(file, "is not an idx file of unsigned bytes", fix="use the dataset's original idx files")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    size = int(np.prod(shape))
    if len(data) != 4 + 4 * dims + size:
        raise DatasetError(
            file,
            f"holds {len(data) - 4 - 4 * dims} bytes for its declared shape {shape} ({size} bytes): truncated",
            fix="download or extract it again",
        )
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _find(root: Path, name: str) -> Path | None:
    for folder in RELEASE_FOLDERS:
        for candidate in (root / folder / name, root / folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _idx_pairs(root: Path, prefix: str, splits: dict[str, str]) -> dict[str, LabelledImages]:
    result = {}
    for stem, split in splits.items():
        images, labels = (
            _find(root, f"{prefix}{stem}-images-idx3-ubyte"),
            _find(root, f"{prefix}{stem}-labels-idx1-ubyte"),
        )
        if images is None or labels is None:
            continue
        pixels, targets = read_idx(images), read_idx(labels)
        if pixels.ndim != 3 or targets.shape != (pixels.shape[0],):
            raise DatasetError(labels, f"has {targets.shape} labels for images {pixels.shape}", fix="pair the files")
        result[split] = LabelledImages(_from_hwc(pixels), torch.from_numpy(targets.astype(np.int64)))
    return result


def _mnist_family(root: Path) -> dict[str, LabelledImages]:
    return _idx_pairs(root, "", IDX_SPLITS)


def _emnist_letters(root: Path) -> dict[str, LabelledImages]:
    splits = _idx_pairs(root, "emnist-letters-", {"train": "train", "test": "test"})
    for split, data in splits.items():
        if int(data.labels.min()) < 1:
            raise DatasetError(
                _find(root, f"emnist-letters-{split}-labels-idx1-ubyte"),
                "has the label 0, which the letters split leaves unused (letters are 1..26)",
                fix="use the EMNIST letters files as released",
            )
        splits[split] = LabelledImages(data.images, data.labels - 1)
    return splits


def _svhn(root: Path) -> dict[str, LabelledImages]:
    result = {}
    for split in ("train", "test"):
        file = _find(root, f"{split}_32x32.mat")
        if file is None:
            continue
        try:
            mat = scipy.io.loadmat(file)
        except (ValueError, OSError, TypeError) as exc:
            raise DatasetError(file, f"cannot be read as a .mat file ({exc})", fix="download it again") from exc
        images = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1)))  # [N, 3, 32, 32]
        result[split] = LabelledImages(images, torch.from_numpy(mat["y"].reshape(-1).astype(np.int64) % 10))
    return result


def _records(file: Path, *, header: int, label_at: int) -> LabelledImages:
    """Fixed-size binary records: `header` label bytes, then a 3 × 32 × 32 image (CIFAR's binary release)."""
    data = np.frombuffer(_read_bytes(file), dtype=np.uint8)
    width = header + 3 * 32 * 32
    if data.size == 0 or data.size % width:
        raise DatasetError(
            file, f"is {data.size} bytes, not a whole number of {width}-byte records", fix="download it again"
        )
    rows = data.reshape(-1, width)
    images = torch.from_numpy(rows[:, header:].reshape(-1, 3, 32, 32).copy())  # [N, 3, 32, 32]
    return LabelledImages(images, torch.from_numpy(rows[:, label_at].astype(np.int64)))


def _concat(parts: list[LabelledImages]) -> LabelledImages:
    return LabelledImages(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))


class _ArrayUnpickler(pickle.Unpickler):
    """Builds numpy arrays, dtypes and plain containers; any other global is refused by name."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"the global {module}.{name} is not allowed in a dataset batch")
        return super().find_class(*ARRAY_GLOBALS[(module, name)])


def _python_batch(file: Path, label_key: bytes) -> LabelledImages:
    """A CIFAR python batch: {b"data": uint8 [N, 3072], b"labels" or b"fine_labels": [N]}."""
    data = _read_bytes(file)
    try:
        check_pickle(data, file)
        batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
        pixels, labels = np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[label_key], dtype=np.int64)
    except CheckpointError as exc:
        raise DatasetError(file, exc.problem.replace("data.pkl", "the batch"), fix="download it again") from exc
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DatasetError(file, f"is not a CIFAR python batch ({exc})", fix="use the released batch files") from exc
    if pixels.ndim != 2 or pixels.shape[1] != 3072 or labels.shape != (pixels.shape[0],):
        raise DatasetError(file, f"holds data {pixels.shape} and labels {labels.shape}", fix="download it again")
    return LabelledImages(torch.from_numpy(pixels.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels))


def _cifar10(root: Path) -> dict[str, LabelledImages]:
    result = {}
    for split, stems in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        binary = [f for stem in stems if (f := _find(root, f"{stem}.bin")) is not None]
        python = [f for stem in stems if (f := _find(root, stem)) is not None]
        parts = [_records(f, header=1, label_at=0) for f in binary] or [_python_batch(f, b"labels") for f in python]
        if parts:
            result[split] = _concat(parts)
    return result


def _cifar100(root: Path) -> dict[str, LabelledImages]:
    result = {}
    for split in ("train", "test"):
        if (binary := _find(root, f"{split}.bin")) is not None:
            result[split] = _records(binary, header=2, label_at=1)
        elif (python := _find(root, split)) is not None:
            result[split] = _python_batch(python, b"fine_labels")
    return result


def _stl10(root: Path) -> dict[str, LabelledImages]:
    result = {}
    for split in ("train", "test"):
        images, labels = _find(root, f"{split}_X.bin"), _find(root, f"{split}_y.bin")
        if images is None or labels is None:
            continue
        pixels = np.frombuffer(_read_bytes(images), dtype=np.uint8)
        targets = np.frombuffer(_read_bytes(labels), dtype=np.uint8).astype(np.int64)
        if pixels.size != targets.size * 3 * 96 * 96:
            raise DatasetError(images, f"holds {pixels.size} bytes for {targets.size} labels", fix="download it again")
        planes = torch.from_numpy(pixels.reshape(-1, 3, 96, 96).copy())  # [N, 3, W, H]: planes are column-major
        result[split] = LabelledImages(planes.transpose(2, 3).contiguous(), torch.from_numpy(targets - 1))
    return result


def _pcam(root: Path) -> dict[str, LabelledImages]:
    result = {}
    for stem, split in PCAM_SPLITS.items():
        xs, ys = (_find(root, f"camelyonpatch_level_2_split_{stem}_{c}.h5") for c in ("x", "y"))
        if xs is None or ys is None:
            continue
        try:
            with h5py.File(xs, "r") as fx, h5py.File(ys, "r") as fy:
                x, y = fx["x"], fy["y"]  # [N, 96, 96, 3], [N, 1, 1, 1]
                images = torch.empty((x.shape[0], 3, x.shape[1], x.shape[2]), dtype=torch.uint8)  # [N, 3, 96, 96]
                for start in range(0, x.shape[0], H5_ROWS):
                    images[start : start + H5_ROWS] = _from_hwc(x[start : start + H5_ROWS])
                labels = torch.from_numpy(np.asarray(y).reshape(-1).astype(np.int64))
        except (OSError, KeyError) as exc:
            raise DatasetError(
                xs, f"cannot be read as PCAM's HDF5 pair ({exc})", fix="download (and gunzip) it again"
            ) from exc
        result[split] = LabelledImages(images, labels)
    return result


def _fer2013(root: Path) -> dict[str, LabelledImages]:
    file = _find(root, "fer2013.csv") or _find(root, "icml_face_data.csv")
    rows: dict[str, tuple[list[np.ndarray], list[int]]] = {}
    with io.TextIOWrapper(io.BytesIO(_read_bytes(file)), encoding="utf-8", newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            row = {k.strip(): v for k, v in row.items()}
            split = FER_USAGE.get(row.get("Usage", ""))
            pixels = np.array(row.get("pixels", "").split(), dtype=np.uint8) if split else None
            if split is None or pixels.size != 48 * 48 or not row.get("emotion", "").isdigit():
                raise DatasetError(
                    f"{file}, row {line}", "is not emotion,pixels,Usage of a 48×48 face", fix="use the released CSV"
                )
            images, labels = rows.setdefault(split, ([], []))
            images.append(pixels.reshape(48, 48))
            labels.append(FER_TO_SUITE[int(row["emotion"])])
    return {s: LabelledImages(_from_hwc(np.stack(i)), torch.tensor(l)) for s, (i, l) in rows.items()}


# suite task → (a file that marks the layout, its reader)
ARRAY_LAYOUTS: Mapping[str, tuple[tuple[str, ...], SplitReader]] = MappingProxyType(
    {
        "SVHN": (("train_32x32.mat", "test_32x32.mat"), _svhn),
        "MNIST": (("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"), _mnist_family),
        "FashionMNIST": (("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"), _mnist_family),
        "KMNIST": (("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"), _mnist_family),
        "EMNIST": (
            ("emnist-letters-train-images-idx3-ubyte", "emnist-letters-test-images-idx3-ubyte"),
            _emnist_letters,
        ),
        "CIFAR10": (("data_batch_1.bin", "test_batch.bin", "data_batch_1", "test_batch"), _cifar10),
        "CIFAR100": (("train.bin", "test.bin", "cifar-100-python/train", "cifar-100-python/test"), _cifar100),
        "STL10": (("train_X.bin", "test_X.bin"), _stl10),
        "PCAM": (tuple(f"camelyonpatch_level_2_split_{s}_x.h5" for s in PCAM_SPLITS), _pcam),
        "FER2013": (("fer2013.csv", "icml_face_data.csv"), _fer2013),
    }
)


def array_layout(root: Path, name: str) -> str | None:
    """The suite task whose array files lie in `root`, when `name` (the task's or folder's) is that task."""
    task = suite_task(name)
    if task is None or task.name not in ARRAY_LAYOUTS or not root.is_dir():
        return None
    markers, _ = ARRAY_LAYOUTS[task.name]
    return task.name if any(_find(root, m) is not None for m in markers) else None


def load_array_task(root: Path, task_name: str, *, name: str) -> TaskData:
    """Read every split the layout's files hold; labels are checked against the suite's class count."""
    task = suite_task(task_name)
    splits = ARRAY_LAYOUTS[task_name][1](root)
    for split, data in splits.items():
        if len(data) and not 0 <= int(data.labels.min()) <= int(data.labels.max()) < len(task.class_names):
            raise DatasetError(
                root,
                f"the {split} labels span {int(data.labels.min())}..{int(data.labels.max())}, outside "
                f"{task.name}'s {len(task.class_names)} classes",
                fix=f"check that these are the {task.name} files",
            )
    return TaskData(name, task.class_names, task.templates, splits)
