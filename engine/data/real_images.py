"""The real photographs and scans behind the zoo's digits, faces and textures tasks, frozen into one npz.

Why a file: scikit-learn and scikit-image bundle these images, but a machine that only has torch
should still rebuild the zoo bit for bit. `extract_real_images` runs once where those packages exist
(`python -m engine zoo extract-real`); everything else reads the shipped npz with `load_real_images`.

Contents (all uint8, so the file stays near 1 MB):
- digits: sklearn `load_digits()`, [1797, 8, 8] with ink values 0..16, labels 0..9;
- lfw: skimage `data.lfw_subset()`, [200, 25, 25] scaled to 0..255; the first 100 are faces, the
  last 100 are not (checked by eye: crops of backgrounds), stored as `lfw_is_face`;
- textures: skimage brick, grass and gravel, [3, 512, 512] grey.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.io.atomic import atomic_path

TEXTURE_NAMES: tuple[str, ...] = ("brick", "grass", "gravel")
LFW_FACES = 100  # lfw_subset(): images 0..99 are faces, 100..199 are not
_SHAPES = {
    "digits": (1797, 8, 8),
    "digit_labels": (1797,),
    "lfw": (200, 25, 25),
    "lfw_is_face": (200,),
    "textures": (3, 512, 512),
    "texture_names": (3,),
}
_DTYPES = {"digits": np.uint8, "digit_labels": np.int64, "lfw": np.uint8, "lfw_is_face": np.uint8, "textures": np.uint8}
_FIX = "run `python -m engine zoo extract-real` to recreate it"


@dataclass(frozen=True)
class RealImages:
    """Read-only numpy views of the npz; tasks.py turns them into tensors."""

    digits: np.ndarray  # [1797, 8, 8] uint8, ink 0..16
    digit_labels: np.ndarray  # [1797] int64, 0..9
    lfw: np.ndarray  # [200, 25, 25] uint8, 0..255
    lfw_is_face: np.ndarray  # [200] uint8, 1 = face
    textures: np.ndarray  # [3, 512, 512] uint8 grey, in TEXTURE_NAMES order
    texture_names: tuple[str, ...]


def extract_real_images(path: Path) -> None:
    """Read the bundled sklearn/skimage images and write them to `path` (compressed npz, atomically).

    sklearn and skimage are imported here only, so the rest of the engine runs without them.
    """
    from skimage import data as skdata
    from sklearn.datasets import load_digits

    digits = load_digits()
    lfw = skdata.lfw_subset()  # [200, 25, 25] float in 0..1
    arrays = {
        "digits": np.rint(digits.images).astype(np.uint8),  # [1797, 8, 8]
        "digit_labels": digits.target.astype(np.int64),  # [1797]
        "lfw": np.rint(np.clip(lfw, 0.0, 1.0) * 255.0).astype(np.uint8),  # [200, 25, 25]
        "lfw_is_face": (np.arange(lfw.shape[0]) < LFW_FACES).astype(np.uint8),  # [200]
        "textures": np.stack([getattr(skdata, name)() for name in TEXTURE_NAMES]).astype(np.uint8),
        "texture_names": np.array(TEXTURE_NAMES),  # unicode, loads without pickle
    }
    _check_arrays(arrays, path)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a handle: numpy would append ".npz" to a path
            np.savez_compressed(handle, **arrays)  # fixed zip timestamps: same inputs, same sha256
        os.chmod(tmp, 0o644)  # the temp file is private (0600); the shipped asset should be readable


def load_real_images(path: Path) -> RealImages:
    """Load and validate the npz written by `extract_real_images`.

    Raises FileNotFoundError if it is missing and ValueError if it is unreadable or has the wrong
    keys, shapes or dtypes; both messages name the path and how to recreate the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: real-image file not found; {_FIX}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: cannot read the real-image npz ({exc}); {_FIX}") from exc
    _check_arrays(arrays, path)
    for array in arrays.values():
        array.setflags(write=False)
    return RealImages(
        digits=arrays["digits"],
        digit_labels=arrays["digit_labels"],
        lfw=arrays["lfw"],
        lfw_is_face=arrays["lfw_is_face"],
        textures=arrays["textures"],
        texture_names=tuple(str(n) for n in arrays["texture_names"]),
    )


def _check_arrays(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Fail early with the offending key: a wrong shape would otherwise surface deep in a generator."""
    for key, shape in _SHAPES.items():
        if key not in arrays:
            raise ValueError(f"{path}: key {key!r} missing from the real-image npz; {_FIX}")
        if arrays[key].shape != shape:
            raise ValueError(f"{path}: {key!r} has shape {arrays[key].shape}, expected {shape}; {_FIX}")
    for key, dtype in _DTYPES.items():
        if arrays[key].dtype != dtype:
            raise ValueError(f"{path}: {key!r} has dtype {arrays[key].dtype}, expected {np.dtype(dtype)}; {_FIX}")
    names = tuple(str(n) for n in arrays["texture_names"])
    if names != TEXTURE_NAMES:
        raise ValueError(f"{path}: 'texture_names' is {names}, expected {TEXTURE_NAMES}; {_FIX}")
