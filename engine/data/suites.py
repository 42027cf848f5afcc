"""The field's task suites, TA8, TALL14 and TALL20, and each task's class names, prompt templates and aliases.

TA8 is task_vectors' eight tasks (Ilharco et al., ICLR'23); TALL14 and TALL20 add six and twelve more
(Wang et al., "Localizing Task Information for Improved Model Merging and Compression", ICML'24). The data
live in suites.json beside this module: per task the class names (in label order) and the str.format
templates ("{}" for the class name) the published zero-shot heads were built from, taken from FusionBench
0.2.33's task definitions `fusion_bench/tasks/clip_classification/<task>.py` (TA8's templates are also
task_vectors' `src/datasets/templates.py`), the Hugging Face dataset ids of FusionBench's configurations
(`fusion_bench_config/dataset/image_classification`), and the names other code bases give the task
(`stanford_cars`, `oxford-iiit-pet`, `rendered-sst2`, `emnist_letters`, ...). tests/test_suites.py checks
them against a fixture made from the fusion-bench package.

Labels follow FusionBench's (the Hugging Face datasets'): EMNIST letters has 26 classes, 0 = "A"; torchvision's
`EMNIST(split="letters")` numbers them 1..26 with an unused class 0, so mergelab's readers subtract one.

A dataset folder names its classes by folder: a suite task's folder names are turned into its class names
by the task's rule (SUN397 `a_abbey` → `abbey`, EuroSAT `AnnualCrop` → `annual crop land`, DTD `_` → space,
a class index such as GTSRB's `00012` → the 13th class name); other names are kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType

from engine.errors import DatasetError, SchemaError

SUITES_FILE = Path(__file__).with_name("suites.json")


@dataclass(frozen=True)
class SuiteTask:
    name: str  # task_vectors / TALL-masks spelling: SUN397, Cars, ..., EMNIST, RenderedSST2
    class_names: tuple[str, ...]  # in label order
    templates: tuple[str, ...]  # str.format templates with one "{}" for the class name
    aliases: tuple[str, ...]  # other code bases' names for it
    hub_ids: tuple[str, ...]  # Hugging Face dataset ids holding it ("tanganke/sun397")

    def display_name(self, folder: str) -> str:
        """A class folder's (or label's) name → the name put into the prompts (see the module docstring)."""
        if folder.isdigit() and int(folder) < len(self.class_names):
            return self.class_names[int(folder)]
        return _FOLDER_RULES.get(self.name, _unchanged)(folder)


@dataclass(frozen=True)
class Suite:
    name: str  # TA8, TALL14, TALL20
    tasks: tuple[str, ...]  # SuiteTask names, in the papers' order


@dataclass(frozen=True)
class SuiteMatch:
    """How a pool's task names meet a suite: which suite task each pool task is, and what is missing."""

    suite: Suite
    tasks: Mapping[str, str]  # pool task name → suite task name
    missing: tuple[str, ...]  # suite tasks the pool lacks

    @property
    def complete(self) -> bool:
        return not self.missing

    def describe(self) -> str:
        found = len(self.suite.tasks) - len(self.missing)
        if self.complete:
            return f"{self.suite.name} (all {found} tasks)"
        return f"{found} of {self.suite.name}'s {len(self.suite.tasks)} tasks (missing {', '.join(self.missing)})"


def _unchanged(folder: str) -> str:
    return folder


def _sun397_name(folder: str) -> str:
    """`a_abbey` or `/b/bakery/shop` → `abbey`, `bakery shop`: the letter prefix only sorts the folders."""
    name = re.sub(r"^/?[a-z][_/]", "", folder)
    return " ".join(name.replace("_", " ").replace("/", " ").split())


def _dtd_name(folder: str) -> str:
    return folder.replace("_", " ")


_EUROSAT_NAMES = MappingProxyType(
    {
        "AnnualCrop": "annual crop land",
        "Forest": "forest",
        "HerbaceousVegetation": "brushland or shrubland",
        "Highway": "highway or road",
        "Industrial": "industrial buildings or commercial buildings",
        "Pasture": "pasture land",
        "PermanentCrop": "permanent crop land",
        "Residential": "residential buildings or homes or apartments",
        "River": "river",
        "SeaLake": "lake or sea",
    }
)


def _eurosat_name(folder: str) -> str:
    """EuroSAT's folder names are CamelCase codes; the checkpoints' heads used these phrases."""
    return _EUROSAT_NAMES.get(folder, folder)


_FOLDER_RULES = MappingProxyType({"SUN397": _sun397_name, "DTD": _dtd_name, "EuroSAT": _eurosat_name})


@cache
def suite_tasks() -> Mapping[str, SuiteTask]:
    """Every task of the three suites by name (read once from suites.json)."""
    document = json.loads(SUITES_FILE.read_text(encoding="utf-8"))
    return MappingProxyType(
        {
            name: SuiteTask(
                name,
                tuple(entry["class_names"]),
                tuple(entry["templates"]),
                tuple(entry["aliases"]),
                tuple(entry["hub_ids"]),
            )
            for name, entry in document["tasks"].items()
        }
    )


@cache
def suites() -> Mapping[str, Suite]:
    """TA8, TALL14 and TALL20 by name."""
    document = json.loads(SUITES_FILE.read_text(encoding="utf-8"))
    return MappingProxyType({name: Suite(name, tuple(tasks)) for name, tasks in document["suites"].items()})


def _key(name: str) -> str:
    """Lower case, letters and digits only, and a Hugging Face owner dropped: `tanganke/stanford_cars` →
    `stanfordcars`."""
    return re.sub(r"[^a-z0-9]", "", name.rsplit("/", 1)[-1].lower())


@cache
def _aliases() -> Mapping[str, str]:
    table = {}
    for task in suite_tasks().values():
        for name in (task.name, *task.aliases, *task.hub_ids):
            table[_key(name)] = task.name
    return MappingProxyType(table)


def suite_task(name: str) -> SuiteTask | None:
    """The suite task called `name` (any case, `_`/`-`/space ignored, a trailing "Val" stripped, an owner/
    prefix dropped), or None."""
    key = _key(name)
    if key not in _aliases() and key.endswith("val"):
        key = key[:-3]
    canonical = _aliases().get(key)
    return None if canonical is None else suite_tasks()[canonical]


def match_suite(task_names: tuple[str, ...] | list[str]) -> SuiteMatch | None:
    """The smallest suite holding all of a pool's tasks, else the suite sharing most tasks with it; None when
    no pool task is a suite task."""
    mapped = {name: task.name for name in task_names if (task := suite_task(name)) is not None}
    if not mapped:
        return None
    found = set(mapped.values())
    ranked = sorted(suites().values(), key=lambda s: (-len(found & set(s.tasks)), len(s.tasks)))
    holding = [s for s in ranked if found <= set(s.tasks)]
    best = min(holding, key=lambda s: len(s.tasks)) if holding else ranked[0]
    missing = tuple(t for t in best.tasks if t not in found)
    return SuiteMatch(best, MappingProxyType({k: v for k, v in mapped.items() if v in best.tasks}), missing)


def suite_named(name: str) -> Suite:
    """TA8, TALL14 or TALL20 (any case)."""
    suite = suites().get(name.upper())
    if suite is None:
        raise SchemaError(name, "is not a suite", fix=f"choose one of {', '.join(suites())}")
    return suite


def require_suite(pool: str | Path, task_names: tuple[str, ...] | list[str], suite_name: str) -> SuiteMatch:
    """The pool's match with `suite_name`, every suite task present; else an error naming the missing tasks."""
    suite = suite_named(suite_name)
    mapped = {name: task.name for name in task_names if (task := suite_task(name)) is not None}
    missing = tuple(t for t in suite.tasks if t not in mapped.values())
    if missing:
        example = suite_tasks()[missing[0]].aliases[0]
        raise DatasetError(
            pool,
            f"lacks {len(missing)} of {suite.name}'s {len(suite.tasks)} tasks: {', '.join(missing)}",
            fix=f"add a fine-tuned checkpoint and a dataset for each (a name such as {example!r} is recognised), "
            "or choose a smaller suite",
        )
    return SuiteMatch(suite, MappingProxyType({k: v for k, v in mapped.items() if v in suite.tasks}), ())


def check_class_count(source: str | Path, task: SuiteTask, count: int) -> None:
    """A dataset's class count must be its suite task's: heads and labels index the same classes."""
    if count != len(task.class_names):
        raise DatasetError(
            source,
            f"has {count} classes, but {task.name} has {len(task.class_names)} in the suites (FusionBench's and "
            "the papers' heads)",
            fix=f"check that this is the {task.name} dataset, or name the task otherwise so the suite's class "
            "names are not applied",
        )
