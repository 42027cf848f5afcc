"""Merge recipes: a typed, validated description of one merge that the CLI, the dashboard and the
run log share. Files are JSON or YAML (read with yaml.safe_load: data only, no objects):

    collection: assets/zoo          # folder with collection.json (relative to the recipe file)
    tasks: [digits, faces, size]    # default: every task of the collection
    variant: standard
    method: task_arithmetic
    params: {lam: 0.3}              # or lam: [0.2, 0.4, 0.3], one per task
    evaluate: test                  # optional: split to evaluate the merge on
    output: ta-three                # optional: file name under <data home>/exports

`python -m engine run recipe.yaml` merges, exports, evaluates and records a run-log row.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.errors import ParameterError, SchemaError, UnknownMethodError
from engine.home import nesting, read_document
from engine.merge import get_method


class MergeRecipe(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: Literal[1] = 1
    collection: str  # path of the collection folder or manifest
    pretrained_sha256: str | None = None  # checked against the collection when given
    tasks: tuple[str, ...] = ()  # empty: all of the collection's tasks
    variant: str = "standard"
    variants: dict[str, str] = {}  # per-task checkpoint names overriding `variant`
    method: str = "task_arithmetic"
    params: dict[str, float | list[float]] = {}
    evaluate: Literal["train", "val", "test", "interactive"] | None = None
    output: str | None = None
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @field_validator("method")
    @classmethod
    def _known_method(cls, name: str) -> str:
        try:
            get_method(name)
        except UnknownMethodError as exc:
            raise ValueError(str(exc)) from exc  # reported as a field error of the recipe
        return name


def load_recipe(path: Path) -> MergeRecipe:
    """Parse and validate a recipe file; the collection path is resolved against the file's folder."""
    path = Path(path)
    if not path.exists():  # a folder or a pipe is refused by name when read
        raise SchemaError(path, "no such recipe file", fix="check the path")
    text = read_document(path, fix="write the recipe as UTF-8 JSON or YAML (see engine/runs/recipes.py)")
    recipe = parse_recipe(text, source=str(path))
    collection = Path(recipe.collection)
    if not collection.is_absolute():
        recipe = recipe.model_copy(update={"collection": str((path.parent / collection).resolve())})
    return recipe


def parse_recipe(text: str, *, source: str = "recipe", defaults: Mapping[str, object] | None = None) -> MergeRecipe:
    """Validate recipe text (YAML, of which JSON is a subset); errors name `source` and the field.

    `defaults` fill fields the text leaves out (the dashboard supplies its current collection).
    """
    try:
        data = _yaml(text)
    except ValueError as exc:
        raise SchemaError(
            source, f"not valid JSON or YAML ({exc})", fix="fix the syntax; see engine/runs/recipes.py for an example"
        ) from exc
    if not isinstance(data, dict):
        raise SchemaError(source, "must be a mapping of recipe fields", fix="see engine/runs/recipes.py for an example")
    try:
        recipe = MergeRecipe.model_validate({**(defaults or {}), **data})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "recipe"
        raise SchemaError(
            source,
            f"{where}: {first['msg']} (got {_SHORT.repr(first.get('input'))})",
            fix="correct that field; see engine/runs/recipes.py for the schema",
        ) from exc
    _check_params(recipe, source)
    return recipe


# The offending value, shortened: YAML aliases let 1 kB of text hold 9⁹ strings ("billion laughs"), whose full
# repr would take minutes and gigabytes.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 3, 4, 4, 60, 60


def _check_params(recipe: MergeRecipe, source: str) -> None:
    """Every parameter is one of the method's and inside its declared range (how many values a per-task one
    needs is checked when the collection's tasks are known)."""
    method = get_method(recipe.method)
    known = {p.name: p for p in method.params}
    unknown = sorted(set(recipe.params) - set(known))
    if unknown:
        raise UnknownMethodError(
            source,
            f"params.{unknown[0]}: is not a parameter of {method.name}",
            fix=f"use one of {sorted(known)}; see engine/merge/methods/",
        )
    for name, value in recipe.params.items():
        count = len(value) if isinstance(value, list) else 1
        try:
            known[name].resolve(value, num_tasks=max(count, 1), method=method.name)
        except ParameterError as exc:
            raise ParameterError(source, f"params.{name}: {exc.subject}: {exc.problem}", fix=exc.fix) from exc


def _yaml(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except RecursionError as exc:  # the composer recurses once per level of nesting
        raise ValueError(nesting(exc)) from exc
    except yaml.YAMLError as exc:
        raise ValueError(str(exc).splitlines()[0]) from exc
