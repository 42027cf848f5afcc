"""Jobs that stay yours, in a real browser: the browser that started a job keeps its Cancel through a reload
and in a second tab (one browser context: one cookie jar), while a second browser opening the same link sees
the job without a Cancel. The token lives in a cookie, never in the URL (ui/owner.py)."""

from __future__ import annotations

import pytest

from tests.e2e.test_jobs_browser import _standard_finetune
from ui.owner import COOKIE

pytestmark = pytest.mark.browser
SLOW_S = 240_000  # ms: a page's first open on a loaded machine


def test_a_job_stays_with_its_browser_and_a_shared_link_hands_out_no_cancel(server, browser, page):
    from playwright.sync_api import expect

    link = f"{server}/finetune"
    page.goto(link, timeout=SLOW_S)
    start = page.get_by_role("button", name="Fine-tune as a background job")
    expect(start).to_be_visible(timeout=SLOW_S)  # the first open builds the workspace
    _standard_finetune(page, 100_000)  # runs until this test cancels it
    app = page.get_by_test_id("stApp")  # the settings' reruns done before the click (a loaded machine lags)
    expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=SLOW_S)
    start.click()
    expect(page.locator(".st-key-job-1")).to_contain_text("running", timeout=SLOW_S)
    expect(page.get_by_role("button", name="Cancel")).to_be_visible(timeout=SLOW_S)
    assert COOKIE in {c["name"] for c in page.context.cookies()} and COOKIE not in page.url

    page.reload()  # a new Streamlit session, the same browser
    expect(page.locator(".st-key-job-1")).to_be_visible(timeout=SLOW_S)
    expect(page.get_by_role("button", name="Cancel")).to_be_visible(timeout=SLOW_S)

    tab = page.context.new_page()  # a second tab of the same browser
    tab.goto(link, timeout=SLOW_S)
    expect(tab.locator(".st-key-job-1")).to_be_visible(timeout=SLOW_S)
    expect(tab.get_by_role("button", name="Cancel")).to_be_visible(timeout=SLOW_S)

    stranger_context = browser.new_context()  # another browser, given the same link
    try:
        stranger = stranger_context.new_page()
        stranger.goto(link, timeout=SLOW_S)
        expect(stranger.locator(".st-key-job-1")).to_be_visible(timeout=SLOW_S)
        expect(stranger.get_by_text("another session's")).to_be_visible(timeout=SLOW_S)
        expect(stranger.get_by_role("button", name="Cancel")).to_have_count(0)
        # the stranger's token is set by the page's script after it draws: wait for the cookie, not a time
        stranger.wait_for_function(f"document.cookie.includes('{COOKIE}=')", timeout=SLOW_S)
        mine = {c["value"] for c in page.context.cookies() if c["name"] == COOKIE}
        theirs = {c["value"] for c in stranger_context.cookies() if c["name"] == COOKIE}
        assert mine and theirs and mine != theirs  # each browser its own token
    finally:
        stranger_context.close()

    tab.get_by_role("button", name="Cancel").click()  # the second tab can stop it, too
    expect(tab.locator(".st-key-job-1")).to_contain_text("cancelled", timeout=SLOW_S)
