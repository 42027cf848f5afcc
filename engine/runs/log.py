"""The run log: every job, sweep, export and saved merge as one SQLite row in the data home.

stdlib sqlite3 in WAL mode: readers (the dashboard) never block the writer (a job), and a committed
row survives the writing process being killed. Each row holds what is needed to reproduce the run:
inputs (checkpoint paths and sha256, method, every parameter, seed), outputs (per-task metrics,
curves, artifact paths), duration, device and library versions. A run may belong to another
(`parent_id`: a sweep's trials) and to the background job that made it (`job_id`).

The same file holds the `jobs` table: every background job from its submission on (its spec, owner
session, state, progress and last metrics), so a reload or a restarted server still shows it; a job
whose process died while it was queued or running shows as "interrupted".

The schema is versioned (`PRAGMA user_version`): a file from an earlier release is migrated in place
when opened, in one transaction; a file from a newer release is refused rather than misread.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import SchemaError
from engine.faults import fault_point
from engine.processes import process_alive, process_start

SCHEMA_VERSION = 2
RUNS_V0 = """
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
MIGRATIONS = {  # user_version → the statements that bring a file from it to the next version
    0: """
ALTER TABLE runs ADD COLUMN parent_id INTEGER REFERENCES runs (id);
ALTER TABLE runs ADD COLUMN job_id INTEGER;
CREATE INDEX runs_parent ON runs (parent_id);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    device TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    metrics TEXT NOT NULL DEFAULT '{}',
    error TEXT NOT NULL DEFAULT '',
    started TEXT,
    finished TEXT,
    pid INTEGER NOT NULL,
    process_start TEXT NOT NULL
);
""",
    1: """
ALTER TABLE jobs ADD COLUMN stepping_since REAL;
ALTER TABLE jobs ADD COLUMN stepping_from INTEGER NOT NULL DEFAULT 0;
""",
}
ACTIVE_JOB_STATES = ("queued", "running")
JOB_COLUMNS = (
    "id, created, name, kind, owner, device, spec, state, step, total, message, metrics, error, started, finished, "
    "stepping_since, stepping_from"
)


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
    parent_id: int | None = None
    job_id: int | None = None

    @property
    def mean_accuracy(self) -> float | None:
        """Mean of the logged per-task accuracies, if the run logged any."""
        accuracy = self.outputs.get("accuracy") or {}
        return sum(accuracy.values()) / len(accuracy) if accuracy else None

    @property
    def partial(self) -> bool:
        """A run cut short (cancelled): its outputs are what it reached, not what it was asked for."""
        return bool(self.outputs.get("partial"))

    @property
    def reached(self) -> str:
        """How far a partial run got, in words ("" for a complete run): steps, epochs, the point it kept, and
        its last progress line."""
        if not self.partial:
            return ""
        out = self.outputs
        said = (
            f"{out['step']} of {out['total']}" if out.get("total") else "",
            f"{out['epochs']} epochs" if out.get("epochs") else "",
            f"kept {out['point']}" if out.get("point") else "",
            out.get("message") or "",
        )
        return ", ".join(s for s in said if s) or "nothing finished"

    @property
    def status_shown(self) -> str:
        """The status as the run-log table shows it: "cancelled (partial)" for a run cut short."""
        return f"{self.status} (partial)" if self.partial else self.status


@dataclass(frozen=True)
class JobRecord:
    """A background job as the run log keeps it: enough to show it after a reload or a restart."""

    id: int
    created: str
    name: str
    kind: str
    owner: str  # the browser session (or "cli") that submitted it
    device: str
    spec: Mapping[str, Any]  # what the job runs on and with: JSON
    state: str  # queued, running, done, failed, cancelled, interrupted
    step: int
    total: int
    message: str
    metrics: Mapping[str, Any]
    error: str
    started: str | None
    finished: str | None
    stepping_since: float | None = None  # Unix time of its first step (engine/jobs/progress.py: the rate)
    stepping_from: int = 0


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
        self._migrate()

    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION, one version per transaction (SQLite's DDL is transactional)."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            while True:
                db.execute("BEGIN IMMEDIATE")  # one migrating process at a time; the others see the result
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version >= SCHEMA_VERSION:
                    db.execute("COMMIT")
                    break
                if version == 0:
                    for statement in RUNS_V0.split(";"):  # today's table, for a new file
                        if statement.strip():
                            db.execute(statement)
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {version + 1}")
                db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()
        if version > SCHEMA_VERSION:
            raise SchemaError(
                self.path,
                f"run log schema version {version} is newer than this mergelab's {SCHEMA_VERSION}",
                fix="update mergelab, or point MERGELAB_HOME at another folder",
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable against a killed process
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; the `runlog.before_commit` fault point sits between its rows and its commit,
        where a killed writer must leave the file as it was (SQLite's WAL discards the uncommitted frames)."""
        with self._connect() as db:
            yield db
            fault_point("runlog.before_commit")

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
        parent_id: int | None = None,
        job_id: int | None = None,
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
            parent_id,
            job_id,
        )
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO runs (created, kind, status, method, tasks, inputs, outputs, "
                "duration_s, device, versions, parent_id, job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cursor.lastrowid)

    def update_run(
        self,
        run_id: int,
        *,
        status: str,
        outputs: Mapping[str, Any],
        duration_s: float | None = None,
    ) -> None:
        """Finish a run recorded early (a grid's row, recorded first so its trials can name it as parent)."""
        with self._write() as db:
            db.execute(
                "UPDATE runs SET status = ?, outputs = ?, duration_s = ? WHERE id = ?",
                (status, json.dumps(outputs), duration_s, run_id),
            )

    def get(self, run_id: int) -> Run:
        runs = self._select("WHERE id = ?", (run_id,))
        if not runs:
            raise KeyError(f"{self.path}: no run {run_id}")
        return runs[0]

    def runs(
        self,
        *,
        kind: str | None = None,
        method: str | None = None,
        task: str | None = None,
        parent_id: int | None = None,
        job_id: int | None = None,
        top_level: bool = False,
    ) -> list[Run]:
        """Newest first, optionally filtered by kind, method, parent run, job and a task among the run's tasks;
        `top_level` leaves out runs that belong to another (a grid's trials)."""
        clauses, args = ["parent_id IS NULL"] if top_level else [], []
        for column, value in (("kind", kind), ("method", method), ("parent_id", parent_id), ("job_id", job_id)):
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
                f"device, versions, parent_id, job_id FROM runs {tail}",
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
                r[11],
                r[12],
            )
            for r in rows
        ]

    # jobs ---------------------------------------------------------------------------------------------

    def add_job(self, *, name: str, kind: str, owner: str, device: str, spec: Mapping[str, Any]) -> int:
        """Record a job as it is submitted (state "queued"); returns its id, unique in this file."""
        pid, started = _this_process()
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO jobs (created, name, kind, owner, device, spec, state, pid, process_start) "
                "VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                (_now(), name, kind, owner, device, json.dumps(spec), pid, started),
            )
            return int(cursor.lastrowid)

    def update_job(
        self,
        job_id: int,
        *,
        state: str | None = None,
        step: int | None = None,
        total: int | None = None,
        message: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        error: str | None = None,
        stepping_since: float | None = None,
        stepping_from: int | None = None,
    ) -> None:
        """Record a job's progress or new state (started and finished times follow the state)."""
        given = {"state": state, "step": step, "total": total, "message": message, "error": error}
        given |= {"stepping_since": stepping_since, "stepping_from": stepping_from}
        changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        if metrics is not None:
            changes["metrics"] = json.dumps(metrics)
        if state == "running":
            changes["started"] = _now()
        elif state is not None and state not in ACTIVE_JOB_STATES:
            changes["finished"] = _now()
        if changes:
            with self._write() as db:
                db.execute(
                    f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in changes)} WHERE id = ?",
                    (*changes.values(), job_id),
                )

    def job(self, job_id: int) -> JobRecord:
        found = self._jobs("WHERE id = ?", (job_id,))
        if not found:
            raise KeyError(f"{self.path}: no job {job_id}")
        return found[0]

    def jobs(self, *, owner: str | None = None) -> list[JobRecord]:
        """Newest first; a queued or running job whose process is gone reads as "interrupted"."""
        self.mark_interrupted()
        return self._jobs(
            "WHERE owner = ? ORDER BY id DESC" if owner else "ORDER BY id DESC", (owner,) if owner else ()
        )

    def mark_interrupted(self) -> int:
        """Jobs left queued or running by a process that no longer runs become "interrupted"; returns how many."""
        with self._connect() as db:
            active = db.execute(
                "SELECT id, pid, process_start FROM jobs WHERE state IN (?, ?)", ACTIVE_JOB_STATES
            ).fetchall()
            dead = [job_id for job_id, pid, started in active if not process_alive(pid, started)]
            db.executemany(
                "UPDATE jobs SET state = 'interrupted', finished = ? WHERE id = ?", [(_now(), j) for j in dead]
            )
        return len(dead)

    def _jobs(self, tail: str, args: tuple) -> list[JobRecord]:
        with self._connect() as db:
            rows = db.execute(f"SELECT {JOB_COLUMNS} FROM jobs {tail}", args).fetchall()
        return [JobRecord(*r[:6], json.loads(r[6]), r[7], r[8], r[9], r[10], json.loads(r[11]), *r[12:]) for r in rows]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _this_process() -> tuple[int, str]:
    pid = os.getpid()
    return pid, process_start(pid) or _now()
