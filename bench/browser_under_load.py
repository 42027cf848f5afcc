"""Do the browser tests hold on a loaded machine? Starts N busy processes (a CPU spin each) until the 1-minute
load average reaches a floor (6 on this 2-core machine, the load the issue saw tests fail at), runs every
browser module (tests/e2e/test_*.py) under it, and records per run whether all passed, per module its outcome,
the failed tests' names and first error line, its time and the load averages sampled while it ran; repeated
`--runs` times in a row. Writes bench/results/browser_under_load.json after every run (an interrupted bench
keeps the runs it finished).

The busy processes are this script's children, bounded in number and time, and stopped at the end (also on
Ctrl-C or SIGTERM); a module that runs past its limit is stopped with its server and browser (its process
group). Nothing here is a timed test: the browser tests themselves wait on states, never on sleeps.

    python bench/browser_under_load.py --runs 3 --busy 8     # every browser module, 3 runs in a row
    python bench/browser_under_load.py --runs 1 --modules tests/e2e/test_pages.py

Run by an interpreter without pytest and Playwright (a shell's `python`), it runs itself again with the
repository's .venv/bin/python.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "browser_under_load.json"
MODULES = tuple(sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "e2e").glob("test_*.py")))
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
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
    """One browser module in a fresh pytest process; its outcome, failed tests, time and load."""
    began = time.perf_counter()
    with LoadSampler() as load, tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", module, "-q", "-p", "no:cacheprovider", f"--junitxml={report}"]
        proc = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )  # its own process group: server and browser stop with it
        try:
            out, _ = proc.communicate(timeout=limit_s)
            code, summary = proc.returncode, (out.strip().splitlines() or [""])[-1]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            code, summary = -1, f"stopped after {limit_s:.0f} s"
        failures = failed_tests(report) if report.exists() else []
    samples = load.samples or [round(os.getloadavg()[0], 2)]
    return {
        "module": module,
        "passed": code == 0,
        "exit_code": code,
        "summary": summary,
        "failures": failures,
        "seconds": round(time.perf_counter() - began, 1),
        "load_min": min(samples),
        "load_mean": round(sum(samples) / len(samples), 2),
        "load_max": max(samples),
        "loadavg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def failed_tests(junit: Path) -> list[dict]:
    """Each failed or erroring test of a pytest JUnit report: its node name and the first line of its error."""
    found = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        for outcome in ("failure", "error"):
            for item in case.findall(outcome):
                message = (item.get("message") or item.text or "").strip().splitlines() or [""]
                name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
                found.append({"test": name, "outcome": outcome, "message": message[0][:300]})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--busy", type=int, default=8, help="busy processes (8 on 2 cores: load ≈ 8-10)")
    parser.add_argument("--load", type=float, default=6.0, help="the 1-minute load to reach before each run")
    parser.add_argument("--modules", nargs="*", default=list(MODULES))
    parser.add_argument("--module-limit-s", type=float, default=1800)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)  # a `kill` still stops the busy processes (the `finally` in busy)
    budget = args.runs * len(args.modules) * args.module_limit_s + 600
    runs = []
    with busy(args.busy, seconds=budget):
        for n in range(1, args.runs + 1):
            reached = wait_for_load(args.load, limit_s=300)
            modules = [run_module(m, limit_s=args.module_limit_s) for m in args.modules]
            runs.append(_run_record(n, reached, args.load, modules))
            print(json.dumps(runs[-1], indent=1), flush=True)
            _write(args, runs)
    print(f"wrote {args.out}: all passed = {all(r['passed'] for r in runs)}")


def _run_record(n: int, reached: float, floor: float, modules: list[dict]) -> dict:
    return {
        "run": n,
        "passed": all(m["passed"] for m in modules),
        "failures": [f["test"] for m in modules for f in m["failures"]]
        + [f"{m['module']}: {m['summary']}" for m in modules if not m["passed"] and not m["failures"]],
        "load_at_start": round(reached, 2),
        "load_floor_reached": reached >= floor,
        "modules": modules,
    }


def _write(args: argparse.Namespace, runs: list[dict]) -> None:
    """The results so far, replacing the file in one step (a reader never sees half of it)."""
    result = {
        "cpus": os.cpu_count(),
        "busy_processes": args.busy,
        "load_floor": args.load,
        "runs_asked": args.runs,
        "runs": runs,
        "all_passed": len(runs) == args.runs and all(r["passed"] for r in runs),
        "consecutive_passing_runs": consecutive_passing(runs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)


def _stop(signum: int, frame) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def _with_browser_tests() -> None:
    """Runs the script again under the repository's venv when this interpreter lacks pytest or Playwright."""
    if all(importlib.util.find_spec(name) for name in ("pytest", "playwright")):
        return
    if not VENV_PYTHON.exists() or Path(sys.executable) == VENV_PYTHON:
        raise SystemExit(
            f"{sys.executable} has no pytest or Playwright, and {VENV_PYTHON} is missing: "
            "install requirements.txt into .venv (README, Set-up)"
        )
    os.execv(VENV_PYTHON, [str(VENV_PYTHON), __file__, *sys.argv[1:]])


def consecutive_passing(runs: list[dict]) -> int:
    """The longest streak of runs whose every module passed."""
    best = streak = 0
    for run in runs:
        streak = streak + 1 if run["passed"] else 0
        best = max(best, streak)
    return best


if __name__ == "__main__":
    _with_browser_tests()
    main()
