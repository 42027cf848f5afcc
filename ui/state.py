"""Widget keys and their defaults, set once per session; bound widgets mirror them in the URL."""
from __future__ import annotations

import streamlit as st

from ui.resources import DEFAULT_COLLECTION

DEFAULTS = {"collection": DEFAULT_COLLECTION, "method": "task_arithmetic", "per_task": False}


def init_defaults() -> None:
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)


def collection_picker() -> str:
    """The collection folder, in the sidebar and the URL, shared by every view."""
    return st.sidebar.text_input("Collection folder", key="collection", bind="query-params",
                                 help="a folder with collection.json under the data home, assets/ "
                                      "or a root listed in the data home's config.json")
