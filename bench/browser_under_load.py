"""Do the browser tests hold on a loaded machine? Starts N busy processes (a CPU spin each) until the 1-minute
load average reaches a floor (6 on this 2-core machine, the load the issue saw tests fail at), runs the
browser modules under it, and records per module pass/fail, its time and the load sampled while it ran;
repeated `--runs` times in a row. Writes bench/results/browser_under_load.json.

The busy processes are this script's children, bounded in number and time, and stopped at the end (also on
Ctrl-C). Nothing here is a timed test: the browser tests themselves wait on states, never on sleeps.

    python bench/browser_under_load.py                 # 3 runs, 8 busy processes, every browser module
    python bench/browser_under_load.py --runs 1 --modules tests/e2e/test_pages.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "browser_under_load.json"
MODULES = (
    "tests/e2e/test_pages.py",
    "tests/e2e/test_jobs_browser.py",
    "tests/e2e/test_sweeps_browser.py",
    "tests/e2e/test_links.py",
    "tests/e2e/test_browser.py",
)
SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@contextmanager
def busy(count: int, *, seconds: float):
    """`count` processes spinning a core each, for at most `seconds` (they end on their own if we die)."""
    procs = [subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=seconds)]) for _ in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def wait_for_load(floor: float, *, limit_s: float) -> float:
    """Wait (at most `limit_s`) until the 1-minute load average reaches `floor`; returns the load reached."""
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] < floor and time.monotonic() < deadline:
        time.sleep(2)
    return os.getloadavg()[0]


class LoadSampler:
    """The 1-minute load average every `every` seconds, in a thread, while a module runs."""

    def __init__(self, every: float = 5.0) -> None:
        self.every, self.samples, self._stop = every, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(round(os.getloadavg()[0], 2))
            self._stop.wait(self.every)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_module(module: str, *, limit_s: float) -> dict:
    """One browser module in a fresh pytest process; its outcome, time, load and the tail of a failure."""
    began = time.perf_counter()
    with LoadSampler() as load:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pytest", module, "-q", "-p", "no:cacheprovider"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=limit_s,
            )
            code, tail = done.returncode, done.stdout.strip().splitlines()[-1:]
            failures = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
        except subprocess.TimeoutExpired:
            code, tail, failures = -1, [f"stopped after {limit_s:.0f} s"], []
    samples = load.samples or [os.getloadavg()[0]]
    return {
        "module": module,
        "passed": code == 0,
        "summary": tail[0] if tail else "",
        "failures": failures,
        "seconds": round(time.perf_counter() - began, 1),
        "load_min": min(samples),
        "load_mean": round(sum(samples) / len(samples), 2),
        "load_max": max(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--busy", type=int, default=8, help="busy processes (8 on 2 cores: load ≈ 8-10)")
    parser.add_argument("--load", type=float, default=6.0, help="the 1-minute load to reach before each run")
    parser.add_argument("--modules", nargs="*", default=list(MODULES))
    parser.add_argument("--module-limit-s", type=float, default=1800)
    args = parser.parse_args()
    budget = args.runs * len(args.modules) * args.module_limit_s + 600
    runs = []
    with busy(args.busy, seconds=budget):
        for n in range(1, args.runs + 1):
            reached = wait_for_load(args.load, limit_s=300)
            modules = [run_module(m, limit_s=args.module_limit_s) for m in args.modules]
            runs.append({"run": n, "load_at_start": round(reached, 2), "modules": modules})
            print(json.dumps(runs[-1], indent=1), flush=True)
    result = {
        "cpus": os.cpu_count(),
        "busy_processes": args.busy,
        "load_floor": args.load,
        "runs": runs,
        "all_passed": all(m["passed"] for r in runs for m in r["modules"]),
        "consecutive_passing_runs": _consecutive(runs),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}: all passed = {result['all_passed']}")


def _consecutive(runs: list[dict]) -> int:
    """The longest streak of runs whose every module passed."""
    best = streak = 0
    for run in runs:
        streak = streak + 1 if all(m["passed"] for m in run["modules"]) else 0
        best = max(best, streak)
    return best


if __name__ == "__main__":
    main()
