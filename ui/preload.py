"""The dashboard's heavy imports, started while the server starts (`python serve.py`).

Under `streamlit run app.py` torch, open_clip (with the transformers and torchvision it pulls in) and the engine
are imported by the first browser session's script run: ~7 s of a ~10 s cold start on 2 cores, spent after the
visitor arrived. `serve.py` starts `start_preload()` before the server, so those imports overlap the server's
start and the browser's page load. app.py calls `wait_for_preload()` before its own imports, so two threads never
import the same modules at once (Python's per-module import locks can deadlock on a cycle across threads).
The thread is found by its name, so nothing here holds state; under plain `streamlit run` there is none to wait for.
"""

from __future__ import annotations

import importlib
import threading

PRELOAD_THREAD = "mergelab-preload"
# What every page's first run imports, heaviest first: the Workspace (torch), the resources and figures.
PRELOADED_MODULES = ("ui.state", "ui.resources", "ui.figures", "ui.merge_panels", "ui.widgets")


def start_preload() -> threading.Thread:
    """Import the dashboard's modules and register the model configs with open_clip, in a daemon thread."""
    thread = threading.Thread(target=_preload, name=PRELOAD_THREAD, daemon=True)
    thread.start()
    return thread


def wait_for_preload() -> None:
    """Block until the preload thread (if this process started one) has finished its imports."""
    for thread in threading.enumerate():
        if thread.name == PRELOAD_THREAD and thread is not threading.current_thread():
            thread.join()


def _preload() -> None:
    for name in PRELOADED_MODULES:
        importlib.import_module(name)
    from engine.models import list_architectures

    list_architectures()  # open_clip itself (~3 s): imported on a page's first evaluation otherwise
