"""A merge pipeline composed on the Merge page in Chromium: TSV-M, then SVC after it with its own α, the numbers
the engine gives for that pipeline, and the page's link opening the same pipeline in a fresh browser."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.rerun import settled, slide_to
from tests.e2e.test_browser import ARTIFACTS
from tests.e2e.test_links import ZOO_TASKS, _open_merge, _title

pytestmark = pytest.mark.browser
FIRST_OPEN_MS = 400_000  # a ceiling, not a measure (tests/e2e/conftest.py)


def _engine_mean(params: dict) -> float:
    from engine.home import ASSETS_DIR
    from engine.workspace import Workspace

    ws = Workspace.open(ASSETS_DIR / "zoo", cache_dir=Path(os.environ["MERGELAB_HOME"]) / "cache")
    return ws.compare(ZOO_TASKS, "tsv_m+svc", params).mean_merged


def _slider(page, label: str):
    return page.get_by_test_id("stSlider").filter(has_text=label).get_by_role("slider")


def test_tsv_m_then_svc_composed_on_the_merge_page_reopens_from_its_link(server, browser, page):
    from playwright.sync_api import expect

    page.goto(f"{server}/merge")  # a cold first open decodes the zoo's tasks: minutes on a loaded machine
    expect(_title(page)).to_contain_text("mean accuracy", timeout=FIRST_OPEN_MS)
    settled(page)
    page.get_by_test_id("stSelectbox").filter(has_text="Method").first.click()
    page.get_by_role("option", name="TSV-M (task singular vectors)", exact=True).click()
    expect(_slider(page, "α (alpha)").first).to_be_visible()  # the rerun for TSV-M has begun: wait for its end,
    settled(page)  # else its stale copy of the form beside the new one makes two calibrator boxes (CI)
    calibrators = page.get_by_test_id("stMultiSelect").filter(has_text="Calibrators after the merge")
    expect(calibrators).to_have_count(1)
    calibrators.locator("input").click()
    page.get_by_role("option", name="SVC (singular value calibration)", exact=True).click()
    page.keyboard.press("Escape")
    settled(page)
    svc_alpha = _slider(page, "SVC α")
    slide_to(page, svc_alpha, 0.8)  # 1.0 → 0.8 in steps of 0.05
    expect(svc_alpha).to_have_attribute("aria-valuetext", "0.80")
    alpha = float(_slider(page, "α (alpha)").first.get_attribute("aria-valuetext"))
    expected = _engine_mean({"alpha": alpha, "svc.alpha": 0.8})
    expect(_title(page)).to_have_text(f"Merged: mean accuracy {expected:.1%} (interactive split)")
    query = parse_qs(urlsplit(page.url).query)
    assert query["method"] == ["tsv_m"] and query["calibrate"] == ["svc"] and query["svc.alpha"] == ["0.8"], query
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "merge_tsv_m_svc.png"), full_page=True)

    student = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    student.set_default_timeout(120_000)
    _open_merge(student, page.url)
    expect(student.get_by_test_id("stMultiSelect").filter(has_text="Calibrators after the merge")).to_contain_text(
        "SVC (singular value calibration)"
    )
    expect(_slider(student, "SVC α")).to_have_attribute("aria-valuetext", "0.80")
    expect(_title(student)).to_have_text(f"Merged: mean accuracy {expected:.1%} (interactive split)")
    student.screenshot(path=str(ARTIFACTS / "merge_tsv_m_svc_reopened.png"), full_page=True)
    student.context.close()
