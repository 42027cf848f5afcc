"""The Sweeps page as a researcher meets it in Chromium, on the demo zoo with the in-process runner: a small grid
started from the page's form, followed to done on Jobs & runs, drawn as its Pareto plane, and its best trial
opened in Merge by the page's link. One server for the module (its own data home, so the form opens expanded)."""

from __future__ import annotations

import os
import re

import pytest

from tests.e2e.rerun import settled
from tests.e2e.sidebar import open_from_sidebar
from tests.e2e.test_browser import ARTIFACTS

pytestmark = pytest.mark.browser
GRID = "lam=0.1:0.5:3"  # 3 trials of task arithmetic on the zoo's 8 tasks: 0.1, 0.3, 0.5


def test_a_grid_started_from_the_form_is_followed_drawn_and_its_best_trial_opens_in_merge(server, page, data_home):
    from playwright.sync_api import expect

    from engine.runs.log import RunLog
    from engine.search.logged import logged_sweeps, read_sweep

    assert not os.environ.get("MERGELAB_RAY"), "this test runs the in-process runner: unset MERGELAB_RAY"
    page.goto(f"{server}/sweeps")
    _start_grid_from_the_form(page, method="Task arithmetic", grid=GRID)
    expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text("Started job #1")

    open_from_sidebar(page, "Jobs & runs")
    bar = page.locator(".st-key-job-1")
    expect(bar).to_contain_text("grid sweep")
    expect(bar).to_contain_text("done")

    (run,) = logged_sweeps(RunLog(data_home / "runs" / "runs.sqlite3"))
    sweep = read_sweep(RunLog(data_home / "runs" / "runs.sqlite3"), run.id)
    assert (
        run.status == "done"
        and not run.device.startswith("ray")
        and [t.params["lam"] for t in sweep.trials] == [0.1, 0.3, 0.5]
    )
    best = sweep.best

    open_from_sidebar(page, "Sweeps")
    plane = page.get_by_test_id("stPlotlyChart").first
    expect(plane.locator(".legendtext").filter(has_text="Pareto front")).to_be_visible()
    expect(plane.locator(".scatterlayer .point")).to_have_count(3 + 1 + len(_front(sweep)))
    expect(page.get_by_text(f"Best trial: #{best.index}")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "sweeps_grid_from_form.png"), full_page=True)

    link = page.get_by_role("link", name="Open the best trial in Merge")
    href = link.get_attribute("href")
    assert re.search(rf"[?&]lam={best.params['lam']:.6g}(&|$)", href), href
    with page.context.expect_page() as opened:  # Streamlit opens a markdown link in a new tab
        link.click()
    merge = opened.value
    expect(merge.get_by_test_id("stPlotlyChart").first.locator(".gtitle")).to_contain_text("mean accuracy")
    settled(merge)
    assert "/merge" in merge.url
    slider = merge.get_by_test_id("stSlider").first.get_by_role("slider")
    assert float(slider.get_attribute("aria-valuetext")) == pytest.approx(best.params["lam"])


def _start_grid_from_the_form(page, *, method: str, grid: str) -> None:
    """The Sweeps form as a person fills it: the method chosen, the grid typed, then Start."""
    from playwright.sync_api import expect

    expect(page.get_by_role("button", name="Start as a background job")).to_be_visible()
    settled(page)
    page.get_by_role("combobox", name="method").click()
    page.get_by_role("option", name=method, exact=True).click()
    settled(page)
    box = page.get_by_role("textbox", name="grid")
    box.fill(grid)
    box.press("Enter")
    settled(page)
    page.get_by_role("button", name="Start as a background job").click()


def _front(sweep) -> tuple[int, ...]:
    """The Pareto front's points as the page draws them (mean vs worst task, its default axes)."""
    from engine.search.logged import objective_plane

    return objective_plane(sweep, "mean", "worst").front
