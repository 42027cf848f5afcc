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
