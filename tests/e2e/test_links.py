"""Links that reproduce and state that holds, as a user meets them in Chromium (one server for the module).

Each test is one item of the dashboard's promise to a class: a copied link shows the same numbers, the URL
names things as the engine does and says what it could not use, an error never leaves widgets and chart
disagreeing, a pasted recipe is checked as the command line checks it, results stay until their inputs change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.rerun import settled, slide_to
from tests.e2e.sidebar import open_from_sidebar
from tests.e2e.test_browser import ARTIFACTS

pytestmark = pytest.mark.browser
ZOO_TASKS = ["digits", "faces", "textures", "size", "colours", "bars", "position", "stripes"]


def _engine_mean(tasks: list[str], lam: float | list[float], *, method: str = "task_arithmetic", variant="standard"):
    from engine.home import ASSETS_DIR
    from engine.workspace import Workspace

    ws = Workspace.open(ASSETS_DIR / "zoo", cache_dir=Path(os.environ["MERGELAB_HOME"]) / "cache", variant=variant)
    return ws.compare(tasks, method, {"lam": lam}).mean_merged


def _title(page):
    return page.get_by_test_id("stPlotlyChart").first.locator(".gtitle")


def _open_merge(page, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    expect(_title(page)).to_contain_text("mean accuracy")
    settled(page)


def _lam(page) -> float:
    return float(page.get_by_test_id("stSlider").first.get_by_role("slider").get_attribute("aria-valuetext"))


def _choose(page, label: str, option: str, *, within=None) -> None:
    box = (within or page).get_by_test_id("stSelectbox").filter(has_text=label).first
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    settled(page)


def test_a_copied_link_holds_each_tasks_checkpoint_variant(server, browser, page):
    """A teacher picks the τJp checkpoints for every task and sends the link: a student's fresh browser shows
    the τJp numbers, not the standard ones."""
    from playwright.sync_api import expect

    _open_merge(page, f"{server}/merge")
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("Fine-tuned checkpoints").click()
    _choose(page, "every task", "tau_jp", within=sidebar)
    expected = _engine_mean(ZOO_TASKS, _lam(page), variant="tau_jp")
    expect(_title(page)).to_have_text(f"Merged: mean accuracy {expected:.1%} (interactive split)")
    link = page.url
    assert "ckpt=tau_jp" in link, link
    student = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    student.set_default_timeout(120_000)
    _open_merge(student, link)
    expect(_title(student)).to_have_text(f"Merged: mean accuracy {expected:.1%} (interactive split)")
    # the sidebar's expander opens by itself on non-standard checkpoints
    expect(student.get_by_test_id("stSidebar").get_by_role("combobox", name="digits")).to_have_value("tau_jp")
    student.context.close()


def test_the_url_names_the_method_as_the_engine_does_and_says_what_it_cannot_use(server, page):
    """A link with the engine's names opens TIES; a value out of range is named on the page and left out of
    the URL; the method-qualified links shared before still open."""
    from playwright.sync_api import expect

    _open_merge(page, f"{server}/merge?method=ties&density=7&lam=0.5")
    expect(page.get_by_role("combobox", name="Method")).to_have_value("TIES")
    expect(page.get_by_test_id("stAlertContentWarning")).to_contain_text("density=7 is outside its range 0.01 to 1")
    assert "method=ties" in page.url and "lam=0.5" in page.url and "density" not in page.url, page.url
    thumb = page.get_by_test_id("stSlider").first.get_by_role("slider")  # density, back at its default
    slide_to(page, thumb, 0.21)
    expect(page.get_by_test_id("stAlertContentWarning")).to_have_count(0)  # moved on from the link
    assert "density=0.21" in page.url and "TIES" not in page.url, page.url
    _open_merge(page, f"{server}/merge?task_arithmetic.lam=0.65&tasks=digits&tasks=faces")
    expect(page.get_by_test_id("stSlider").first.get_by_role("slider")).to_have_attribute("aria-valuetext", "0.65")
    expected = _engine_mean(["digits", "faces"], 0.65)
    expect(_title(page)).to_have_text(f"Merged: mean accuracy {expected:.1%} (interactive split)")
    assert "lam=0.65" in page.url and "task_arithmetic.lam" not in page.url, page.url


def test_a_bad_collection_path_then_an_empty_box_shows_the_zoo_with_widgets_and_chart_agreeing(server, page):
    """A mistyped path shows its error; emptying the box (the demo zoo) brings back every task, and the
    slider, the task list and the chart agree without a reload."""
    from playwright.sync_api import expect

    _open_merge(page, f"{server}/merge")
    box = page.get_by_test_id("stSidebar").get_by_role("textbox", name="Collection folder")
    box.fill("/nowhere/at/all")
    box.press("Enter")
    expect(page.get_by_test_id("stAlertContentError").first).to_be_visible()
    settled(page)
    box.fill("")
    box.press("Enter")
    expect(_title(page)).to_contain_text("mean accuracy")
    settled(page)
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
    chosen = page.get_by_test_id("stMultiSelect").first
    for task in ZOO_TASKS:
        expect(chosen).to_contain_text(task)
    expect(page.get_by_test_id("stPlotlyChart").first.locator(".xtick text")).to_have_count(len(ZOO_TASKS))
    lam = _lam(page)
    assert lam == 0.3
    expected = _engine_mean(ZOO_TASKS, lam)
    expect(_title(page)).to_have_text(f"Merged: mean accuracy {expected:.1%} (interactive split)")


def test_a_pasted_recipe_is_checked_as_the_command_line_checks_it_then_applied_whole(server, page):
    """An out-of-range recipe shows the command line's message and changes nothing (not the widgets, not the
    URL, not the next page); a good one sets its checkpoints, tasks, method and parameters."""
    from playwright.sync_api import expect

    from engine.errors import MergelabError
    from engine.runs.recipes import parse_recipe

    bad = "method: ties\nparams: {density: 7}\n"
    with pytest.raises(MergelabError) as cli:
        parse_recipe(bad, source="pasted recipe", defaults={"collection": "assets/zoo"})
    _open_merge(page, f"{server}/merge")
    before = page.url
    page.get_by_text("Load a recipe").click()
    recipe_box = page.get_by_label("Recipe (JSON or YAML)")
    recipe_box.fill(bad)
    recipe_box.press("Control+Enter")
    settled(page)
    page.get_by_role("button", name="Apply recipe").click()
    expect(page.get_by_test_id("stAlertContentError")).to_have_text(str(cli.value))
    settled(page)
    assert page.url == before
    expect(page.get_by_role("combobox", name="Method")).to_have_value("Task arithmetic")
    open_from_sidebar(page, "Zoo")
    expect(page.get_by_test_id("stHeading").first).to_contain_text("Checkpoints and tasks")
    settled(page)
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
    expect(page.get_by_test_id("stException")).to_have_count(0)

    _open_merge(page, f"{server}/merge")
    page.get_by_text("Load a recipe").click()
    recipe_box = page.get_by_label("Recipe (JSON or YAML)")
    recipe_box.fill("variant: tau_jp\ntasks: [digits, faces]\nmethod: ties\nparams: {lam: 1.4}\n")
    recipe_box.press("Control+Enter")
    settled(page)
    page.get_by_role("button", name="Apply recipe").click()
    expected = _engine_mean(["digits", "faces"], 1.4, method="ties", variant="tau_jp")
    expect(_title(page)).to_have_text(f"Merged: mean accuracy {expected:.1%} (interactive split)")
    settled(page)
    for part in ("ckpt=tau_jp", "method=ties", "lam=1.4", "tasks=digits", "tasks=faces"):
        assert part in page.url, page.url


def test_a_sweep_and_a_test_evaluation_stay_until_their_inputs_change(server, page):
    """The λ sweep stays while λ moves (it covers every λ) and goes when the tasks change; the test numbers
    stay until any setting changes."""
    from playwright.sync_api import expect

    _open_merge(page, f"{server}/merge?tasks=digits&tasks=faces")
    page.get_by_role("button", name="λ sweep", exact=True).click()
    sweep = page.get_by_test_id("stPlotlyChart").filter(has_text="Accuracy over lam")
    expect(sweep).to_be_visible()
    page.get_by_role("button", name="Evaluate on test").click()
    expect(page.get_by_text("Test: mean accuracy")).to_be_visible()
    settled(page)
    slide_to(page, page.get_by_test_id("stSlider").first.get_by_role("slider"), 0.7)
    expect(sweep).to_be_visible()
    expect(page.get_by_text("Test: mean accuracy")).to_have_count(0)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "merge_sweep_kept.png"), full_page=True)
    page.get_by_test_id("stMultiSelect").first.locator("input").click()
    page.keyboard.press("Backspace")  # removes the last chip, faces
    page.keyboard.press("Escape")
    settled(page)
    expect(sweep).to_have_count(0)


def test_mixing_linearized_and_standard_checkpoints_is_explained_in_the_sidebar(server, page):
    """One task on its τJp checkpoint, the others standard: the sidebar says why that is refused and what to
    pick; the page shows the engine's error, not a traceback."""
    from playwright.sync_api import expect

    page.goto(f"{server}/merge?ckpt.digits=tau_jp")
    warning = page.get_by_test_id("stSidebar").get_by_test_id("stAlertContentWarning")
    expect(warning).to_contain_text("digits (tau_jp) is a linearized checkpoint")
    expect(warning).to_contain_text("pick a linearized variant (linearized, tau_jp) for every task")
    expect(page.get_by_test_id("stException")).to_have_count(0)
