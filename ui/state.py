"""Widget keys and their defaults, set once per session; bound widgets mirror them in the URL."""

from __future__ import annotations

import streamlit as st

from engine.workspace import Workspace
from ui import resources
from ui.resources import DEFAULT_COLLECTION, Choice

DEFAULTS = {"collection": DEFAULT_COLLECTION, "method": "task_arithmetic", "per_task": False}


def init_defaults() -> None:
    """Defaults for the shared widgets, except where the URL names a value: a default already in session
    state would win over the link (`merge?method=iso_c` opened task arithmetic)."""
    for key, value in DEFAULTS.items():
        if key not in st.query_params:
            st.session_state.setdefault(key, value)


def collection_picker() -> str:
    """The collection folder, in the sidebar and the URL, shared by every view; an empty box is the demo zoo."""
    st.sidebar.text_input(
        "Collection folder",
        key="collection",
        bind="query-params",
        help="a collection (folder with collection.json), a pool folder (task_vectors "
        "layout, open_clip or Hugging Face files) or a pool manifest (.yaml/.json), "
        "under the data home, assets/ or a root listed in the data home's config.json; empty: the demo zoo",
    )
    return current_collection()


def checkpoint_picker(collection: str) -> Choice:
    """Which fine-tuned checkpoint of each task the views use, in the sidebar: the collection's own and the
    user's fine-tunes from the data home. Returns the non-standard picks ((task, name), ...)."""
    from engine.errors import MergelabError

    try:
        user = resources.user_collection(collection)
        names = {t: user.variants(t) for t in user.task_names}
    except MergelabError:
        return ()  # the view's workspace_or_stop shows the error
    for task, options in names.items():
        key = f"ckpt.{task}"
        current = st.session_state.get(key)
        st.session_state[key] = current if current in options else ("standard" if "standard" in options else options[0])
    chosen = {t: st.session_state[f"ckpt.{t}"] for t in names}
    with st.sidebar.expander("Fine-tuned checkpoints", expanded=any(v != "standard" for v in chosen.values())):
        common = [v for v in next(iter(names.values()), ()) if all(v in opts for opts in names.values())]
        st.selectbox(
            "every task",
            ["(per task)", *common],
            key="ckpt_all",
            on_change=_apply_to_all,
            args=(tuple(names),),
            help="use one variant (e.g. linearized, tau_jp) for all tasks",
        )
        for task, options in names.items():
            st.selectbox(task, options, key=f"ckpt.{task}")
        st.caption(
            "Linearized and τJp checkpoints are evaluated as the linearized model f(x; θ₀) + J·(θ − θ₀). "
            "Your fine-tunes (Fine-tune page) appear here by name."
        )
    return tuple((t, st.session_state[f"ckpt.{t}"]) for t in names if st.session_state[f"ckpt.{t}"] != "standard")


def _apply_to_all(tasks: tuple[str, ...]) -> None:
    variant = st.session_state.get("ckpt_all")
    if variant and variant != "(per task)":
        for task in tasks:
            st.session_state[f"ckpt.{task}"] = variant


CHOICE = "checkpoint_choice"  # the sidebar's non-standard checkpoint picks, kept for the page that runs next


def sidebar_pickers() -> None:
    """The collection and checkpoint pickers, rendered by app.py on every page. Widgets of the entry script
    keep their values when the user switches pages; a page's own widgets are dropped when another page runs,
    which used to empty the collection box on every sidebar click."""
    collection = collection_picker()
    st.session_state[CHOICE] = checkpoint_picker(collection)


def current_collection() -> str:
    """The sidebar's collection, the demo zoo when its box is empty."""
    return str(st.session_state.get("collection") or "").strip() or DEFAULT_COLLECTION


def sidebar_workspace() -> tuple[str, Choice, Workspace]:
    """The collection and checkpoint choice of the sidebar (app.py renders it), then the cached workspace
    they name (or the engine's error on the page and the rest of the page skipped)."""
    collection, choice = current_collection(), st.session_state.get(CHOICE, ())
    return collection, choice, resources.workspace_or_stop(collection, choice)
