"""Widget keys and their defaults, set once per session; bound widgets mirror them in the URL."""
from __future__ import annotations

import streamlit as st

from ui.resources import DEFAULT_COLLECTION

DEFAULTS = {"collection": DEFAULT_COLLECTION, "method": "task_arithmetic", "per_task": False}


def init_defaults() -> None:
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
