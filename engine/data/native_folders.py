"""The TALL20 datasets released as image files with their own label files, listed as ImageSets.

The images are decoded (and kept in the task cache) like any image folder (engine/data/image_sets.py);
these layouts only say which file is which split and class, as the papers' code reads them:
- GTSRB: `GTSRB/Training/<00000..00042>/*.ppm` (train; the folder is the class) and
  `GTSRB/Final_Test/Images/*.ppm` with `GT-final_test.csv` (`;`-separated Filename, ClassId) beside
  `GTSRB/` or inside it (test);
- Cars (Stanford Cars): `cars_train/`, `cars_test/`, `devkit/cars_train_annos.mat` and
  `cars_test_annos_withlabels.mat` (scipy.io; `fname` and `class`, 1..196);
- Flowers102: `jpg/image_00001.jpg…`, `imagelabels.mat` (`labels`, 1..102) and `setid.mat` (`trnid`, `valid`,
  `tstid`, 1-based image numbers);
- RESISC45: `NWPU-RESISC45/<class>/<class>_NNN.jpg` with `resisc45-{train,val,test}.txt` listing file names;
- Food101: `images/<class>/<id>.jpg` with `meta/{train,test}.txt` listing `<class>/<id>`;
- OxfordIIITPet: `images/<Breed>_<n>.jpg` with `annotations/{trainval,test}.txt` (`<Breed>_<n> <class 1..37> ...`;
  trainval is read as train).
Class names and labels are the suite task's (engine/data/suites.py); SUN397, EuroSAT, DTD and RenderedSST2
come as pre-split class folders and are read as image folders.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import scipy.io

from engine.data.image_sets import IMAGE_SUFFIXES, ImageFile, ImageSet
from engine.data.suites import SuiteTask, suite_task
from engine.errors import DatasetError
from engine.home import PathPolicy

Lister = Callable[[Path, SuiteTask], list[ImageFile]]


def _image(root: Path, file: Path, split: str, label: int) -> ImageFile:
    return ImageFile(file, str(file.relative_to(root)), split, label)


def _gtsrb(root: Path, task: SuiteTask) -> list[ImageFile]:
    base = root / "GTSRB" if (root / "GTSRB").is_dir() else root
    files = [
        _image(root, file, "train", int(folder.name))
        for folder in sorted((base / "Training").glob("[0-9]*"))
        for file in sorted(folder.glob("*.ppm"))
    ]
    table = next((p for p in (root / "GT-final_test.csv", base / "GT-final_test.csv") if p.is_file()), None)
    if table is not None:
        with table.open(encoding="utf-8", newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle, delimiter=";"), start=2):
                if not row.get("Filename") or not (row.get("ClassId") or "").isdigit():
                    raise DatasetError(f"{table}, row {line}", "lacks Filename or ClassId", fix="use the released CSV")
                image = base / "Final_Test" / "Images" / row["Filename"]
                files.append(_image(root, image, "test", int(row["ClassId"])))
    return files


def _mat(file: Path) -> dict:
    try:
        return scipy.io.loadmat(file, squeeze_me=True, struct_as_record=True)
    except (ValueError, OSError, TypeError) as exc:
        raise DatasetError(file, f"cannot be read as a .mat file ({exc})", fix="download it again") from exc


def _cars(root: Path, task: SuiteTask) -> list[ImageFile]:
    files = []
    for split, folder, annos in (
        ("train", "cars_train", "devkit/cars_train_annos.mat"),
        ("test", "cars_test", "cars_test_annos_withlabels.mat"),
    ):
        found = next((p for p in (root / annos, root / "devkit" / Path(annos).name) if p.is_file()), None)
        if found is None:
            continue
        records = np.atleast_1d(_mat(found)["annotations"])
        for record in records:
            files.append(_image(root, root / folder / str(record["fname"]), split, int(record["class"]) - 1))
    return files


def _flowers102(root: Path, task: SuiteTask) -> list[ImageFile]:
    labels = np.atleast_1d(_mat(root / "imagelabels.mat")["labels"]).astype(np.int64)  # [N], 1..102
    sets = _mat(root / "setid.mat")
    files = []
    for key, split in (("trnid", "train"), ("valid", "val"), ("tstid", "test")):
        for number in np.atleast_1d(sets[key]).astype(np.int64):
            files.append(_image(root, root / "jpg" / f"image_{number:05d}.jpg", split, int(labels[number - 1]) - 1))
    return files


def _resisc45(root: Path, task: SuiteTask) -> list[ImageFile]:
    index = {name.replace(" ", "_"): i for i, name in enumerate(task.class_names)}
    files = []
    for split in ("train", "val", "test"):
        listing = root / f"resisc45-{split}.txt"
        if not listing.is_file():
            continue
        for line, name in enumerate(listing.read_text(encoding="utf-8").split(), start=1):
            folder = name.rsplit("_", 1)[0]
            if folder not in index:
                raise DatasetError(
                    f"{listing}, line {line}", f"names the unknown class {folder!r}", fix="use the released lists"
                )
            files.append(_image(root, root / "NWPU-RESISC45" / folder / name, split, index[folder]))
    return files


def _food101(root: Path, task: SuiteTask) -> list[ImageFile]:
    index = {name.replace(" ", "_"): i for i, name in enumerate(task.class_names)}
    files = []
    for split in ("train", "test"):
        listing = root / "meta" / f"{split}.txt"
        for line, entry in enumerate(listing.read_text(encoding="utf-8").split() if listing.is_file() else (), 1):
            folder = entry.split("/")[0]
            if folder not in index:
                raise DatasetError(
                    f"{listing}, line {line}", f"names the unknown class {folder!r}", fix="use the released lists"
                )
            files.append(_image(root, root / "images" / f"{entry}.jpg", split, index[folder]))
    return files


def _oxford_pets(root: Path, task: SuiteTask) -> list[ImageFile]:
    files = []
    for listing_name, split in (("trainval.txt", "train"), ("test.txt", "test")):
        listing = root / "annotations" / listing_name
        lines = listing.read_text(encoding="utf-8").splitlines() if listing.is_file() else []
        for line, text in enumerate(lines, start=1):
            cells = text.split()
            if text.startswith("#") or not cells:
                continue
            if len(cells) < 2 or not cells[1].isdigit():
                raise DatasetError(
                    f"{listing}, line {line}", "is not '<image> <class id> ...'", fix="use the released lists"
                )
            files.append(_image(root, root / "images" / f"{cells[0]}.jpg", split, int(cells[1]) - 1))
    return files


# suite task → (files marking the layout, relative to the dataset folder; the lister)
FOLDER_LAYOUTS: Mapping[str, tuple[tuple[str, ...], Lister]] = MappingProxyType(
    {
        "GTSRB": (("GTSRB/Training", "Training", "GT-final_test.csv"), _gtsrb),
        "Cars": (("devkit/cars_train_annos.mat", "cars_test_annos_withlabels.mat"), _cars),
        "Flowers102": (("imagelabels.mat",), _flowers102),
        "RESISC45": (("resisc45-train.txt", "resisc45-test.txt"), _resisc45),
        "Food101": (("meta/train.txt", "meta/test.txt"), _food101),
        "OxfordIIITPet": (("annotations/trainval.txt", "annotations/test.txt"), _oxford_pets),
    }
)


def folder_layout(root: Path, name: str) -> str | None:
    """The suite task whose release files lie in `root`, when `name` is that task."""
    task = suite_task(name)
    if task is None or task.name not in FOLDER_LAYOUTS or not root.is_dir():
        return None
    markers, _ = FOLDER_LAYOUTS[task.name]
    return task.name if any((root / m).exists() for m in markers) else None


def scan_release(root: Path, task_name: str, *, name: str, policy: PathPolicy) -> ImageSet:
    """The release's images with split and label (none decoded); every file must exist and be an image."""
    task = suite_task(task_name)
    files = FOLDER_LAYOUTS[task_name][1](root, task)
    if not files:
        raise DatasetError(root, f"holds none of {task_name}'s listed images", fix="extract the whole release there")
    for entry in files:
        policy.check(entry.file)
        if entry.file.suffix.lower() not in IMAGE_SUFFIXES or not entry.file.is_file():
            raise DatasetError(entry.file, "is listed by the release but missing", fix="extract the release again")
        if not 0 <= entry.label < len(task.class_names):
            raise DatasetError(
                entry.file, f"has the label {entry.label}, outside {task_name}'s classes", fix="check the label files"
            )
    return ImageSet(name, task.class_names, task.templates, tuple(files))
