"""Jobs a class can follow, in a real browser on the demo zoo: a job says "starting" at once, its live curve
survives a reload and is drawn on Jobs & runs, and a finished fine-tune is in the sidebar without a reload.
One server for the module (its own data home); the tests run in order, as one user's afternoon."""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.conftest import WAIT_CEILING_MS
from tests.e2e.sidebar import open_from_sidebar
from tests.e2e.test_browser import ARTIFACTS

pytestmark = pytest.mark.browser


def _standard_finetune(tab, steps: int) -> None:
    """On the Fine-tune page: the cheapest mode (standard) and few steps, so the job ends in seconds.

    A page that restores a finished job reruns the whole app once after it loads (views/finetune.py: live_run),
    and a rerun may swallow a choice or, while it redraws the form, show a stale copy of the Steps box beside
    the new one (CI: "get_by_label('Steps') resolved to 2 elements"). So the two inputs are made again until
    the page, idle, shows both; the ceiling is WAIT_CEILING_MS."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect

    expect(tab.get_by_role("button", name="Fine-tune as a background job")).to_be_visible()
    app, ceiling = tab.get_by_test_id("stApp"), time.monotonic() + WAIT_CEILING_MS / 1000
    mode, box = tab.get_by_role("combobox", name="Mode"), tab.get_by_label("Steps")
    standard = "standard (non-linear)"
    while True:
        assert time.monotonic() < ceiling, "the Fine-tune page never kept mode standard and the steps asked for"
        try:
            expect(app).to_have_attribute("data-test-script-state", "notRunning")
            if mode.input_value(timeout=15_000) != standard:
                mode.click(timeout=15_000)
                tab.get_by_role("option", name=standard).click(timeout=15_000)
            box.fill(str(steps), timeout=15_000)
            box.press("Enter", timeout=15_000)
            expect(app).to_have_attribute("data-test-script-state", "notRunning")
            expect(mode).to_have_value(standard, timeout=5_000)
            expect(box).to_have_value(str(steps), timeout=5_000)
            return
        except (AssertionError, PlaywrightError):  # a timeout, or two Steps boxes during a redraw: again
            tab.keyboard.press("Escape")
            continue


def test_a_job_says_starting_at_once_and_its_curve_survives_a_reload_and_shows_on_jobs(server, page):
    """aTLAS sets up for seconds (heads, features): its bar says what it is doing meanwhile, and Cancel stops
    it. A fine-tune's live curve then survives a reload and is drawn on Jobs & runs from the jobs table."""
    from playwright.sync_api import expect

    page.goto(f"{server}/learned")
    page.get_by_role("button", name="Learn as a background job").click()
    learn = page.locator(".st-key-job-1")
    expect(learn).to_contain_text("starting")  # the latency itself: bench/job_start_latency.py
    page.get_by_role("button", name="Cancel").click()
    expect(learn).to_contain_text("cancelled")

    page.goto(f"{server}/finetune")
    _standard_finetune(page, 12)
    page.get_by_role("button", name="Fine-tune as a background job").click()
    bar = page.locator(".st-key-job-2")
    expect(bar).to_contain_text("loss")  # its first steps: a curve to draw
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible()

    page.reload()  # a new session: the page finds its job again, with its curve
    expect(page.locator(".st-key-job-2")).to_contain_text("fine-tune")
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible()

    open_from_sidebar(page, "Jobs & runs")
    curve = page.get_by_test_id("stExpander").filter(has_text="Curve of #2")
    expect(curve).to_be_visible()
    expect(curve.get_by_test_id("stPlotlyChart")).to_be_attached()  # drawn from the jobs table
    jobs_bar = page.locator(".st-key-job-2")
    expect(jobs_bar).to_contain_text("done")  # the next test's job needs the CPU worker
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "jobs_curve_after_reload.png"), full_page=True)


def test_a_finished_finetune_is_selectable_in_the_sidebar_without_a_reload(server, page):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    page.goto(f"{server}/finetune")
    _standard_finetune(page, 6)
    page.get_by_role("button", name="Fine-tune as a background job").click()
    expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text("Saved")
    app = page.get_by_test_id("stApp")  # the page reruns the whole app once when it sees the job done
    expect(app).to_have_attribute("data-test-script-state", "notRunning")
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("Fine-tuned checkpoints").click()
    option = page.get_by_role("option", name=re.compile(r"standard-s6-"))
    listbox, ceiling = page.get_by_role("listbox"), time.monotonic() + WAIT_CEILING_MS / 1000
    while True:  # the app's rerun may redraw the sidebar under a click (the list never opens) or open it stale
        assert time.monotonic() < ceiling, "the sidebar never offered the new fine-tune"
        expect(app).to_have_attribute("data-test-script-state", "notRunning")
        sidebar.get_by_role("combobox", name="digits").click()
        try:  # one try: a click a rerun swallowed is clicked again, until the ceiling
            listbox.wait_for(state="visible", timeout=15_000)
        except PlaywrightTimeout:
            continue
        if option.count():  # the list is open: its options are drawn with it
            break
        page.keyboard.press("Escape")
        expect(listbox).to_have_count(0)
    expect(option).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_text("None yet")).to_have_count(0)  # "Your fine-tunes" lists it too
