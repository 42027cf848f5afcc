"""The TALL20 datasets in the files their releases ship, each written small in the real format (scipy .mat,
idx bytes, CIFAR/STL10 binary records, HDF5 by h5py, CSV, PPM/JPEG/PNG by PIL) and read back with the right
image, label and class name for a known item."""

import gzip
import os
import pickle
import struct

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from engine.data import load_task
from engine.data.suites import suite_task
from engine.errors import DatasetError


def _names(task) -> tuple[str, ...]:
    return suite_task(task).class_names


def _idx(path, array: np.ndarray, *, compress: bool = False) -> None:
    data = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    data += array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(f"{path}.gz", "wb") if compress else open(path, "wb") as handle:
        handle.write(data)


def test_svhn_mat(tmp_path):
    images = np.zeros((32, 32, 3, 2), dtype=np.uint8)
    images[0, 1, :, 1] = (5, 6, 7)  # image 1, row 0, column 1
    (tmp_path / "svhn").mkdir()
    scipy.io.savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": images, "y": np.array([[10], [3]])})
    task = load_task(tmp_path / "svhn", name="SVHN")
    test = task.split("test")
    assert test.labels.tolist() == [0, 3] and task.class_names[3] == "3"  # label 10 is the digit 0
    assert test.images.shape == (2, 3, 32, 32) and test.images[1, :, 0, 1].tolist() == [5, 6, 7]
    assert task.templates == ('a photo of the number: "{}".',)


@pytest.mark.parametrize("task_name", ["MNIST", "FashionMNIST", "KMNIST"])
def test_mnist_family_idx(tmp_path, task_name):
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28) % 251
    _idx(tmp_path / task_name / "raw" / "train-images-idx3-ubyte", images, compress=True)
    _idx(tmp_path / task_name / "raw" / "train-labels-idx1-ubyte", np.array([4, 0, 9]), compress=True)
    task = load_task(tmp_path / task_name)
    train = task.split("train")
    assert train.labels.tolist() == [4, 0, 9] and train.images.shape == (3, 3, 28, 28)
    assert train.images[2, :, 1, 2].tolist() == [images[2, 1, 2]] * 3
    assert task.class_names == _names(task_name) and task.class_names[9] == _names(task_name)[9]
    raw = tmp_path / task_name / "raw" / "train-images-idx3-ubyte"
    _idx(raw, images)
    raw.write_bytes(raw.read_bytes()[:-10])
    (tmp_path / task_name / "raw" / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: holds 2342 bytes .* truncated"):
        load_task(tmp_path / task_name)


def test_emnist_letters_labels_are_shifted_to_the_suite(tmp_path):
    """torchvision's letters split numbers A..Z as 1..26 (0 unused); the suite's heads as 0..25."""
    root = tmp_path / "EMNIST" / "raw"
    _idx(root / "emnist-letters-test-images-idx3-ubyte", np.full((2, 28, 28), 9))
    _idx(root / "emnist-letters-test-labels-idx1-ubyte", np.array([1, 26]))
    task = load_task(tmp_path / "EMNIST")
    assert task.split("test").labels.tolist() == [0, 25]
    assert [task.class_names[i] for i in task.split("test").labels] == ["A", "Z"]
    _idx(root / "emnist-letters-test-labels-idx1-ubyte", np.array([0, 26]))
    with pytest.raises(DatasetError, match="has the label 0, which the letters split leaves unused"):
        load_task(tmp_path / "EMNIST")


def test_cifar_binary_batches(tmp_path):
    image = np.arange(3072, dtype=np.int64).reshape(3, 32, 32) % 256  # R, G, B planes
    (tmp_path / "cifar10" / "cifar-10-batches-bin").mkdir(parents=True)
    for i in range(1, 6):
        records = bytes([i % 10]) + image.astype(np.uint8).tobytes()
        (tmp_path / "cifar10" / "cifar-10-batches-bin" / f"data_batch_{i}.bin").write_bytes(records * 2)
    task = load_task(tmp_path / "cifar10", name="CIFAR10")
    train = task.split("train")
    assert train.labels.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5] and task.class_names[1] == "automobile"
    assert train.images[0, :, 0, 5].tolist() == [5, (1024 + 5) % 256, (2048 + 5) % 256]
    (tmp_path / "cifar100" / "cifar-100-binary").mkdir(parents=True)
    (tmp_path / "cifar100" / "cifar-100-binary" / "test.bin").write_bytes(bytes([3, 98]) + bytes(3072))
    cifar100 = load_task(tmp_path / "cifar100", name="cifar-100")
    assert cifar100.split("test").labels.tolist() == [98] and cifar100.class_names[98] == "woman"
    (tmp_path / "cifar100" / "cifar-100-binary" / "test.bin").write_bytes(bytes([3, 98]) + bytes(3000))
    with pytest.raises(DatasetError, match=r"test\.bin: is 3002 bytes, not a whole number of 3074-byte records"):
        load_task(tmp_path / "cifar100", name="CIFAR100")


def test_stl10_binary_column_major(tmp_path):
    planes = np.zeros((2, 3, 96, 96), dtype=np.uint8)  # as stored: [N, C, W, H]
    planes[1, 0, 7, 2] = 200  # column 7, row 2 of image 1's red plane
    (tmp_path / "stl10_binary").mkdir()
    (tmp_path / "stl10_binary" / "test_X.bin").write_bytes(planes.tobytes())
    (tmp_path / "stl10_binary" / "test_y.bin").write_bytes(bytes([1, 10]))
    task = load_task(tmp_path, name="STL10")
    test = task.split("test")
    assert test.labels.tolist() == [0, 9] and task.class_names[9] == "truck"
    assert int(test.images[1, 0, 2, 7]) == 200  # [C, H, W]: row 2, column 7


def test_pcam_hdf5(tmp_path):
    x = np.zeros((3, 96, 96, 3), dtype=np.uint8)
    x[2, 4, 5] = (1, 2, 3)
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_valid_x.h5", "w") as f:
        f.create_dataset("x", data=x, chunks=(1, 96, 96, 3))
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_valid_y.h5", "w") as f:
        f.create_dataset("y", data=np.array([0, 1, 1], dtype=np.uint8).reshape(3, 1, 1, 1))
    task = load_task(tmp_path, name="PatchCamelyon")
    val = task.split("val")
    assert val.labels.tolist() == [0, 1, 1] and val.images[2, :, 4, 5].tolist() == [1, 2, 3]
    assert task.class_names[1] == "lymph node containing metastatic tumor tissue"


def test_fer2013_csv(tmp_path):
    face = " ".join(str(i % 256) for i in range(48 * 48))
    rows = ["emotion,pixels,Usage", f"4,{face},Training", f"6,{face},PrivateTest", f"0,{face},PublicTest"]
    (tmp_path / "fer2013.csv").write_text("\n".join(rows) + "\n")
    task = load_task(tmp_path, name="FER2013")
    assert task.class_names[int(task.split("train").labels[0])] == "sad"  # the CSV's 4 is Sad
    assert task.class_names[int(task.split("test").labels[0])] == "neutral"  # its 6 is Neutral
    assert task.split("val").labels.tolist() == [0] and int(task.split("train").images[0, 0, 1, 2]) == 50


def test_gtsrb_release(tmp_path):
    for folder, colour in (("00000", (10, 0, 0)), ("00042", (20, 0, 0))):
        (tmp_path / "GTSRB" / "Training" / folder).mkdir(parents=True)
        Image.new("RGB", (30, 32), colour).save(tmp_path / "GTSRB" / "Training" / folder / "00000_00000.ppm")
    (tmp_path / "GTSRB" / "Final_Test" / "Images").mkdir(parents=True)
    Image.new("RGB", (31, 29), (30, 0, 0)).save(tmp_path / "GTSRB" / "Final_Test" / "Images" / "00000.ppm")
    (tmp_path / "GT-final_test.csv").write_text("Filename;Width;Height;ClassId\n00000.ppm;31;29;14\n")
    task = load_task(tmp_path, name="GTSRB", image_size=16)
    train, test = task.split("train"), task.split("test")
    assert train.labels.tolist() == [0, 42] and test.labels.tolist() == [14]
    assert task.class_names[14] == _names("GTSRB")[14] and "stop" in task.class_names[14]
    assert int(test.images[0, 0, 8, 8]) == 30 and int(train.images[1, 0, 8, 8]) == 20


def test_cars_mat_annotations(tmp_path):
    for split in ("cars_train", "cars_test"):
        (tmp_path / split).mkdir()
        Image.new("RGB", (20, 10), (40, 50, 60)).save(tmp_path / split / "00001.jpg", quality=100)
    annotations = np.array([("00001.jpg", 196)], dtype=[("fname", "O"), ("class", "O")])
    (tmp_path / "devkit").mkdir()
    scipy.io.savemat(tmp_path / "devkit" / "cars_train_annos.mat", {"annotations": annotations})
    scipy.io.savemat(tmp_path / "cars_test_annos_withlabels.mat", {"annotations": annotations})
    task = load_task(tmp_path, name="stanford_cars", image_size=8)
    assert task.split("train").labels.tolist() == [195] and task.class_names[195] == _names("Cars")[195]
    assert abs(int(task.split("test").images[0, 1, 4, 4]) - 50) <= 3  # JPEG


def test_flowers102_mat_splits(tmp_path):
    (tmp_path / "jpg").mkdir()
    for number in (1, 2, 3):
        Image.new("RGB", (12, 12), (number, 0, 0)).save(tmp_path / "jpg" / f"image_{number:05d}.jpg", quality=100)
    scipy.io.savemat(tmp_path / "imagelabels.mat", {"labels": np.array([[77, 1, 102]])})
    scipy.io.savemat(
        tmp_path / "setid.mat", {"trnid": np.array([[3]]), "valid": np.array([[1]]), "tstid": np.array([[2]])}
    )
    task = load_task(tmp_path, name="oxford_flowers102")
    assert task.split("train").labels.tolist() == [101] and task.split("val").labels.tolist() == [76]
    assert task.class_names[0] == "pink primrose" and task.split("test").labels.tolist() == [0]


def test_resisc45_lists(tmp_path):
    for name in ("airplane_001.jpg", "sea_ice_700.jpg"):
        folder = tmp_path / "NWPU-RESISC45" / name.rsplit("_", 1)[0]
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (0, 0, 0)).save(folder / name)
    (tmp_path / "resisc45-train.txt").write_text("airplane_001.jpg\n")
    (tmp_path / "resisc45-test.txt").write_text("sea_ice_700.jpg\n")
    task = load_task(tmp_path, name="RESISC45")
    assert task.class_names[int(task.split("test").labels[0])] == "sea ice"
    assert task.class_names[int(task.split("train").labels[0])] == "airplane"
    (tmp_path / "resisc45-val.txt").write_text("lakes_002.jpg\n")
    with pytest.raises(DatasetError, match=r"resisc45-val\.txt, line 1: names the unknown class 'lakes'"):
        load_task(tmp_path, name="RESISC45")


def test_rendered_sst2_folders_with_valid(tmp_path):
    for split in ("train", "valid", "test"):
        for i, sentiment in enumerate(("negative", "positive")):
            (tmp_path / split / sentiment).mkdir(parents=True)
            Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / split / sentiment / "0.png")
    task = load_task(tmp_path, name="rendered-sst2")
    assert task.split("val").labels.tolist() == [0, 1] and task.class_names == ("negative", "positive")
    assert task.templates == ("a {} review of a movie.",)


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_python_batches_through_the_restricted_unpickler(tmp_path, protocol):
    """torchvision's download: pickled dicts of a numpy array and label lists (bytes keys, as Python 2 wrote)."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.zeros((2, 3072), dtype=np.uint8)
    data[1, 1024 + 33] = 77  # image 1, green plane, row 1, column 1
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": [9, 3], b"data": data, b"filenames": [b"a", b"b"]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
    task = load_task(tmp_path, name="CIFAR10")
    assert task.split("test").labels.tolist() == [9, 3] and task.class_names[9] == "truck"
    assert int(task.split("test").images[1, 1, 1, 1]) == 77
    (folder / "cifar-100-python").mkdir()
    (folder / "cifar-100-python" / "test").write_bytes(
        pickle.dumps({b"fine_labels": [42], b"coarse_labels": [8], b"data": data[:1]}, protocol=protocol)
    )
    assert load_task(folder, name="CIFAR100").split("test").labels.tolist() == [42]


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_cifar_batch_naming_another_global_is_refused(tmp_path):
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _Payload(), b"labels": [0]}))
    with pytest.raises(DatasetError, match=r"test_batch: is not a CIFAR python batch \(the global posix\.system"):
        load_task(tmp_path, name="CIFAR10")


def test_food101_and_oxford_pets_lists(tmp_path):
    food = tmp_path / "food-101"
    for entry in ("apple_pie/1005649", "waffles/17"):
        (food / "images" / entry).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (9, 9), (1, 2, 3)).save(food / "images" / f"{entry}.jpg")
    (food / "meta").mkdir()
    (food / "meta" / "train.txt").write_text("apple_pie/1005649\n")
    (food / "meta" / "test.txt").write_text("waffles/17\n")
    task = load_task(food, name="food101")
    assert task.class_names[int(task.split("test").labels[0])] == "waffles"
    assert task.split("train").labels.tolist() == [0] and task.class_names[0] == "apple pie"

    pets = tmp_path / "oxford-iiit-pet"
    (pets / "images").mkdir(parents=True)
    (pets / "annotations").mkdir()
    for image in ("Abyssinian_100", "yorkshire_terrier_7"):
        Image.new("RGB", (9, 9), (4, 5, 6)).save(pets / "images" / f"{image}.jpg")
    (pets / "annotations" / "trainval.txt").write_text("#Image CLASS-ID SPECIES BREED ID\nAbyssinian_100 1 1 1\n")
    (pets / "annotations" / "test.txt").write_text("yorkshire_terrier_7 37 2 25\n")
    task = load_task(pets)
    assert task.class_names[int(task.split("train").labels[0])] == "abyssinian"
    assert task.class_names[int(task.split("test").labels[0])] == "yorkshire_terrier"
    assert task.templates == ("a photo of a {}, a type of pet.",)
