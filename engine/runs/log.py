"""The run log: every job, sweep, export and saved merge as one SQLite row in the data home.

stdlib sqlite3 in WAL mode: readers (the dashboard) never block the writer (a job), and a committed
row survives the writing process being killed. Each row holds what is needed to reproduce the run:
inputs (checkpoint paths and sha256, method, every parameter, seed), outputs (per-task metrics,
curves, artifact paths), duration, device and library versions.
"""

from __future__ import annotations

import json
import platform
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    method TEXT,
    tasks TEXT NOT NULL,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL,
    duration_s REAL,
    device TEXT,
    versions TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_kind ON runs (kind);
"""


@dataclass(frozen=True)
class Run:
    id: int
    created: str
    kind: str
    status: str
    method: str | None
    tasks: tuple[str, ...]
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    duration_s: float | None
    device: str | None
    versions: Mapping[str, str]

    @property
    def mean_accuracy(self) -> float | None:
        """Mean of the logged per-task accuracies, if the run logged any."""
        accuracy = self.outputs.get("accuracy") or {}
        return sum(accuracy.values()) / len(accuracy) if accuracy else None


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("open_clip_torch", "safetensors", "streamlit"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "absent"
    return versions


class RunLog:
    """One SQLite file; every method opens its own connection, so threads can share a RunLog."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable against a killed process
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    def record(
        self,
        kind: str,
        *,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        tasks: Sequence[str] = (),
        method: str | None = None,
        status: str = "done",
        duration_s: float | None = None,
        device: str | None = None,
    ) -> int:
        """Append one run; returns its id."""
        row = (
            datetime.now(UTC).isoformat(timespec="seconds"),
            kind,
            status,
            method,
            json.dumps(list(tasks)),
            json.dumps(inputs),
            json.dumps(outputs),
            duration_s,
            device,
            json.dumps(library_versions()),
        )
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO runs (created, kind, status, method, tasks, inputs, outputs, "
                "duration_s, device, versions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cursor.lastrowid)

    def get(self, run_id: int) -> Run:
        runs = self._select("WHERE id = ?", (run_id,))
        if not runs:
            raise KeyError(f"{self.path}: no run {run_id}")
        return runs[0]

    def runs(self, *, kind: str | None = None, method: str | None = None, task: str | None = None) -> list[Run]:
        """Newest first, optionally filtered by kind, method and a task among the run's tasks."""
        clauses, args = [], []
        for column, value in (("kind", kind), ("method", method)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        found = self._select(f"{where} ORDER BY id DESC", tuple(args))
        return [r for r in found if task is None or task in r.tasks]

    def _select(self, tail: str, args: tuple) -> list[Run]:
        with self._connect() as db:
            rows = db.execute(
                f"SELECT id, created, kind, status, method, tasks, inputs, outputs, duration_s, "
                f"device, versions FROM runs {tail}",
                args,
            ).fetchall()
        return [
            Run(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                tuple(json.loads(r[5])),
                json.loads(r[6]),
                json.loads(r[7]),
                r[8],
                r[9],
                json.loads(r[10]),
            )
            for r in rows
        ]
