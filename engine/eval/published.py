"""The papers' numbers as data: published mean test accuracies per suite × architecture × checkpoint release.

A merge's accuracy depends on the fine-tunes as much as on the method: Iso-C scores 86.3 on ViT-B/32 × TA8 with
the TALL-masks checkpoints (Iso paper, Table 1) and 82.8 with FusionBench's own (its docs/modelpool/clip_vit.md).
So a published number is beside ours only when the pool's checkpoint family (`engine.pool.info.checkpoint_family`)
is a release the number was measured on; the researcher's own fine-tunes are "family unknown: not comparable".

published.json beside this module holds the entries (percent, as the sources print them) and their sources:
- the Iso paper's Table 1 (Marczak et al., ICML 2025): TA8, TALL14, TALL20 × ViT-B/32, B/16, L/14, absolute and
  normalized, TALL-masks checkpoints (the TSV paper, Gargiulo et al., CVPR 2025, uses the same checkpoints and
  its TSV-M numbers are the ones Table 1 repeats);
- FusionBench's documentation (and its pull request #52 for TSV-M): ViT-B/32 × TA8 on its Hugging Face fine-tunes;
- WUDI-Merging's README (its baselines as in the AdaMerging paper) and aTLAS' fine-tuned accuracies: ViT-B/32 × TA8
  on task_vectors' original fine-tunes.
Choice: `checkpoint_family` cannot tell the TALL-masks release from task_vectors' (both are open_clip pickles), so
that family is shown both releases' rows, each labelled; the fine-tuned row (92.8 vs 90.5 on B/32 × 8) says which.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from engine.errors import SchemaError

PUBLISHED_FILE = Path(__file__).with_name("published.json")
UNKNOWN_FAMILY = "family unknown: not comparable"
# checkpoint family (engine.pool.info.checkpoint_family) → the published checkpoint releases it may be
FAMILY_RELEASES: Mapping[str, tuple[str, ...]] = {
    "FusionBench": ("FusionBench",),
    "task_vectors / TALL masks": ("TALL masks", "task_vectors"),
}


@dataclass(frozen=True)
class Source:
    paper: str
    table: str

    def describe(self) -> str:
        return f"{self.paper}, {self.table}"


@dataclass(frozen=True)
class PublishedRow:
    suite: str  # TA8, TALL14, TALL20
    architecture: str  # open_clip name: ViT-B-32, ViT-B-16, ViT-L-14
    checkpoints: str  # the release the number was measured on: "TALL masks", "task_vectors", "FusionBench"
    method: str  # mergelab's method name where it has the method (task_arithmetic, iso_c, ...), else the row's own
    label: str  # the method as the source names it
    accuracy: float  # percent, mean over the suite's tasks
    normalized: float | None  # percent, None where the source reports none
    source: Source


@dataclass(frozen=True)
class Published:
    """The published rows beside one pool, or why there are none (`reason`)."""

    suite: str
    architecture: str
    family: str
    rows: tuple[PublishedRow, ...]
    reason: str | None = None

    @property
    def comparable(self) -> bool:
        return bool(self.rows)


@dataclass(frozen=True)
class Score:
    """Our mean test accuracy and mean normalized accuracy, as fractions (what EvalResult reports)."""

    accuracy: float
    normalized: float | None = None


@dataclass(frozen=True)
class Difference:
    """Ours − theirs in percentage points, for one method and one published row."""

    row: PublishedRow
    ours: Score
    accuracy: float
    normalized: float | None  # None where either side has no normalized accuracy


@cache
def published_rows() -> tuple[PublishedRow, ...]:
    """Every entry of published.json (read once)."""
    doc = json.loads(PUBLISHED_FILE.read_text(encoding="utf-8"))
    sources = {key: Source(s["paper"], s["table"]) for key, s in doc["sources"].items()}
    rows = []
    for i, entry in enumerate(doc["entries"]):
        if entry["source"] not in sources or entry["checkpoints"] not in doc["checkpoints"]:
            raise SchemaError(
                PUBLISHED_FILE,
                f"entry {i} names source {entry['source']!r} or checkpoints {entry['checkpoints']!r} not described",
                fix="add it under 'sources' / 'checkpoints'",
            )
        rows.append(PublishedRow(**{**entry, "source": sources[entry["source"]]}))
    return tuple(rows)


def published(suite: str, architecture: str, family: str) -> Published:
    """The published rows for a pool of this suite, architecture and checkpoint family, in the file's order."""
    releases = FAMILY_RELEASES.get(family)
    if releases is None:
        return Published(suite, architecture, family, (), UNKNOWN_FAMILY)
    rows = tuple(
        r for r in published_rows() if r.suite == suite and r.architecture == architecture and r.checkpoints in releases
    )
    reason = None if rows else f"no published numbers for {suite} on {architecture} with {family} checkpoints"
    return Published(suite, architecture, family, rows, reason)


def differences(ours: Mapping[str, Score], theirs: Published) -> tuple[Difference, ...]:
    """Ours − theirs for every published row whose method we ran (`ours`: method → Score)."""
    out = []
    for row in theirs.rows:
        score = ours.get(row.method)
        if score is None:
            continue
        normalized = None
        if score.normalized is not None and row.normalized is not None:
            normalized = round(100 * score.normalized - row.normalized, 2)
        out.append(Difference(row, score, round(100 * score.accuracy - row.accuracy, 2), normalized))
    return tuple(out)
