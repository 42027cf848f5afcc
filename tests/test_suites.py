"""The suites (TA8, TALL14, TALL20) as data, checked against FusionBench's published task definitions, and the
validation split profiles against the papers' own `random_split` / stored-index calls."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch.utils.data import Subset, random_split

from engine.cli import main
from engine.data.splits import PROFILES, profile, read_indices, split_indices, with_validation
from engine.data.suites import match_suite, require_suite, suite_task, suite_tasks, suites
from engine.data.tasks import LabelledImages, TaskData
from engine.errors import DatasetError, ParameterError, SchemaError
from tests.builders import TINY_ARCH
from tests.foreign import tiny_source, write_image_folders, write_pool

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "fusion_bench_clip_tasks.json").read_text(encoding="utf-8"))
# suite task → (FusionBench task module, FusionBench dataset configuration name)
FUSION_BENCH_NAMES = {
    "SUN397": ("sun397", "sun397"),
    "Cars": ("stanford_cars", "stanford-cars"),
    "RESISC45": ("resisc45", "resisc45"),
    "EuroSAT": ("eurosat", "eurosat"),
    "SVHN": ("svhn", "svhn"),
    "GTSRB": ("gtsrb", "gtsrb"),
    "MNIST": ("mnist", "mnist"),
    "DTD": ("dtd", "dtd"),
    "CIFAR100": ("cifar100", "cifar100"),
    "STL10": ("stl10", "stl10"),
    "Flowers102": ("flower102", "oxford_flowers102"),
    "OxfordIIITPet": ("oxford_iiit_pet", "oxford-iiit-pet"),
    "PCAM": ("pcam", "pcam"),
    "FER2013": ("fer2013", "fer2013"),
    "EMNIST": ("emnist_letters", "emnist_letters"),
    "CIFAR10": ("cifar10", "cifar10"),
    "Food101": ("food101", "food101"),
    "FashionMNIST": ("fashion_mnist", "fashion_mnist"),
    "RenderedSST2": ("rendered_sst2", "rendered-sst2"),
    "KMNIST": ("kmnist", "kmnist"),
}


def test_every_suite_task_has_its_published_class_count():
    tall20 = suites()["TALL20"].tasks
    counts = [len(suite_tasks()[name].class_names) for name in tall20]
    assert counts == [397, 196, 45, 10, 10, 43, 10, 47, 100, 10, 102, 37, 2, 7, 26, 10, 101, 10, 2, 10]
    assert suites()["TA8"].tasks == tall20[:8] and suites()["TALL14"].tasks == tall20[:14]
    assert tall20[8:14] == ("CIFAR100", "STL10", "Flowers102", "OxfordIIITPet", "PCAM", "FER2013")
    assert all(len(set(suite_tasks()[name].class_names)) == len(suite_tasks()[name].class_names) for name in tall20)


def test_class_names_and_templates_match_fusion_bench():
    assert set(FUSION_BENCH_NAMES) == set(suites()["TALL20"].tasks)
    for name, (module, config) in FUSION_BENCH_NAMES.items():
        task, published = suite_tasks()[name], FIXTURE["tasks"][module]
        assert list(task.class_names) == published["classnames"], name
        assert list(task.templates) == published["templates"], name
        assert suite_task(config).name == name and suite_task(module).name == name
        hub_id = FIXTURE["datasets"].get(config, {}).get("train")
        assert hub_id is None or hub_id in task.hub_ids, name  # FER2013 loads through its own function
    assert FIXTURE["source"] == "fusion-bench==0.2.33"


def test_aliases_of_each_ecosystem():
    names = {
        "stanford_cars": "Cars",
        "StanfordCars": "Cars",
        "oxford-iiit-pet": "OxfordIIITPet",
        "OxfordIIITPet": "OxfordIIITPet",
        "rendered-sst2": "RenderedSST2",
        "RenderedSST2": "RenderedSST2",
        "emnist_letters": "EMNIST",
        "EMNISTVal": "EMNIST",
        "oxford_flowers102": "Flowers102",
        "tanganke/sun397": "SUN397",
        "1aurent/PatchCamelyon": "PCAM",
        "zalando-datasets/fashion_mnist": "FashionMNIST",
        "FashionMNIST": "FashionMNIST",
        "KMNISTVal": "KMNIST",
    }
    assert {alias: suite_task(alias).name for alias in names} == names
    assert suite_task("imagenet") is None and suite_task("digits") is None


def test_emnist_letters_label_convention():
    """torchvision's EMNIST(split="letters") numbers the letters 1..26 under an unused class 0 ('N/A'); the
    suite, like the Hugging Face dataset and FusionBench's heads, has 26 classes with 0 = "A"."""
    emnist = suite_task("emnist_letters")
    assert len(emnist.class_names) == 26 and emnist.class_names[0] == "A" and emnist.class_names[-1] == "Z"
    torchvision_letters = torchvision.datasets.EMNIST.classes_split_dict["letters"]
    assert len(torchvision_letters) == 27 and torchvision_letters[0] == "N/A"
    assert [torchvision_letters[label].upper() for label in range(1, 27)] == list(emnist.class_names)


def test_match_suite_and_missing_tasks():
    ta8_pool = ["SUN397", "stanford_cars", "RESISC45", "EuroSATVal", "SVHN", "GTSRB", "MNIST", "DTD"]
    match = match_suite(ta8_pool)
    assert match.suite.name == "TA8" and match.complete and match.tasks["stanford_cars"] == "Cars"
    assert match.describe() == "TA8 (all 8 tasks)"
    partial = match_suite(ta8_pool[:7] + ["pcam"])
    assert partial.suite.name == "TALL14" and partial.missing == (
        "DTD",
        "CIFAR100",
        "STL10",
        "Flowers102",
        "OxfordIIITPet",
        "FER2013",
    )
    assert match_suite(["digits", "shapes"]) is None
    assert require_suite("pool", ta8_pool, "ta8").complete
    with pytest.raises(DatasetError, match=r"^my-pool: lacks 1 of TA8's 8 tasks: DTD\. Fix: add a fine-tuned"):
        require_suite("my-pool", ta8_pool[:7], "TA8")
    with pytest.raises(SchemaError, match="TA9: is not a suite"):
        require_suite("my-pool", ta8_pool, "TA9")


def _known_order(count: int) -> LabelledImages:
    """Image i holds the value i % 256 in its first pixel and has the label i, so every index is traceable."""
    images = torch.zeros((count, 3, 2, 2), dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(count) % 256
    return LabelledImages(images, torch.arange(count))


def _task(name: str, **splits: LabelledImages) -> TaskData:
    return TaskData(name, tuple(str(i) for i in range(100_000)), ("{}",), splits)


@pytest.mark.parametrize(("count", "expected_val"), [(1234, 123), (60_000, 5000)])
def test_task_vectors_profile_is_their_random_split(count, expected_val):
    task = with_validation(_task("SVHN", train=_known_order(count), test=_known_order(7)), "tall")
    reference_train, reference_val = random_split(
        range(count), [count - expected_val, expected_val], generator=torch.Generator().manual_seed(0)
    )
    assert task.splits["val"].labels.tolist() == list(reference_val)
    assert task.splits["train"].labels.tolist() == list(reference_train)
    assert task.splits["test"].labels.tolist() == list(range(7))
    assert torch.equal(task.splits["val"].images[:, 0, 0, 0], task.splits["val"].labels.to(torch.uint8))


def test_task_vectors_mnist_val_pins_their_assertion():
    """task_vectors' registry asserts trainset.indices[0] == 36044 for MNISTVal (60,000 train images)."""
    drawn = split_indices(profile("task_vectors"), 60_000)
    assert int(drawn.kept[0]) == 36044 and len(drawn.val) == 5000


def test_fusion_bench_profile_is_its_train_validation_split():
    count = 60_000  # no cap: int(0.1 · 60,000) = 6,000 val images
    task = with_validation(_task("mnist", train=_known_order(count)), "fusion_bench")
    reference_train, reference_val = random_split(
        range(count), [count - 6000, 6000], generator=torch.Generator().manual_seed(0)
    )
    assert task.splits["val"].labels.tolist() == list(reference_val)
    assert task.splits["train"].labels.tolist() == list(reference_train)
    with pytest.raises(DatasetError, match="PCAM: has no fusion_bench validation split"):
        with_validation(_task("PCAM", train=_known_order(10)), "fusion_bench")


def test_knots_profile_takes_stored_indices_of_test(tmp_path):
    count = 250
    shuffled = torch.randperm(count, generator=torch.Generator().manual_seed(5))
    torch.save(shuffled, tmp_path / "gtsrb_shuffled_idxs.pt")
    test_set = list(range(count))
    task = with_validation(
        _task("GTSRB", train=_known_order(9), test=_known_order(count)),
        "knots",
        indices_file=tmp_path / "gtsrb_shuffled_idxs.pt",
    )
    num_valid = int(count * 0.2)
    assert task.splits["val"].labels.tolist() == list(Subset(test_set, shuffled[:num_valid].tolist()))
    assert task.splits["test"].labels.tolist() == list(Subset(test_set, shuffled[num_valid:].tolist()))
    assert task.splits["train"].labels.tolist() == list(range(9))
    own = _task("DTD", val=_known_order(3), test=_known_order(4))
    assert with_validation(own, "knots") is own  # DTD keeps its own val split under KnOTS
    eurosat = with_validation(_task("EuroSAT", train=_known_order(30), test=_known_order(4)), "task_vectors")
    assert len(eurosat.splits["val"]) == 3  # no val folder of its own: drawn from train like the others
    np.save(tmp_path / "short.npy", np.arange(count - 1))
    with pytest.raises(DatasetError, match=r"short\.npy: holds 249 indices that are not a permutation"):
        read_indices(tmp_path / "short.npy", count)
    with pytest.raises(ParameterError, match="knots: draws val by stored indices"):
        with_validation(_task("GTSRB", test=_known_order(count)), "knots")
    with pytest.raises(ParameterError, match="random: is not a validation split profile"):
        profile("random")
    assert set(PROFILES) == {"task_vectors", "fusion_bench", "knots"}


@pytest.fixture
def suite_pool(tmp_path, data_home):
    """A task_vectors-style pool of two TA8 tasks (tiny model), its folder listed as an allowed root."""
    tasks = {"EuroSAT": ("AnnualCrop", "Forest"), "mnist": ("0", "1")}
    source = tiny_source(TINY_ARCH, tasks, seed=3)
    root = write_pool(
        tmp_path / "pool",
        "task_vectors",
        architecture=TINY_ARCH,
        pretrained=source["pretrained"],
        finetuned=source["finetuned"],
        heads=source["heads"],
    )
    write_image_folders(root, tasks, per_class=1, size=8)
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(tmp_path)]}))
    return root


def test_cli_suites_and_pool_show_name_the_suite(suite_pool, capsys):
    assert main(["suites"]) == 0
    listing = capsys.readouterr().out
    assert "TALL20  20 tasks: SUN397, Cars" in listing and "knots         KnOTS: 20% of test" in listing
    assert main(["suites", "tall14"]) == 0
    assert "  OxfordIIITPet   37 classes  1 templates  timm/oxford-iiit-pet" in capsys.readouterr().out
    assert main(["pool", "show", str(suite_pool)]) == 0
    missing = "SUN397, Cars, RESISC45, SVHN, GTSRB, DTD"
    assert f"suite: 2 of TA8's 8 tasks (missing {missing}); checkpoints: task_vectors / TALL masks" in (
        capsys.readouterr().out
    )
    assert main(["pool", "show", str(suite_pool), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["family"] == "task_vectors / TALL masks" and shown["suite"].startswith("2 of TA8's 8 tasks")
    assert main(["suites", "TA8", "--pool", str(suite_pool)]) == 2
    assert f"pool: lacks 6 of TA8's 8 tasks: {missing}. Fix: add a fine-tuned checkpoint" in capsys.readouterr().err
