import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.runs.log import RunLog

ROOT = Path(__file__).resolve().parent.parent

WRITER = """
import sys
from engine.runs.log import RunLog
log = RunLog(sys.argv[1])
i = 0
while True:
    log.record("demo", inputs={"i": i, "padding": "x" * 2000}, outputs={"acc": {"a": i / 1e6}}, tasks=["a"])
    print(i, flush=True)
    i += 1
"""


def test_record_and_filter(tmp_path):
    log = RunLog(tmp_path / "runs.sqlite3")
    a = log.record(
        "merge",
        method="task_arithmetic",
        tasks=["digits", "faces"],
        inputs={"params": {"lam": 0.3}, "checkpoints": {"digits": "ab12"}},
        outputs={"accuracy": {"digits": 0.9}},
        duration_s=0.2,
        device="cpu",
    )
    b = log.record("sweep", method="task_arithmetic", tasks=["faces"], inputs={}, outputs={"curve": [0.1, 0.2]})
    run = log.get(a)
    assert run.inputs["params"] == {"lam": 0.3} and run.outputs["accuracy"]["digits"] == 0.9
    assert run.versions["torch"] and run.device == "cpu"
    assert [r.id for r in log.runs()] == [b, a]
    assert [r.id for r in log.runs(kind="merge")] == [a]
    assert [r.id for r in log.runs(task="faces")] == [b, a]
    assert [r.id for r in log.runs(task="digits")] == [a]
    with pytest.raises(KeyError, match="no run 42"):
        log.get(42)


def test_the_log_survives_a_writer_killed_mid_write(tmp_path):
    path = tmp_path / "runs.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    committed = -1
    deadline = time.monotonic() + 60
    while committed < 200 and time.monotonic() < deadline:
        committed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    runs = RunLog(path).runs(kind="demo")
    assert len(runs) >= committed + 1  # every run it reported as committed is there
    assert sorted(r.inputs["i"] for r in runs) == list(range(len(runs)))


TODAYS_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
    method TEXT, tasks TEXT NOT NULL, inputs TEXT NOT NULL, outputs TEXT NOT NULL, duration_s REAL,
    device TEXT, versions TEXT NOT NULL
);
CREATE INDEX runs_kind ON runs (kind);
"""  # the run log of the release before schema versions, as its files are on disk


def test_a_run_log_of_the_previous_release_is_migrated_in_place(tmp_path):
    import sqlite3

    path = tmp_path / "runs.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(TODAYS_SCHEMA)
    db.execute(
        "INSERT INTO runs (created, kind, status, method, tasks, inputs, outputs, duration_s, device, versions) "
        "VALUES ('2026-11-30T10:00:00+00:00', 'recipe', 'done', 'ties', '[\"digits\"]', '{\"recipe\": {}}', "
        '\'{"accuracy": {"digits": 0.5}}\', 1.5, \'cpu\', \'{"torch": "2.14.1"}\')'
    )
    db.commit()
    db.close()
    log = RunLog(path)
    (old,) = log.runs()
    assert (old.kind, old.method, old.tasks, old.mean_accuracy) == ("recipe", "ties", ("digits",), 0.5)
    assert old.parent_id is None and old.job_id is None
    sweep = log.record("sweep", inputs={}, outputs={})
    trial = log.record("trial", inputs={"lam": 0.1}, outputs={}, parent_id=sweep)
    assert [r.id for r in log.runs(parent_id=sweep)] == [trial]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2
    job = log.add_job(name="j", kind="sweep", owner="s", device="cpu", spec={})
    log.update_job(job, step=3, total=9, stepping_since=100.5, stepping_from=2)
    assert (log.job(job).stepping_since, log.job(job).stepping_from) == (100.5, 2)  # the jobs table migrated
    RunLog(path)  # opening a current file again changes nothing
    assert len(RunLog(path).runs()) == 3


def test_a_run_log_from_a_newer_release_is_refused(tmp_path):
    import sqlite3

    from engine.errors import SchemaError

    path = tmp_path / "runs.sqlite3"
    RunLog(path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 7")
    db.commit()
    db.close()
    with pytest.raises(SchemaError, match="schema version 7 is newer"):
        RunLog(path)
