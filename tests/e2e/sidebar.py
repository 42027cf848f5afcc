"""Opening a page from the sidebar, as a person does, in browser tests."""

from __future__ import annotations

import re
import time


def open_from_sidebar(page, title: str) -> None:
    """Clicks the navigation link `title` until the browser is on its page.

    A page with a running job reruns a fragment every second; a click that lands while that rerun redraws the
    sidebar can be swallowed (CI: the page stayed on Fine-tune for the whole 300 s ceiling). The state waited on is
    the link's own address in the location bar; a second click on the same link only opens the page again.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from tests.e2e.conftest import WAIT_CEILING_MS

    link = page.get_by_test_id("stSidebarNavLink").filter(has_text=title)
    address = re.compile(re.escape(link.get_attribute("href")) + r"([?#].*)?$")
    ceiling = time.monotonic() + WAIT_CEILING_MS / 1000
    while True:
        assert time.monotonic() < ceiling, f"the sidebar's {title!r} never opened its page"
        link.click()
        try:
            page.wait_for_url(address, timeout=15_000)
            return
        except PlaywrightTimeout:
            continue
