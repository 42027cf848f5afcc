"""Demo-zoo generators: determinism, shapes, split sizes, captions, and the real-image npz round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data.generators import (
    GENERATED_SPLIT_SIZES,
    SPLITS,
    TASK_NAMES,
    TaskArrays,
    all_captions,
    build_task,
    pretrain_pool,
)
from engine.data.real_images import RealImages, extract_real_images, load_real_images

EXPECTED_SIZES = {"digits": (988, 305, 504), "faces": (320, 128, 192)}
POOL_N = 600


@pytest.fixture(scope="module")
def real_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn")
    pytest.importorskip("skimage")
    path = tmp_path_factory.mktemp("real") / "real_images.npz"
    extract_real_images(path)
    return path


@pytest.fixture(scope="module")
def real(real_npz: Path) -> RealImages:
    return load_real_images(real_npz)


@pytest.fixture(scope="module")
def tasks(real: RealImages) -> dict[str, TaskArrays]:
    return {name: build_task(name, real=real, seed=0) for name in TASK_NAMES}


def _same_task(a: TaskArrays, b: TaskArrays) -> bool:
    return all(torch.equal(a.images[s], b.images[s]) and torch.equal(a.labels[s], b.labels[s]) for s in SPLITS)


# --- real images -----------------------------------------------------------------------------------


def test_npz_round_trip_matches_the_packages(real_npz: Path, real: RealImages) -> None:
    from skimage import data as skdata
    from sklearn.datasets import load_digits

    digits = load_digits()
    assert real_npz.stat().st_size < 1_500_000
    np.testing.assert_array_equal(real.digits, digits.images.astype(np.uint8))
    np.testing.assert_array_equal(real.digit_labels, digits.target)
    np.testing.assert_array_equal(real.lfw, np.rint(skdata.lfw_subset() * 255).astype(np.uint8))
    assert real.lfw_is_face.sum() == 100 and real.lfw_is_face[:100].all()
    np.testing.assert_array_equal(real.textures[2], skdata.gravel())
    assert real.texture_names == ("brick", "grass", "gravel")
    assert not real.digits.flags.writeable


def test_extraction_is_byte_stable(real_npz: Path, tmp_path: Path) -> None:
    """Task caches are keyed by the npz's sha256, so re-extracting must not change its bytes."""
    again = tmp_path / "again.npz"
    extract_real_images(again)
    assert again.read_bytes() == real_npz.read_bytes()


def test_missing_npz_names_path_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz.*extract-real"):
        load_real_images(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_npz_names_path_and_fix(real_npz: Path, tmp_path: Path, damage: str) -> None:
    path = tmp_path / "broken.npz"
    good = real_npz.read_bytes()
    path.write_bytes(b"not a zip file at all" if damage == "garbage" else good[: len(good) // 2])
    with pytest.raises(ValueError, match="broken.npz.*extract-real"):
        load_real_images(path)


def test_npz_with_wrong_shape_names_the_key(real_npz: Path, tmp_path: Path) -> None:
    with np.load(real_npz) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["lfw"] = arrays["lfw"][:10]
    path = tmp_path / "short.npz"
    np.savez_compressed(path, **arrays)
    with pytest.raises(ValueError, match="short.npz.*'lfw'"):
        load_real_images(path)


# --- tasks -------------------------------------------------------------------------------------------


def test_every_task_has_expected_shapes_and_labels(tasks: dict[str, TaskArrays]) -> None:
    assert tuple(tasks) == TASK_NAMES
    for name, task in tasks.items():
        assert task.name == name
        sizes = EXPECTED_SIZES.get(name, tuple(GENERATED_SPLIT_SIZES[s] for s in SPLITS))
        assert tuple(task.labels[s].shape[0] for s in SPLITS) == sizes, name
        for split in SPLITS:
            images, labels = task.images[split], task.labels[split]
            assert images.dtype == torch.uint8 and images.shape == (sizes[SPLITS.index(split)], 3, 32, 32)
            assert labels.dtype == torch.int64
            assert set(labels.tolist()) == set(range(len(task.class_names))), (name, split)
        assert task.labels["val"].shape[0] >= 128, name


def test_templates_take_one_class_name_and_are_pretraining_captions(tasks: dict[str, TaskArrays]) -> None:
    captions = set(all_captions())
    for task in tasks.values():
        for template in task.templates:
            assert template.count("{}") == 1
            for class_name in task.class_names:
                assert template.format(class_name) in captions, (task.name, template, class_name)


def test_tasks_are_deterministic_per_seed(real: RealImages, tasks: dict[str, TaskArrays]) -> None:
    for name in TASK_NAMES:
        again = build_task(name, real=real, seed=0)
        assert _same_task(again, tasks[name]), name
        other = build_task(name, real=real, seed=1)
        assert not torch.equal(other.images["train"], tasks[name].images["train"]), name


def test_task_images_are_not_blank(tasks: dict[str, TaskArrays]) -> None:
    for task in tasks.values():
        std = task.images["val"].float().std(dim=(1, 2, 3))  # [N]
        assert std.min() > 2.0, task.name


def test_unknown_task_lists_the_known_ones(real: RealImages) -> None:
    with pytest.raises(KeyError, match="shapes.*digits, faces"):
        build_task("shapes", real=real, seed=0)


def test_negative_seed_is_rejected(real: RealImages) -> None:
    with pytest.raises(ValueError, match="seed"):
        build_task("bars", real=real, seed=-1)


# --- pretraining pool --------------------------------------------------------------------------------


def test_pool_shapes_and_captions(real: RealImages) -> None:
    pool = pretrain_pool(POOL_N, real=real, seed=0)
    assert pool.images.shape == (POOL_N, 3, 32, 32) and pool.images.dtype == torch.uint8
    assert pool.caption_ids.shape == (POOL_N,) and pool.caption_ids.dtype == torch.int64
    used = torch.unique(pool.caption_ids)
    assert used.tolist() == list(range(len(pool.captions)))  # in range, and every caption used
    assert len(set(pool.captions)) == len(pool.captions)
    everything = all_captions()
    assert len(set(everything)) == len(everything) > 600
    assert set(pool.captions) <= set(everything)
    order = {c: i for i, c in enumerate(everything)}
    assert [order[c] for c in pool.captions] == sorted(order[c] for c in pool.captions)


def test_pool_is_deterministic_per_seed(real: RealImages) -> None:
    a = pretrain_pool(POOL_N, real=real, seed=3)
    b = pretrain_pool(POOL_N, real=real, seed=3)
    c = pretrain_pool(POOL_N, real=real, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.caption_ids, b.caption_ids)
    assert a.captions == b.captions
    assert not torch.equal(a.images, c.images)


def test_pool_covers_every_family(real: RealImages) -> None:
    pool = pretrain_pool(POOL_N, real=real, seed=0)
    text = " | ".join(pool.captions)
    for phrase in (
        "a photo of a face",
        "a photo of a background",
        "stripes",
        "bar",
        "texture",
        "the digit",
        " in the ",
    ):
        assert phrase in text, phrase


def test_pool_faces_are_held_out_from_the_faces_task(real: RealImages) -> None:
    """No LFW image the pool may show appears among the faces task's sources (fixed index ranges)."""
    from engine.data.generators import _lfw_task_index, _pool_sources

    pool_photos = _pool_sources(real).photos.numpy()  # [40, 25, 25]
    task_index = np.concatenate([_lfw_task_index(real, s) for s in SPLITS])
    assert pool_photos.shape[0] == 40 and task_index.size == 160
    assert len(set(task_index.tolist())) == 160
    task_photos = real.lfw[task_index].astype(np.float32) / 255.0
    for photo in pool_photos:
        assert not np.any(np.all(np.isclose(task_photos, photo), axis=(1, 2)))


def test_pool_rejects_empty(real: RealImages) -> None:
    with pytest.raises(ValueError, match="n"):
        pretrain_pool(0, real=real, seed=0)
