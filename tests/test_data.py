import json

import pytest
import torch
from PIL import Image

from engine.data import interactive_indices, load_task, save_task
from engine.errors import DatasetError
from tests.builders import tiny_task


def test_packed_task_round_trip(tmp_path):
    task = tiny_task("colour", ("red", "green", "blue"), seed=1)
    save_task(task, tmp_path / "colour.safetensors")
    back = load_task(tmp_path / "colour.safetensors")
    assert back.class_names == task.class_names and back.templates == task.templates
    for split in ("train", "val", "test"):
        assert torch.equal(back.split(split).images, task.split(split).images)
        assert torch.equal(back.split(split).labels, task.split(split).labels)


def test_image_folder_format(tmp_path):
    colours = {"red": (255, 0, 0), "blue": (0, 0, 255)}
    for split in ("train", "test"):
        for name, rgb in colours.items():
            folder = tmp_path / "task" / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (20 + i, 24), rgb).save(folder / f"{i}.png")
    (tmp_path / "task" / "task.json").write_text(json.dumps({"templates": ["a {} square"]}))
    task = load_task(tmp_path / "task", image_size=16)
    test = task.split("test")
    assert task.class_names == ("blue", "red") and task.templates == ("a {} square",)
    assert test.images.shape == (6, 3, 16, 16) and test.images.dtype == torch.uint8
    assert test.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert int(test.images[0, 2].float().mean()) == 255 and int(test.images[3, 0].float().mean()) == 255
    with pytest.raises(DatasetError, match="different sizes"):
        load_task(tmp_path / "task")


def test_missing_folder_and_bad_files(tmp_path):
    with pytest.raises(DatasetError, match="nowhere: no such task file or folder"):
        load_task(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="has none of the folders train/"):
        load_task(tmp_path / "empty")
    (tmp_path / "broken" / "test" / "cat").mkdir(parents=True)
    (tmp_path / "broken" / "test" / "dog").mkdir(parents=True)
    (tmp_path / "broken" / "test" / "cat" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"x\.png: is not a readable image"):
        load_task(tmp_path / "broken", image_size=8)


def test_interactive_indices_are_fixed_and_sorted():
    a, b = interactive_indices(500), interactive_indices(500)
    assert torch.equal(a, b) and len(a) == 128 and torch.all(a[1:] > a[:-1])
    assert len(interactive_indices(50)) == 50
