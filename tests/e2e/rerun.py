"""Acting on a dashboard page that reruns after each input, in browser tests.

Streamlit redraws a page on every widget change. Until that rerun ends, a key pressed can land on a copy of a
widget about to be replaced, and a copy left stale beside its new one doubles every locator. The states waited
on here are the page's own: its script idle, no stale element, the slider's value.
"""

from __future__ import annotations

import time


def settled(page) -> None:
    """Waits until the page's script has run to its end and no element is left stale by a rerun."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning")
    expect(page.locator('[data-stale="true"]')).to_have_count(0)


def slide_to(page, slider, target: float) -> None:
    """Arrow keys on `slider` one at a time, each rerun waited for, until it shows `target`.

    A key pressed while the previous press's rerun redraws the slider can be lost (CI: four presses moved it two
    steps; six presses on a freshly opened page moved it none). The ceiling is WAIT_CEILING_MS.
    """
    from tests.e2e.conftest import WAIT_CEILING_MS

    ceiling = time.monotonic() + WAIT_CEILING_MS / 1000
    settled(page)
    while (value := float(slider.get_attribute("aria-valuetext"))) != target:
        assert time.monotonic() < ceiling, f"the slider stayed at {value}, not {target}"
        slider.focus()
        page.keyboard.press("ArrowLeft" if value > target else "ArrowRight")
        settled(page)
