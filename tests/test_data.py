import io
import json
import struct
import zlib

import pytest
import torch
from PIL import Image

from engine.data import load_task, save_task
from engine.data.suites import suite_task, suite_tasks, suites
from engine.data.tasks import DEFAULT_TEMPLATES, interactive_indices
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
    with pytest.raises(DatasetError, match=r"test/dog: is a class folder without images"):  # a class of none
        load_task(tmp_path / "broken", image_size=8)
    Image.new("RGB", (8, 8)).save(tmp_path / "broken" / "test" / "dog" / "y.png")
    with pytest.raises(DatasetError, match=r"x\.png: is not a readable image"):
        load_task(tmp_path / "broken", image_size=8)


def _png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header that declares width × height pixels (a decompression bomb of a few dozen bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


def _bmp_declaring(width: int, height: int) -> bytes:
    """A real 2×2 BMP whose header is edited to declare width × height pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, "BMP")
    data = bytearray(buffer.getvalue())
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


@pytest.mark.parametrize(
    "name,data", [("bomb.png", _png_declaring(100_000, 100_000)), ("bomb.bmp", _bmp_declaring(60_000, 60_000))]
)
def test_a_decompression_bomb_is_a_dataset_error_naming_the_image(tmp_path, name, data):
    """PIL refuses images above twice MAX_IMAGE_PIXELS with DecompressionBombError, which is no OSError: it
    must still come out as the image's DatasetError, not a traceback from inside PIL."""
    for label in ("cat", "dog"):
        folder = tmp_path / "task" / "test" / label
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "fine.png")
    (tmp_path / "task" / "test" / "dog" / name).write_bytes(data)
    with pytest.raises(DatasetError, match=rf"dog/{name}: declares more pixels than PIL decodes.*Fix: downscale"):
        load_task(tmp_path / "task", image_size=8)


def test_every_pil_decoding_error_names_the_image(tmp_path, monkeypatch):
    """PIL's plugins also raise SyntaxError, EOFError and struct.error on malformed data; each names the file."""
    (tmp_path / "task" / "test" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "task" / "test" / "cat" / "odd.png")
    for error in (SyntaxError("broken PNG file"), EOFError(), struct.error("unpack requires a buffer")):

        def broken(self, *args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(Image.Image, "convert", broken)
        with pytest.raises(DatasetError, match=rf"odd\.png: is not a readable image \({type(error).__name__}"):
            load_task(tmp_path / "task", image_size=8)


def test_interactive_indices_are_fixed_and_sorted():
    a, b = interactive_indices(500), interactive_indices(500)
    assert torch.equal(a, b) and len(a) == 128 and torch.all(a[1:] > a[:-1])
    assert len(interactive_indices(50)) == 50


def _image(path, rgb, size=(8, 8)):
    """A solid-colour image at `path` (format from the suffix); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


def _class_folders(root, classes, *, splits=("train", "test"), per_class=2, suffix=".png"):
    """<root>/<split>/<class>/<i><suffix>, each class a colour (R = 40 · (class index + 1))."""
    for split in splits:
        for c, name in enumerate(classes):
            for i in range(per_class):
                _image(root / split / name / f"{i}{suffix}", (40 * (c + 1), 10 * i, 0))
    return root


def test_csv_with_header_string_labels_and_split_column(tmp_path):
    _image(tmp_path / "img" / "a.png", (255, 0, 0))
    _image(tmp_path / "img" / "b.png", (0, 0, 255))
    _image(tmp_path / "img" / "c.png", (0, 255, 0))
    (tmp_path / "labels.csv").write_text(
        f"path,split,label\nimg/a.png,train,red\nimg/b.png,test,blue\n{tmp_path / 'img' / 'c.png'},test,red\n"
    )
    task = load_task(tmp_path / "labels.csv")
    assert task.name == "labels" and task.class_names == ("blue", "red")
    assert sorted(task.splits) == ["test", "train"]
    assert task.split("train").labels.tolist() == [1]
    assert task.split("test").labels.tolist() == [0, 1]  # rows keep their order
    assert task.split("test").images[:, :, 0, 0].tolist() == [[0, 0, 255], [0, 255, 0]]


def test_csv_without_header_integer_labels_and_classes_list(tmp_path):
    for i in range(3):
        _image(tmp_path / f"{i}.png", (i, 0, 0))
    (tmp_path / "digits.csv").write_text("0.png,2\n1.png,0\n\n2.png,1\n")
    (tmp_path / "classes.json").write_text(json.dumps(["zero", "one", "two"]))
    task = load_task(tmp_path / "digits.csv", image_size=4)
    assert list(task.splits) == ["test"]  # no split column: everything is test
    assert task.class_names == ("zero", "one", "two")
    test = task.split("test")
    assert test.labels.tolist() == [2, 0, 1] and test.images.shape == (3, 3, 4, 4)
    assert test.images[:, 0, 0, 0].tolist() == [0, 1, 2]
    (tmp_path / "classes.json").unlink()
    assert load_task(tmp_path / "digits.csv").class_names == ("0", "1", "2")  # indices name themselves


def test_folder_of_split_csvs_with_classes_mapping(tmp_path):
    root = tmp_path / "shapes"
    for name in ("sq", "ci", "tr"):
        _image(root / "pics" / f"{name}.png", (len(name), 0, 0))
    (root / "train.csv").write_text("path,label\npics/sq.png,square\npics/ci.png,circle\n")
    (root / "test.csv").write_text("pics/tr.png,circle\npics/sq.png,square\n")
    (root / "classes.json").write_text(json.dumps({"square": "a square", "circle": "a round circle", "x": "y"}))
    task = load_task(root)
    assert task.name == "shapes" and task.class_names == ("a round circle", "a square", "y")  # sorted keys
    assert task.split("train").labels.tolist() == [1, 0] and task.split("test").labels.tolist() == [0, 1]
    (root / "classes.json").write_text(json.dumps(["square", "circle"]))  # a list: labels name its entries
    task = load_task(root)
    assert task.class_names == ("square", "circle") and task.split("train").labels.tolist() == [0, 1]
    (root / "classes.json").unlink()
    assert load_task(root).class_names == ("circle", "square")


def test_classes_json_for_image_folders(tmp_path):
    root = _class_folders(tmp_path / "task", ("b_cls", "a_cls"))
    (root / "classes.json").write_text(json.dumps(["first", "second"]))
    assert load_task(root).class_names == ("first", "second")  # sorted folders: a_cls, b_cls
    (root / "classes.json").write_text(json.dumps({"a_cls": "A", "b_cls": "B"}))
    assert load_task(root).class_names == ("A", "B")
    (root / "classes.json").write_text(json.dumps({"a_cls": "A"}))
    with pytest.raises(DatasetError, match=r"classes\.json: has no display name for \['b_cls'\]"):
        load_task(root)
    (root / "classes.json").write_text(json.dumps(["only one"]))
    with pytest.raises(DatasetError, match="lists 1 class names for 2 class folders"):
        load_task(root)
    (root / "task.json").write_text(json.dumps({"class_names": ["x", "y"]}))  # task.json wins
    assert load_task(root).class_names == ("x", "y")


def test_standard_task_templates_and_class_names(tmp_path):
    eurosat = _class_folders(tmp_path / "EuroSAT", ("Forest", "AnnualCrop"))
    task = load_task(eurosat)
    assert task.class_names == ("annual crop land", "forest")
    assert task.templates == (
        "a centered satellite photo of {}.",
        "a centered satellite photo of a {}.",
        "a centered satellite photo of the {}.",
    )
    dtd = _class_folders(tmp_path / "textures-7", ("banded", "polka_dotted"))
    assert load_task(dtd).templates == DEFAULT_TEMPLATES and load_task(dtd).class_names == ("banded", "polka_dotted")
    task = load_task(dtd, name="DTDVal")
    assert task.name == "DTDVal" and task.class_names == ("banded", "polka dotted")
    assert len(task.templates) == 8 and task.templates[0] == "a photo of a {} texture."
    (dtd / "task.json").write_text(json.dumps({"templates": ["{} texture"]}))  # editable: task.json wins
    assert load_task(dtd, name="DTD").templates == ("{} texture",)


def test_suite_task_names_and_folder_rules():
    ta8 = {name: suite_tasks()[name] for name in suites()["TA8"].tasks}
    counts = {name: len(task.templates) for name, task in ta8.items()}
    assert counts == {"SUN397": 2, "Cars": 8, "RESISC45": 18, "EuroSAT": 3, "SVHN": 1, "GTSRB": 3, "MNIST": 1, "DTD": 8}
    assert all(t.count("{}") == 1 and t.format("x") != t for task in suite_tasks().values() for t in task.templates)
    assert len(set(ta8["RESISC45"].templates)) == 18
    assert [suite_task(n).name for n in ("stanford_cars", "CarsVal", "eurosat", "sun397", "GTSRBVal", "mnist")] == [
        "Cars",
        "Cars",
        "EuroSAT",
        "SUN397",
        "GTSRB",
        "MNIST",
    ]
    assert suite_task("digits") is None and suite_task("val") is None
    sun = suite_task("SUN397").display_name
    assert (
        sun("a_apartment_building_outdoor") == "apartment building outdoor" and sun("/b/bakery/shop") == "bakery shop"
    )
    gtsrb = suite_task("GTSRB").display_name  # class-index folders (GTSRB's 00000 ... 00042) → the class names
    assert gtsrb("00000") == "red and white circle 20 kph speed limit" and gtsrb("00043") == "00043"


def test_ppm_and_tif_are_images(tmp_path):
    root = tmp_path / "GTSRB"
    _image(root / "test" / "00000" / "a.ppm", (9, 0, 0))
    _image(root / "test" / "00001" / "b.tif", (0, 9, 0))
    test = load_task(root).split("test")
    assert test.labels.tolist() == [0, 1] and test.images[:, :, 0, 0].tolist() == [[9, 0, 0], [0, 9, 0]]


def test_cache_returns_identical_tensors_and_follows_file_changes(tmp_path, monkeypatch):
    root = _class_folders(tmp_path / "task", ("cat", "dog"), splits=("train", "val", "test"))
    cache = tmp_path / "cache"
    first = load_task(root, image_size=6, cache_dir=cache)
    assert len(list((cache / "tasks").glob("*.safetensors"))) == 1
    import engine.data.image_sets

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache holds this task")

    with monkeypatch.context() as patch:
        patch.setattr(engine.data.image_sets, "decode_image_set", no_decoding)
        again = load_task(root, image_size=6, cache_dir=cache)
    assert again.class_names == first.class_names and again.templates == first.templates
    for split in ("train", "val", "test"):
        assert torch.equal(again.split(split).images, first.split(split).images)
        assert torch.equal(again.split(split).labels, first.split(split).labels)
    assert torch.equal(first.split("test").images, load_task(root, image_size=6).split("test").images)

    _image(root / "test" / "cat" / "0.png", (1, 2, 3))  # same name and size, new pixels
    changed = load_task(root, image_size=6, cache_dir=cache)
    assert changed.split("test").images[0, :, 0, 0].tolist() == [1, 2, 3]
    assert first.split("test").images[0, :, 0, 0].tolist() != [1, 2, 3]
    assert torch.equal(changed.split("train").images, first.split("train").images)
    _image(root / "test" / "dog" / "9.png", (7, 7, 7))  # one more file
    added = load_task(root, image_size=6, cache_dir=cache)
    assert len(added.split("test")) == len(first.split("test")) + 1 and added.split("test").labels.tolist()[-1] == 1
    other_size = load_task(root, image_size=4, cache_dir=cache)
    assert other_size.split("test").images.shape[-1] == 4
    entries = sorted(p.name for p in (cache / "tasks").iterdir())
    assert len(entries) == 2 * 3, entries  # superseded entries are gone: one per image size (+ .json, .origin)
    assert not list((cache / "tasks").glob("*.part"))  # atomic writes leave no temporaries
    assert torch.equal(load_task(root, image_size=6, cache_dir=cache).split("test").images, added.split("test").images)


def test_cache_covers_csv_tasks_and_names(tmp_path):
    _image(tmp_path / "a.png", (5, 0, 0))
    _image(tmp_path / "b.png", (6, 0, 0))
    (tmp_path / "t.csv").write_text("a.png,x\nb.png,y\n")
    cache = tmp_path / "cache"
    assert load_task(tmp_path / "t.csv", cache_dir=cache).class_names == ("x", "y")
    (tmp_path / "classes.json").write_text(json.dumps({"x": "ex", "y": "why"}))
    task = load_task(tmp_path / "t.csv", cache_dir=cache, name="renamed")
    assert task.class_names == ("ex", "why") and task.name == "renamed"
    assert len(list((cache / "tasks").glob("*.safetensors"))) == 2  # other class names: both entries stay


@pytest.mark.parametrize(
    "rows, names, problem",
    [
        ("a.png,0\nmissing.png,1\n", None, r"row 3: names .*missing\.png, which does not exist"),
        ("a.png,cat\na.png,dog\na.png,cow\n", {"cat": "c", "dog": "d"}, r"row 4: has the unknown label 'cow'"),
        ("a.png,0\na.png,1\na.png,2\n", ["zero", "one"], r"row 4: has the label 2, outside 0\.\.1"),
        ("a.png,0\na.png,-1\n", None, r"row 3: has the label -1, outside"),
        ("a.png,0,test\na.png,1,holdout\n", None, r"row 3: has the split 'holdout'"),
        ("a.png,0\na.png\n", None, r"row 3: has 1 cells"),
    ],
)
def test_bad_csv_rows_name_the_file_and_row(tmp_path, rows, names, problem):
    _image(tmp_path / "a.png", (1, 1, 1))
    (tmp_path / "bad.csv").write_text("path,label" + (",split" if "test" in rows else "") + "\n" + rows)
    if names is not None:
        (tmp_path / "classes.json").write_text(json.dumps(names))
    with pytest.raises(DatasetError, match=r"bad\.csv, " + problem):
        load_task(tmp_path / "bad.csv")


def test_bad_csv_files(tmp_path):
    (tmp_path / "empty.csv").write_text("path,label\n")
    with pytest.raises(DatasetError, match=r"empty\.csv: has a header but no rows"):
        load_task(tmp_path / "empty.csv")
    (tmp_path / "wide.csv").write_text("a.png,1,test,extra\n")
    with pytest.raises(DatasetError, match=r"wide\.csv: has 4 columns"):
        load_task(tmp_path / "wide.csv")
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "train.csv").write_text("path,label,split\n")
    with pytest.raises(DatasetError, match=r"train\.csv: has the header path,label,split"):
        load_task(tmp_path / "split")  # a split file's split is its name
