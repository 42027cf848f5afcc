"""mergelab dashboard: navigation and the sidebar pickers every view shares.

Views live in views/, not pages/: with a pages/ folder, Streamlit runs a deep-linked page without this file
when it is a fresh server's first request (tests/e2e checks deep links)."""

import streamlit as st

from ui.preload import wait_for_preload

wait_for_preload()  # `python serve.py` imports torch, open_clip and the engine while the server starts

from engine.errors import MergelabError  # noqa: E402
from ui import links, messages, owner  # noqa: E402
from ui import pages as ui_pages  # noqa: E402
from ui.state import sidebar_pickers  # noqa: E402

st.set_page_config(page_title="mergelab", page_icon=":material/science:", layout="wide")
owner.remember_browser()  # jobs stay this browser's across reloads and tabs (ui/owner.py)
pages = st.navigation(
    {
        section: [
            st.Page(v.file, title=v.title, icon=v.icon, url_path=v.url_path or None, default=not v.url_path)
            for v in views
        ]
        for section, views in ui_pages.sections().items()
    },
    expanded=True,  # 14 pages: collapsed past twelve, "Jobs & runs" would hide behind "View more"
)
links.begin_run(pages.url_path)  # the URL is read on a page's first run only (ui/links.py)
sidebar_pickers()  # here, not in the views: the entry script's widgets survive page switches
try:
    pages.run()
except MergelabError as exc:  # an engine error no page caught (a pool too large for what it asks): shown
    st.error(messages.shown(exc))
