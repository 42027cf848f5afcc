"""bench/browser_under_load.py's record of one module run, on a small module of its own (one passing, one failing
test) in a real pytest process: the names and first error line of what failed, the outcome, the load."""

from __future__ import annotations

from pathlib import Path

from bench.browser_under_load import consecutive_passing, run_module

MODULE = """
def test_passes():
    assert True


def test_fails():
    assert 1 + 1 == 3, "one and one make two"
"""


def test_a_failing_module_is_recorded_with_its_failed_test_and_the_load(tmp_path: Path):
    module = tmp_path / "test_probe.py"
    module.write_text(MODULE)
    record = run_module(str(module), limit_s=120)
    assert record["passed"] is False and record["exit_code"] == 1
    (failure,) = record["failures"]
    assert failure["test"].endswith("test_probe.py::test_fails") and failure["outcome"] == "failure"
    assert "one and one make two" in failure["message"]
    assert "1 failed, 1 passed" in record["summary"]
    assert 0 <= record["load_min"] <= record["load_mean"] <= record["load_max"]
    assert len(record["loadavg_1_5_15_at_end"]) == 3


def test_a_module_past_its_limit_is_stopped_and_named(tmp_path: Path):
    module = tmp_path / "test_slow.py"
    module.write_text("import time\n\n\ndef test_sleeps():\n    time.sleep(120)\n")
    record = run_module(str(module), limit_s=3)
    assert record["passed"] is False and record["summary"] == "stopped after 3 s" and record["failures"] == []


def test_the_streak_counts_consecutive_runs_that_all_passed():
    runs = [{"passed": p} for p in (True, False, True, True, True, False)]
    assert consecutive_passing(runs) == 3 and consecutive_passing([]) == 0
