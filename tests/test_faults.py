"""Crashes lose nothing: a process SIGKILLed at a named point (engine/faults.py) leaves no half-written
file under its final name, a run log that opens intact with exactly the committed rows, and its running
job shown as interrupted after a restart; a full disk during an export is a clear error and leaves nothing.

Each case runs the real operation in a subprocess (the CLI's export, the run log, a LocalRunner job) with
MERGELAB_FAULT set, checks it died by SIGKILL, then "restarts" by opening the same files here.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import DiskFullError
from engine.faults import fault_point
from engine.home import DataHome
from engine.io.atomic import all_or_nothing, atomic_path, sweep_stale_parts
from engine.io.checkpoints import load_checkpoint
from engine.jobs.runner import LocalRunner
from engine.processes import process_start
from engine.runs.log import RunLog
from engine.runs.recipe_runner import run_recipe
from engine.runs.recipes import load_recipe

ROOT = Path(__file__).resolve().parent.parent
KILLED = -signal.SIGKILL
EXPORTED = ("m.safetensors", "m.json", "m.recipe.json", "m.open_clip.json")  # a checkpoint and its companions

EXPORT = """
import sys
from engine.cli import main
sys.exit(main(["run", sys.argv[1]]))
"""
FULL_DISK_EXPORT = """
import resource, signal, sys
from engine.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(main(["run", sys.argv[1]]))
"""
RECORD = """
import sys
from engine.runs.log import RunLog
RunLog(sys.argv[1]).record("merge", inputs={"n": 3}, outputs={"blob": "x" * 4_000_000})  # spills to the WAL
"""
UPDATE_JOB = """
import sys
from engine.runs.log import RunLog
RunLog(sys.argv[1]).update_job(int(sys.argv[2]), state="done", step=99, metrics={"blob": "x" * 4_000_000})
"""
JOB = """
import sys, time
from engine.jobs.runner import LocalRunner
from engine.processes import process_start
from engine.runs.log import RunLog

def counting(ctx):
    for step in range(1, 1001):
        ctx.report(step, 1000, f"step {step}", metrics={"loss": 1.0 / step})
        time.sleep(0.01)
    log.record("counting", inputs={}, outputs={"finished": True}, job_id=ctx.job_id)

log = RunLog(sys.argv[1])
runner = LocalRunner(run_log=log)
job = runner.submit("counting", counting, owner="session-a")
runner.wait(job, timeout=120)
"""
WRITE_TEXT = """
import sys
import time
from pathlib import Path
from engine.io.atomic import write_text_atomic
write_text_atomic(Path(sys.argv[1]), "new " * 100_000)
"""


def _run(script: str, *args: object, fault: str | None = None, home: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MERGELAB_FAULT", None)
    if fault is not None:
        env["MERGELAB_FAULT"] = fault
    if home is not None:
        env["MERGELAB_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def recipe(tiny_collection_dir: Path, data_home: Path, tmp_path: Path) -> Path:
    """A recipe exporting the task-arithmetic merge of a copy of the tiny collection to <data home>/exports/m.*.

    The copy's files are dated an hour back, so a first open records them as hash-checked at once
    (engine/io/verified.py skips files changed in the last seconds) and a later export writes nothing else."""
    collection = Path(shutil.copytree(tiny_collection_dir, tmp_path / "collection"))
    past = time.time() - 3600
    for file in collection.rglob("*"):
        os.utime(file, (past, past))
    DataHome.from_env().ensure()
    (data_home / "config.json").write_text(json.dumps({"allowed_roots": [str(collection)]}))
    path = data_home / "recipe.json"
    path.write_text(json.dumps({"collection": str(collection), "params": {"lam": 0.4}, "output": "m"}))
    return path


def _integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def _parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.part"))


def test_an_export_killed_before_its_rename_leaves_no_file_under_a_final_name(recipe, data_home):
    exports, runs = data_home / "exports", data_home / "runs" / "runs.sqlite3"
    # an earlier export fills the caches (hash records): the export's own files are then the first atomic write
    warm = run_recipe(load_recipe(recipe), home=DataHome.from_env(), out=exports / "warm.safetensors")
    killed = _run(EXPORT, recipe, fault="export.before_rename", home=data_home)
    assert killed.returncode == KILLED, killed.stderr
    assert [name for name in EXPORTED if (exports / name).exists()] == []
    left = _parts(exports)  # the fully written temporaries, hidden and never under a final name
    assert len(left) == len(EXPORTED) and all(name.startswith(".m.") for name in left)
    assert _integrity(runs) == "ok" and [r.id for r in RunLog(runs).runs()] == [warm.run_id]
    # the restart: the same export again lands whole, and removes what the killed writer left
    outcome = run_recipe(load_recipe(recipe), home=DataHome.from_env())
    assert load_checkpoint(exports / "m.safetensors").sha256 == outcome.checkpoint.sha256
    assert all((exports / name).is_file() for name in EXPORTED) and _parts(exports) == []
    assert [r.id for r in RunLog(runs).runs()] == [outcome.run_id, warm.run_id]
    assert RunLog(runs).get(outcome.run_id).outputs["artifact"] == str(exports / "m.safetensors")


def test_a_file_overwrite_killed_before_its_rename_keeps_the_old_file_whole(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("old")
    killed = _run(WRITE_TEXT, target, fault="export.before_rename")
    assert killed.returncode == KILLED, killed.stderr
    assert target.read_text() == "old" and len(_parts(tmp_path)) == 1
    assert sweep_stale_parts(target) and _parts(tmp_path) == []  # its writer is dead: removed


def test_a_temporary_file_whose_writer_still_runs_is_not_swept(tmp_path):
    target = tmp_path / "notes.txt"
    live = tmp_path / f".notes.txt.{os.getpid()}-{process_start(os.getpid())}.abc_12.part"  # this process's
    foreign = tmp_path / ".notes.txt.1-2.txt.99-1.abc.part"  # another target's ("notes.txt.1-2.txt")
    live.write_text("being written")
    foreign.write_text("not ours")
    assert sweep_stale_parts(target) == [] and live.exists() and foreign.exists()


@pytest.mark.parametrize("operation", ["record", "update_job"])
def test_a_run_log_write_killed_before_its_commit_leaves_the_committed_rows_only(tmp_path, operation):
    path = tmp_path / "runs.sqlite3"
    log = RunLog(path)
    committed = [log.record("merge", inputs={"n": n}, outputs={"accuracy": {"a": 0.5 + n / 10}}) for n in (1, 2)]
    job = log.add_job(name="j", kind="counting", owner="s", device="cpu", spec={})
    log.update_job(job, state="running", step=4, total=10)
    script, args = (RECORD, (path,)) if operation == "record" else (UPDATE_JOB, (path, job))
    killed = _run(script, *args, fault="runlog.before_commit")
    assert killed.returncode == KILLED, killed.stderr
    assert path.with_name("runs.sqlite3-wal").stat().st_size > 1_000_000  # uncommitted pages spilled into it
    assert _integrity(path) == "ok"
    reopened = RunLog(path)
    assert [r.id for r in reopened.runs()] == committed[::-1]
    assert [r.inputs["n"] for r in reopened.runs()] == [2, 1]
    record = reopened.job(job)
    assert (record.state, record.step, record.total, record.metrics) == ("running", 4, 10, {})
    assert _integrity(path) == "ok"


def test_a_job_killed_mid_run_shows_as_interrupted_after_a_restart(tmp_path):
    path = tmp_path / "runs.sqlite3"
    killed = _run(JOB, path, fault="job.mid_run")
    assert killed.returncode == KILLED, killed.stderr
    assert _integrity(path) == "ok"
    LocalRunner(run_log=RunLog(path))  # the restarted server
    (job,) = RunLog(path).jobs()
    assert (job.name, job.kind, job.owner, job.state) == ("counting", "counting", "session-a", "interrupted")
    assert (job.step, job.total, job.metrics) == (1, 1000, {"loss": 1.0})  # its first report, committed
    assert job.finished is not None and RunLog(path).runs() == []


def test_an_export_onto_a_full_disk_is_a_clear_error_and_leaves_nothing(recipe, data_home):
    failed = _run(FULL_DISK_EXPORT, recipe, 16_384, home=data_home)
    assert failed.returncode == 2, failed.stderr
    exports = data_home / "exports"
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: {exports / 'm.safetensors'}: could not be written: file too large")
    assert f"Fix: free space in {exports}, or write it to another folder" in message
    assert list(exports.iterdir()) == []  # no final file, no temporary one
    runs = data_home / "runs" / "runs.sqlite3"
    assert not runs.exists() or RunLog(runs).runs() == []


def test_a_fault_point_does_nothing_unless_named_and_refuses_unknown_names(monkeypatch):
    monkeypatch.setenv("MERGELAB_FAULT", "job.mid_run")
    fault_point("export.before_rename")  # another point: returns
    monkeypatch.delenv("MERGELAB_FAULT")
    fault_point("job.mid_run")
    with pytest.raises(ValueError, match="unknown fault point"):
        fault_point("export.typo")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_write_that_finds_the_disk_full_names_the_file_and_removes_its_temporaries(tmp_path, code):
    target = tmp_path / "out" / "m.safetensors"
    with pytest.raises(DiskFullError, match="free space in") as caught:
        with all_or_nothing([target, target.with_suffix(".json")]) as (tensors, sidecar):
            tensors.write_bytes(b"written")
            raise OSError(code, os.strerror(code), str(sidecar))
    assert caught.value.subject == str(target) and str(target.parent) in caught.value.fix
    assert list(target.parent.iterdir()) == []
    with pytest.raises(PermissionError):  # any other failure passes unchanged
        with atomic_path(target):
            raise PermissionError(errno.EACCES, "denied")
    assert list(target.parent.iterdir()) == []
