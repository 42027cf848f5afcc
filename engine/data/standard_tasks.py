"""The eight task_vectors tasks (Ilharco et al., ICLR'23): their prompt templates and class names.

Zero-shot heads for the published fine-tuned checkpoints were built from these templates, so a task
named like one of them (`EuroSAT`, `eurosat`, `EuroSATVal`, `stanford_cars`, ...) gets the same
prompts and the same class display names from its folder names, unless its task.json says otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class StandardTask:
    name: str
    templates: tuple[str, ...]  # str.format templates with one "{}" for the class name
    display_name: Callable[[str], str]  # class folder / label name → the name put into the prompts


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


STANDARD_TASKS = MappingProxyType(
    {
        task.name: task
        for task in (
            StandardTask("SUN397", ("a photo of a {}.", "a photo of the {}."), _sun397_name),
            StandardTask(
                "Cars",
                (
                    "a photo of a {}.",
                    "a photo of the {}.",
                    "a photo of my {}.",
                    "i love my {}!",
                    "a photo of my dirty {}.",
                    "a photo of my clean {}.",
                    "a photo of my new {}.",
                    "a photo of my old {}.",
                ),
                _unchanged,
            ),
            StandardTask(
                "RESISC45",
                (
                    "satellite imagery of {}.",
                    "aerial imagery of {}.",
                    "satellite photo of {}.",
                    "aerial photo of {}.",
                    "satellite view of {}.",
                    "aerial view of {}.",
                    "satellite imagery of a {}.",
                    "aerial imagery of a {}.",
                    "satellite photo of a {}.",
                    "aerial photo of a {}.",
                    "satellite view of a {}.",
                    "aerial view of a {}.",
                    "satellite imagery of the {}.",
                    "aerial imagery of the {}.",
                    "satellite photo of the {}.",
                    "aerial photo of the {}.",
                    "satellite view of the {}.",
                    "aerial view of the {}.",
                ),
                _unchanged,
            ),
            StandardTask(
                "EuroSAT",
                (
                    "a centered satellite photo of {}.",
                    "a centered satellite photo of a {}.",
                    "a centered satellite photo of the {}.",
                ),
                _eurosat_name,
            ),
            StandardTask("SVHN", ('a photo of the number: "{}".',), _unchanged),
            StandardTask(
                "GTSRB",
                (
                    'a zoomed in photo of a "{}" traffic sign.',
                    'a centered photo of a "{}" traffic sign.',
                    'a close up photo of a "{}" traffic sign.',
                ),
                _unchanged,
            ),
            StandardTask("MNIST", ('a photo of the number: "{}".',), _unchanged),
            StandardTask(
                "DTD",
                (
                    "a photo of a {} texture.",
                    "a photo of a {} pattern.",
                    "a photo of a {} thing.",
                    "a photo of a {} object.",
                    "a photo of the {} texture.",
                    "a photo of the {} pattern.",
                    "a photo of the {} thing.",
                    "a photo of the {} object.",
                ),
                _dtd_name,
            ),
        )
    }
)

_ALIASES = MappingProxyType(
    {  # normalised name (lower case, letters and digits) → STANDARD_TASKS key
        **{name.lower(): name for name in STANDARD_TASKS},
        "stanfordcars": "Cars",
        "eurosatsplits": "EuroSAT",
        "nwpuresisc45": "RESISC45",
    }
)


def standard_task(name: str) -> StandardTask | None:
    """The standard task called `name` (any case, `_`/`-`/space ignored, a trailing "Val" stripped), or None."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    if key not in _ALIASES and key.endswith("val"):
        key = key[:-3]
    canonical = _ALIASES.get(key)
    return None if canonical is None else STANDARD_TASKS[canonical]
