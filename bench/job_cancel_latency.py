"""How long a cancel takes to land (issue "Background jobs"); writes bench/results/job_cancel_latency.json.

A λ sweep job on the demo zoo (test split, one merge + evaluation per step) is cancelled mid-way; the
latency is the time from `cancel()` to the job's state turning "cancelled" (at most one step, since
cancel is checked between steps), next to the duration of one step.

    python bench/job_cancel_latency.py
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(repeats: int = 5) -> None:
    from engine.home import ASSETS_DIR
    from engine.jobs.runner import JobState, LocalRunner
    from engine.jobs.sweep import sweep_job
    from engine.runs.log import RunLog
    from engine.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(ASSETS_DIR / "zoo", cache_dir=Path(tmp) / "cache")
        ws.compare(ws.task_names, "task_arithmetic", {"lam": 0.3}, split="test")  # baselines cached
        runner, log = LocalRunner(), RunLog(Path(tmp) / "runs.sqlite3")
        latencies, steps = [], []
        for _ in range(repeats):
            job = runner.submit(
                "sweep",
                sweep_job,
                workspace=ws,
                run_log=log,
                tasks=ws.task_names,
                method="task_arithmetic",
                params={},
                param="lam",
                values=[i / 100 for i in range(101)],
                split="test",
            )
            while runner.status(job).step < 3:
                time.sleep(0.001)
            started = runner.status(job).started_at
            cancelled_at = time.perf_counter()
            runner.cancel(job)
            status = runner.wait(job, timeout=60)
            latencies.append(time.perf_counter() - cancelled_at)
            assert status.state is JobState.CANCELLED
            steps.append((status.finished_at - started) / max(1, status.step))
    out = {
        "benchmark": "cooperative cancel latency of a λ sweep job on the demo zoo (CPU, test split)",
        "cancel_latency_s": {"median": round(statistics.median(latencies), 3), "max": round(max(latencies), 3)},
        "step_duration_s": {"median": round(statistics.median(steps), 3)},
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (ROOT / "bench" / "results" / "job_cancel_latency.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
