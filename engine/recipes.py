"""A merge recipe: everything needed to reproduce a merged checkpoint, stored beside it as JSON."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MergeRecipe(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: Literal[1] = 1
    collection: str                                   # path of the collection manifest
    pretrained_sha256: str
    tasks: tuple[str, ...]
    variant: str = "standard"
    method: str
    params: dict[str, float | list[float]] = {}
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
