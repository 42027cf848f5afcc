"""Browser-test fixtures: one `streamlit run` and one Chromium per test module, a fresh browser context per test.

Starting a server costs ~10 s, so a module's tests share one; each test gets its own browser context, hence its
own Streamlit session, and tests share only the data home (jobs, run log; the cache with every module), which they
must not count on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS, dashboard_server


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder (heads, decoded tasks, tangent features, τJp products) for every browser module: each
    module's first visit to a heavy page would otherwise recompute what the previous module's server wrote."""
    return tmp_path_factory.mktemp("dashboard-cache")


@pytest.fixture(scope="module")
def dashboard_home(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """The MERGELAB_HOME of the module's server, shared by its tests; its own jobs and run log, the session's
    cache."""
    home = tmp_path_factory.mktemp("dashboard-home") / "mergelab-home"
    home.mkdir()
    (home / "cache").symlink_to(shared_cache, target_is_directory=True)
    return home


@pytest.fixture()
def data_home(dashboard_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Overrides tests/conftest.py's per-test home: the test process reads the same home as the module's server."""
    monkeypatch.setenv("MERGELAB_HOME", str(dashboard_home))
    return dashboard_home


@pytest.fixture(scope="module")
def server(dashboard_home: Path) -> Iterator[str]:
    """One `streamlit run app.py` for the module on a free local port; yields its base URL."""
    with dashboard_server(dashboard_home) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def viewport() -> dict[str, int]:
    """The window size of `page`; a module overrides it to look at the pages at another size."""
    return {"width": 1280, "height": 1000}


# Browser tests wait on states (a heading's text, the script's "notRunning", an SVG drawn), never on sleeps. How
# long a state may take is a ceiling, not a measure: on a loaded machine (load 10 on 2 cores) plotly takes
# seconds to draw, so the ceiling of every wait that names none is this, not Playwright's 5 s. Speeds are
# measured by the benchmarks (bench/), never here. 300 s: at load 13 (bench/browser_under_load.py) a cold first
# open of the λ landscape (121 exact merges) and a fine-tune job each passed 120 s.
WAIT_CEILING_MS = 300_000


@pytest.fixture()
def page(browser, viewport: dict[str, int]):
    """A fresh browser context (no cookies, its own Streamlit session) and page per test."""
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_CEILING_MS)
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(WAIT_CEILING_MS)
    yield context.new_page()
    context.close()
