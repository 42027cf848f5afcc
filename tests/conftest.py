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
    """Under `pytest -n N --dist loadgroup` (make test) a module's tests stay on one worker, so its module
    fixtures (a Ray cluster, a dashboard server, the zoo workspace) start once; a module that shares a resource
    with another module names a common `xdist_group` itself (the Ray modules: one cluster at a time). xdist
    hands out the modules with the most tests first: measured quiet, 21.2 minutes; handing out the long modules
    first (24.4) or the browser modules on one worker (over 20 by 19 minutes in) ran slower on two cores."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
