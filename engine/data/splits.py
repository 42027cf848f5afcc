"""Validation splits as the papers' code draws them, as named profiles: the same images land in val.

Methods that tune on validation data (λ searches, AdaMerging, TALL masks) report numbers that depend on which
images those are, so mergelab draws them the way each code base does:
- `task_vectors` (also TALL masks' and aTLAS's, which reuse it): task_vectors `src/datasets/registry.py`,
  `split_train_into_train_val`: val = min(int(0.1 · N), 5000) images of train,
  `torch.utils.data.random_split(train, [N − val, val], generator=torch.Generator().manual_seed(0))`, the
  second part. EuroSAT keeps the val folder of its own splits (task_vectors' `EuroSATVal`).
- `fusion_bench`: FusionBench's `val` configurations (`fusion_bench_config/dataset/image_classification/val/`,
  the TA8 tasks only): `fusion_bench.utils.data.train_validation_split` with validation_fraction 0.1, no cap,
  seed 0, the same `random_split` call. FusionBench defines no val split for the other twelve TALL20 tasks.
- `knots`: KnOTS (Stoica et al., ICLR'25) `configs/vitB_r16_knots_ties.py`: val_fraction 0.2 of the *test*
  split, drawn by a stored permutation (`dataset/shuffled_idxs/<task>_shuffled_idxs.pt`): val = its first
  int(0.2 · N) indices, test = the rest; DTD, EuroSAT and RESISC45 keep their own val splits.
A split drawn from train or test replaces it by what is left, so no image is in two splits. A task whose
dataset's own val split the profile takes (EuroSAT under task_vectors) but whose copy has none (a Hugging Face
export of train and test) gets its val drawn by the profile's rule instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch

from engine.data.suites import suite_task
from engine.data.tasks import LabelledImages, TaskData
from engine.errors import DatasetError, ParameterError

TA8_TASKS = ("SUN397", "Cars", "RESISC45", "EuroSAT", "SVHN", "GTSRB", "MNIST", "DTD")


@dataclass(frozen=True)
class SplitProfile:
    name: str
    source: str  # the split val is drawn from: "train" or "test"
    fraction: float  # of the source split
    max_size: int | None  # val holds at most this many images
    seed: int | None  # random_split's generator seed; None: a stored permutation decides
    tasks: tuple[str, ...] | None  # the suite tasks it draws val for (None: every task)
    own_val: tuple[str, ...]  # suite tasks whose dataset's own val split is the profile's
    description: str


PROFILES = MappingProxyType(
    {
        "task_vectors": SplitProfile(
            "task_vectors", "train", 0.1, 5000, 0, None, ("EuroSAT",), "task_vectors / TALL masks: 10% of train"
        ),
        "fusion_bench": SplitProfile(
            "fusion_bench", "train", 0.1, None, 0, TA8_TASKS, (), "FusionBench's val configurations: 10% of train"
        ),
        "knots": SplitProfile(
            "knots",
            "test",
            0.2,
            None,
            None,
            ("Cars", "GTSRB", "MNIST", "SUN397", "SVHN"),
            ("DTD", "EuroSAT", "RESISC45"),
            "KnOTS: 20% of test by stored indices",
        ),
    }
)
PROFILE_ALIASES = MappingProxyType(
    {"tall": "task_vectors", "tall_masks": "task_vectors", "fusionbench": "fusion_bench"}
)


@dataclass(frozen=True)
class SplitIndices:
    kept: torch.Tensor  # [N − V] int64: indices of the source split left in it
    val: torch.Tensor  # [V] int64: indices of the source split drawn into val


def profile(name: str) -> SplitProfile:
    key = PROFILE_ALIASES.get(name.lower(), name.lower())
    if key not in PROFILES:
        raise ParameterError(name, "is not a validation split profile", fix=f"choose one of {', '.join(PROFILES)}")
    return PROFILES[key]


def val_size(chosen: SplitProfile, count: int) -> int:
    size = int(count * chosen.fraction)
    return size if chosen.max_size is None else min(size, chosen.max_size)


def split_indices(chosen: SplitProfile, count: int, *, stored: torch.Tensor | None = None) -> SplitIndices:
    """Which of `count` source images go to val: random_split's draw (seeded), or the stored permutation's."""
    size = val_size(chosen, count)
    if chosen.seed is None:
        if stored is None:
            raise ParameterError(chosen.name, "draws val by stored indices", fix="give the indices file")
        return SplitIndices(kept=stored[size:], val=stored[:size])
    # torch.utils.data.random_split(range(count), [count − size, size], generator): one randperm, cut in order
    order = torch.randperm(count, generator=torch.Generator().manual_seed(chosen.seed))  # [count]
    return SplitIndices(kept=order[: count - size], val=order[count - size :])


def with_validation(task: TaskData, name: str, *, indices_file: Path | None = None) -> TaskData:
    """`task` with its val split drawn as profile `name` draws it (the source split keeps the rest)."""
    chosen = profile(name)
    known = suite_task(task.name)
    canonical = known.name if known else task.name
    if canonical in chosen.own_val and "val" in task.splits:
        return task
    if chosen.tasks is not None and canonical not in (*chosen.tasks, *chosen.own_val):
        raise DatasetError(
            task.name,
            f"has no {chosen.name} validation split ({chosen.name} defines one for {', '.join(chosen.tasks)})",
            fix="choose the task_vectors profile, or give the dataset a val split",
        )
    source = task.split(chosen.source)
    stored = None if indices_file is None else read_indices(indices_file, len(source))
    drawn = split_indices(chosen, len(source), stored=stored)
    splits = dict(task.splits)
    splits[chosen.source] = _take(source, drawn.kept)
    splits["val"] = _take(source, drawn.val)
    return replace(task, splits=splits)


def _take(data: LabelledImages, indices: torch.Tensor) -> LabelledImages:
    return LabelledImages(data.images[indices], data.labels[indices])


def read_indices(path: Path, count: int) -> torch.Tensor:
    """A stored permutation of range(count): a tensor saved by torch.save (read weights-only) or a .npy file."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            raw = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
            raw = raw if isinstance(raw, torch.Tensor) else torch.as_tensor(raw)
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        raise DatasetError(
            path, f"cannot be read as stored indices ({exc})", fix="give KnOTS' .pt file or a .npy file"
        ) from exc
    indices = raw.reshape(-1).to(torch.int64)  # [count]
    if indices.numel() != count or not torch.equal(indices.sort().values, torch.arange(count)):
        raise DatasetError(
            path,
            f"holds {indices.numel()} indices that are not a permutation of the split's {count} images",
            fix="use the indices file made for this dataset and split",
        )
    return indices


def stratified_subset(labels: torch.Tensor, limit: int, *, seed: int) -> torch.Tensor:
    """Sorted indices of at most `limit` of `labels` [N], each class keeping its share (largest remainders get
    the images left over, the lower class on a tie), drawn by a seeded permutation within each class: the
    benchmark's `--limit-per-task`, so a CPU run of a big suite keeps every class in proportion."""
    count = int(labels.shape[0])
    if limit < 1:
        raise ParameterError("limit per task", f"is {limit}", fix="give a positive number of images")
    if count <= limit:
        return torch.arange(count)
    classes, sizes = torch.unique(labels.cpu(), return_counts=True)  # [C], [C]
    exact = sizes.double() * limit / count  # [C]
    quota = exact.floor().long()
    order = sorted(range(len(classes)), key=lambda c: (-(exact[c] - quota[c]).item(), c))
    for c in order[: limit - int(quota.sum())]:
        quota[c] += 1
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c, wanted in zip(classes.tolist(), quota.tolist()):
        members = torch.nonzero(labels.cpu() == c).flatten()  # [n_c]
        picked.append(members[torch.randperm(len(members), generator=gen)[:wanted]])
    return torch.cat(picked).sort().values


def subsampled(task: TaskData, limit: int, *, seed: int, splits: tuple[str, ...] = ("val", "test")) -> TaskData:
    """`task` with each of `splits` cut to at most `limit` images by `stratified_subset` (the others as they are)."""
    kept = dict(task.splits)
    for name in splits:
        data = task.split(name)
        kept[name] = _take(data, stratified_subset(data.labels, limit, seed=seed).to(data.labels.device))
    return replace(task, splits=kept)
