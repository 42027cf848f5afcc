"""A benchmark's table: every method's setting chosen on val and its test accuracy, absolute and normalized, per
task and on average, with the published numbers for the same suite, architecture and checkpoints beside ours.

The layout is the papers' (the Iso paper's Table 1, the TSV paper's per-task tables): one row per method, one
column per task, then the average and the average normalized accuracy (per task merged / fine-tuned on test,
Ilharco et al., ICLR 2023), zero-shot and fine-tuned rows first. The published column is
`engine.eval.published` (its sources named under the table); a pool of unknown checkpoints reads
"family unknown: not comparable". Numbers are kept as fractions and printed as percent, one decimal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import SchemaError
from engine.eval.published import Published, PublishedRow, Score, Source, differences

SCHEMA_VERSION = 1
BENCHMARK_FILE = "benchmark.json"  # a collection's stored table, beside its manifest (the demo zoo ships one)
BASELINES = ("zero_shot", "finetuned")  # rows of every table, compared with the papers' rows of those names


@dataclass(frozen=True)
class MethodRow:
    """One method's result: the setting chosen on val and that setting's test accuracy."""

    method: str
    params: Mapping[str, Any]  # chosen on val ({} for the baselines)
    trials: int  # settings evaluated on val
    val_mean_normalized: float | None
    accuracy: Mapping[str, float]  # task → test accuracy (fraction)
    normalized: Mapping[str, float]  # task → test accuracy / the fine-tuned model's
    seconds: float = field(default=0.0, compare=False)  # its trials, timed: not part of what it found

    @property
    def mean_accuracy(self) -> float:
        return sum(self.accuracy.values()) / len(self.accuracy)

    @property
    def mean_normalized(self) -> float:
        return sum(self.normalized.values()) / len(self.normalized)


@dataclass(frozen=True)
class Benchmark:
    settings: Mapping[str, Any]  # what decides the numbers: a resumed run must have the same
    tasks: tuple[str, ...]
    planned: tuple[str, ...]  # the methods asked for, in order
    rows: tuple[MethodRow, ...]  # the baselines, then each finished method in order
    published: Published
    images: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # task → split → images evaluated
    names: Mapping[str, str] = field(default_factory=dict)  # method → the name the table shows

    @property
    def complete(self) -> bool:
        return all(m in self.methods_done for m in self.planned)

    @property
    def methods_done(self) -> tuple[str, ...]:
        return tuple(r.method for r in self.rows if r.method not in BASELINES)

    def row(self, method: str) -> MethodRow | None:
        return next((r for r in self.rows if r.method == method), None)

    def to_json(self) -> dict[str, Any]:
        ours = {r.method: Score(r.mean_accuracy, r.mean_normalized) for r in self.rows}
        return {
            "schema_version": SCHEMA_VERSION,
            "settings": dict(self.settings),
            "tasks": list(self.tasks),
            "planned": list(self.planned),
            "complete": self.complete,
            "images": {t: dict(v) for t, v in self.images.items()},
            "names": dict(self.names),
            "rows": [
                {**asdict(r), "mean_accuracy": r.mean_accuracy, "mean_normalized": r.mean_normalized} for r in self.rows
            ],
            "published": _published_json(self.published),
            "differences": [
                {
                    "method": d.row.method,
                    "checkpoints": d.row.checkpoints,
                    "accuracy": d.accuracy,
                    "normalized": d.normalized,
                }
                for d in differences(ours, self.published)
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, source: str = "benchmark JSON") -> Benchmark:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise SchemaError(source, "is not a mergelab benchmark (schema_version 1)", fix="give its JSON file")
        derived = ("mean_accuracy", "mean_normalized")
        rows = tuple(MethodRow(**{k: v for k, v in r.items() if k not in derived}) for r in data["rows"])
        return cls(
            data["settings"],
            tuple(data["tasks"]),
            tuple(data["planned"]),
            rows,
            _published_of(data["published"]),
            data.get("images", {}),
            data.get("names", {}),
        )


def _published_json(published: Published) -> dict[str, Any]:
    rows = [{**asdict(r), "source": asdict(r.source)} for r in published.rows]
    return {**asdict(published), "rows": rows}


def _published_of(data: Mapping[str, Any]) -> Published:
    rows = tuple(PublishedRow(**{**r, "source": Source(**r["source"])}) for r in data["rows"])
    return Published(data["suite"], data["architecture"], data["family"], rows, data.get("reason"))


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def markdown(benchmark: Benchmark) -> str:
    """The table as Markdown: methods × tasks (test accuracy, %), average, average normalized, and the
    published average beside ours with our difference; the settings and sources below."""
    names = benchmark.names
    published = _published_by_method(benchmark.published.rows)
    header = ["Method", *benchmark.tasks, "Avg.", "Norm.", "Published", "Δ"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in benchmark.rows:
        cells = [names.get(row.method, row.method), *(_percent(row.accuracy.get(t)) for t in benchmark.tasks)]
        cells += [_percent(row.mean_accuracy), _percent(row.mean_normalized if row.normalized else None)]
        theirs = published.get(row.method, ())
        cells.append(" / ".join(f"{p.accuracy:.1f} ({p.checkpoints})" for p in theirs) or "–")
        cells.append(" / ".join(f"{100 * row.mean_accuracy - p.accuracy:+.1f}" for p in theirs) or "–")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [part for note in _notes(benchmark) for part in ("", note)]  # a paragraph each
    return "\n".join([*lines, *notes]) + "\n"


def _published_by_method(rows: Sequence[PublishedRow]) -> dict[str, list[PublishedRow]]:
    out: dict[str, list[PublishedRow]] = {}
    for row in rows:
        out.setdefault(row.method, []).append(row)
    return out


def _notes(benchmark: Benchmark) -> list[str]:
    s, p = benchmark.settings, benchmark.published
    limit = s.get("limit_per_task")
    sampled = (
        f"at most {limit} images per task and split (stratified, seed {s.get('seed')})" if limit else "every image"
    )
    notes = [
        f"Test accuracy (%) on {sampled}; each method's setting chosen on val (mean normalized accuracy, the "
        "earlier setting on ties). Norm.: mean of per-task accuracy / the fine-tuned model's.",
        f"Pool: {s.get('collection')} ({s.get('architecture')}, checkpoints: {p.family}; suite: {p.suite or 'none'}).",
    ]
    if p.comparable:
        sources = sorted({r.source.describe() for r in p.rows})
        notes.append("Published: " + "; ".join(sources) + ". Δ: ours − published, points.")
    else:
        notes.append(f"Published: {p.reason}.")
    missing = [m for m in benchmark.planned if m not in benchmark.methods_done]
    if missing:
        notes.append(f"Partial: {', '.join(missing)} not finished yet (rerun the same command to resume).")
    return notes


def write_json(benchmark: Benchmark) -> str:
    return json.dumps(benchmark.to_json(), indent=2) + "\n"


def read_benchmark(path: Path) -> Benchmark:
    """A benchmark's JSON file (SchemaError naming it when it is not one)."""
    try:
        return Benchmark.from_json(json.loads(path.read_text(encoding="utf-8")), source=str(path))
    except (ValueError, KeyError, TypeError) as exc:
        raise SchemaError(
            path, f"is not a benchmark's JSON ({exc})", fix="write it with `python -m engine benchmark`"
        ) from exc


def stored_benchmark(folder: Path) -> Benchmark | None:
    """The table stored beside a collection (`BENCHMARK_FILE`), or None where it has none."""
    path = Path(folder) / BENCHMARK_FILE
    return read_benchmark(path) if path.is_file() else None
