from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.builders import build_tiny_collection


@pytest.fixture(autouse=True)
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own MERGELAB_HOME, so nothing is written to the user's home."""
    home = tmp_path / "mergelab-home"
    monkeypatch.setenv("MERGELAB_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_collection_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only tiny collection shared by the session (copy it before modifying)."""
    return build_tiny_collection(tmp_path_factory.mktemp("tiny-collection"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI a skipped test is a failed test: nothing may be silently left out."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"test skipped in CI ({report.longrepr}); CI must run every test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `pytest -n N --dist loadgroup --no-loadscope-reorder` (make test) a module's tests stay on one
    worker, so its module fixtures (a Ray cluster, the zoo workspace) start once; the Ray modules share a group
    (one cluster at a time), and so do the browser modules (two dashboards and two Chromiums at once swamp
    two cores: the suite took 24 minutes so, 21 with them spread by test count). The zoo's module (its smoke
    build ~6 minutes) and the browser group are handed out first, so no worker is left alone with one at the end."""
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group("browser" if module.startswith("tests.e2e.") else module))
    items.sort(key=_hand_out_order)  # stable: within a rank, the collection's order


def _hand_out_order(item: pytest.Item) -> int:
    module = item.module.__name__
    return 0 if module == "tests.test_zoo" else 1 if module.startswith("tests.e2e.") else 2
