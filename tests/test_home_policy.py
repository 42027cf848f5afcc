"""The dashboard's path policy is a security boundary: every file the engine reads for a user (not only the
paths a manifest names) must resolve inside the allowed roots, checked on the file actually opened, and a
refusal must not tell whether something outside exists."""

import os
import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image

from engine.data.loading import load_task
from engine.errors import PathNotAllowedError
from engine.home import DataHome, PathPolicy
from engine.pool.access import open_for_user
from tests.builders import TINY_ARCH
from tests.foreign import tiny_source, write_image_folders, write_pool


@pytest.fixture()
def places(tmp_path):
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    return inside, outside, PathPolicy(inside, (inside.resolve(),), tmp_path / "config.json")


def _png(path: Path, colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


@pytest.mark.parametrize("absolute", [False, True])
def test_a_csv_row_outside_the_roots_is_refused_the_same_whether_or_not_it_exists(places, absolute):
    inside, outside, policy = places
    _png(inside / "task" / "a.png")
    row = str(outside / "x.png") if absolute else "../../outside/x.png"
    csv = inside / "task" / "labels.csv"
    csv.write_text(f"path,label\na.png,0\n{row},1\n")
    problems = []
    for exists in (False, True):
        if exists:
            _png(outside / "x.png")
        with pytest.raises(PathNotAllowedError, match=r"labels\.csv, row 3.*outside the allowed roots") as caught:
            load_task(csv, policy=policy)
        problems.append(caught.value.problem)
        assert "exist" not in str(caught.value)
    assert problems[0] == problems[1]
    assert load_task(csv, policy=PathPolicy.trust_all()).splits["test"].labels.tolist() == [0, 1]  # the shell's


def test_a_symlinked_image_in_an_image_folder_is_refused_before_it_is_read_or_cached(places, tmp_path):
    inside, outside, policy = places
    folder = inside / "task"
    _png(folder / "test" / "red" / "0.png")
    _png(folder / "test" / "blue" / "0.png", colour=(0, 0, 200))
    os.symlink(_png(outside / "secret.png"), folder / "test" / "blue" / "1.png")
    cache = tmp_path / "cache"
    with pytest.raises(PathNotAllowedError, match=r"1\.png.*outside the allowed roots"):
        load_task(folder, policy=policy, cache_dir=cache)
    assert not cache.exists() or not any(cache.rglob("*.safetensors"))  # nothing decoded, nothing cached


def test_a_hugging_face_folder_whose_weights_are_a_symlink_outside_is_refused(places, tmp_path):
    inside, outside, _ = places
    tasks = {"colour": ("red", "green"), "shape": ("round", "square")}
    source = tiny_source(TINY_ARCH, tasks, seed=3)
    pool = write_pool(
        inside / "pool",
        "hf",
        architecture=TINY_ARCH,
        pretrained=source["pretrained"],
        finetuned=source["finetuned"],
        heads=source["heads"],
    )
    write_image_folders(pool, tasks)
    home = DataHome(tmp_path / "home").ensure()
    policy = PathPolicy(home.root, (inside.resolve(), home.root), home.config_file)
    weights = pool / "finetuned" / "colour" / "model.safetensors"
    shutil.move(weights, outside / "model.safetensors")
    os.symlink(outside / "model.safetensors", weights)
    collection = open_for_user(pool, home=home, policy=policy)
    collection.finetuned_lazy("shape")  # the other task's folder is fine
    with pytest.raises(PathNotAllowedError, match=r"model\.safetensors.*outside the allowed roots"):
        collection.finetuned_lazy("colour")
    open_for_user(pool, home=home, policy=DataHome.shell_policy()).finetuned_lazy("colour")  # the shell trusts it


def test_a_symlink_swapped_while_files_are_opened_never_reads_outside(places):
    """A link flipped between a file inside and one outside as fast as a thread can: every open either
    refuses or reads the inside file, because the opened descriptor's real path is checked after opening."""
    inside, outside, policy = places
    (inside / "real.txt").write_bytes(b"inside")
    (outside / "secret.txt").write_bytes(b"secret")
    link, stop = inside / "link.txt", threading.Event()
    os.symlink(inside / "real.txt", link)

    def flip() -> None:
        targets = (outside / "secret.txt", inside / "real.txt")
        i = 0
        while not stop.is_set():
            tmp = inside / f".link{i % 2}"
            tmp.unlink(missing_ok=True)
            os.symlink(targets[i % 2], tmp)
            os.replace(tmp, link)  # atomic swap of the link itself
            i += 1

    flipper = threading.Thread(target=flip)
    flipper.start()
    reads, refused = [], 0
    try:
        for _ in range(2000):
            try:
                with policy.open_file(link) as handle:
                    reads.append(handle.read())
            except PathNotAllowedError:
                refused += 1
            except FileNotFoundError:
                pass
    finally:
        stop.set()
        flipper.join()
    assert b"secret" not in reads and reads and refused  # both outcomes happened, never the outside bytes


def test_a_collection_manifest_that_is_a_symlink_outside_is_refused(places, tiny_collection_dir, tmp_path):
    inside, outside, _ = places
    shutil.copytree(tiny_collection_dir, outside / "real")
    (inside / "c").mkdir()
    os.symlink(outside / "real" / "collection.json", inside / "c" / "collection.json")
    home = DataHome(tmp_path / "home").ensure()
    policy = PathPolicy(home.root, (inside.resolve(), home.root), home.config_file)
    with pytest.raises(PathNotAllowedError, match=r"collection\.json.*outside the allowed roots"):
        open_for_user(inside / "c", home=home, policy=policy)


def test_checkpoint_tensors_are_read_through_the_policy_after_the_checkpoint_was_opened(places, tiny_collection_dir):
    """A checkpoint located (header read, inside the roots) and swapped for a link to an outside copy before its
    tensors are read: the read opens the file through the policy, whose descriptor check refuses it."""
    inside, outside, _ = places
    pool = inside / "pool"
    shutil.copytree(tiny_collection_dir, pool)
    home = DataHome(inside / "home").ensure()
    policy = PathPolicy(home.root, (inside.resolve(),), home.config_file)
    collection = open_for_user(pool, home=home, policy=policy)
    task = collection.task_names[0]
    lazy = collection.finetuned_lazy(task)
    lazy.load()  # inside: reads
    weights = lazy.path
    shutil.copy(weights, outside / weights.name)
    weights.unlink()
    os.symlink(outside / weights.name, weights)
    with pytest.raises(PathNotAllowedError, match="outside the allowed roots"):
        lazy.load()
