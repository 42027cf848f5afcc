"""The sidebar every view shares (collection, checkpoint variants), and its part of the URL (ui/links.py):
`collection=<path>` unless it is the demo zoo, `ckpt=<variant>` when every task uses one non-standard
variant, else `ckpt.<task>=<variant>` for each task not on its standard checkpoint."""

from __future__ import annotations

import streamlit as st

from engine.workspace import Workspace, linearized_tasks
from ui import links, resources
from ui.resources import DEFAULT_COLLECTION, Choice

SIDEBAR = "sidebar"  # the links' scope of the sidebar's values
EVERY = "_ckpt_every"  # the variant every task uses ("standard" when they differ), for `ckpt=` in the URL
STORE_HELP = (
    "How this pool's task vectors are held: in memory when they fit with room to spare; else LoRA adapters as"
    " their factors, and other checkpoints out of core, read from a store built once in the data home. To choose,"
    ' write "store": "memory", "built", "built-bf16" or "factored" in the data home\'s config.json'
    " (README: Large pools)."
)


def sidebar_links(names: dict[str, tuple[str, ...]]) -> list[links.Link]:
    """The sidebar's URL: the collection, then the variant of every task (or of each)."""
    common = [v for v in next(iter(names.values()), ()) if all(v in opts for opts in names.values())]
    every = [links.choice("ckpt", EVERY, common or ["standard"], "standard")]
    per_task = [links.choice(f"ckpt.{t}", f"ckpt.{t}", options, _standard(options)) for t, options in names.items()]
    return [
        links.text("collection", "collection", default=DEFAULT_COLLECTION, blank_is_default=True),
        *every,
        *per_task,
    ]


def sidebar_owns(name: str) -> bool:
    """Whether a URL parameter is the sidebar's (pages leave those to it)."""
    return name in ("collection", "ckpt") or name.startswith("ckpt.")


def sidebar_query() -> list[tuple[str, str]]:
    """The sidebar's part of the URL as (name, value) pairs, to start the links a page builds with."""
    published = st.session_state.get(links.PUBLISHED, {})
    return [(name, v) for name, values in published.items() if sidebar_owns(name) for v in values]


def _standard(options: tuple[str, ...]) -> str:
    return "standard" if "standard" in options else options[0]


def collection_picker() -> str:
    """The collection folder, in the sidebar and the URL, shared by every view; an empty box is the demo zoo."""
    links.restore(sidebar_links({})[:1], scope=SIDEBAR, per_session=True)
    st.sidebar.text_input(
        "Collection folder",
        key="collection",
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
        links.publish(sidebar_links({}), owned=sidebar_owns)
        links.show_notices(SIDEBAR, links=sidebar_links({}))
        return ()  # the view's workspace_or_stop shows the error
    _restore_variants(names)
    for task, options in names.items():
        key = f"ckpt.{task}"
        current = st.session_state.get(key)
        st.session_state[key] = current if current in options else _standard(options)
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
            "Linearized and τJp checkpoints are evaluated as the linearized model f(x; θ₀) + J·(θ − θ₀); "
            "LoRA adapters (lora) as θ₀ + s·B·A. "
            "Your fine-tunes (Fine-tune page) appear here by name."
        )
        chosen = {t: st.session_state[f"ckpt.{t}"] for t in names}
        _explain_a_mix(user, chosen)
    values = set(chosen.values())
    st.session_state[EVERY] = values.pop() if len(values) == 1 else "standard"
    shown = sidebar_links(names)
    links.publish(shown[:2] if st.session_state[EVERY] != "standard" else shown, owned=sidebar_owns)
    links.show_notices(SIDEBAR, links=shown)
    return tuple((t, v) for t, v in chosen.items() if v != "standard")


def _restore_variants(names: dict[str, tuple[str, ...]]) -> None:
    """What the link names: `ckpt=<variant>` for every task, then `ckpt.<task>=<variant>` for each."""
    every, *per_task = sidebar_links(names)[1:]
    before = st.session_state.get(EVERY)
    links.restore([every], scope=SIDEBAR, per_session=True)
    if st.session_state[EVERY] not in (before, "standard"):
        for task in names:
            st.session_state[f"ckpt.{task}"] = st.session_state[EVERY]
    links.restore(per_task, scope=SIDEBAR, per_session=True)


def _explain_a_mix(collection, chosen: dict[str, str]) -> None:
    """Before the page refuses a mix of linearized and standard checkpoints, say why and what to pick."""
    if all(v == "standard" for v in chosen.values()):
        return
    linear = linearized_tasks(collection, chosen)
    if linear and len(linear) < len(chosen):
        st.warning(
            f"{', '.join(f'{t} ({chosen[t]})' for t in linear)} "
            f"{'is a linearized checkpoint' if len(linear) == 1 else 'are linearized checkpoints'}, the other "
            "tasks' are standard. A merge is evaluated either as the network or as its linearization around θ₀, "
            "never both, so this mix is refused: pick a linearized variant (linearized, tau_jp) for every task "
            "with 'every task' above, or set these back to standard.",
            icon=":material/call_split:",
        )


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


def every_task_variant() -> str:
    """The variant the sidebar uses for every task ("standard" when it is the standard one or tasks differ)."""
    return st.session_state.get(EVERY, "standard")


def current_collection() -> str:
    """The sidebar's collection, the demo zoo when its box is empty."""
    return str(st.session_state.get("collection") or "").strip() or DEFAULT_COLLECTION


def sidebar_workspace() -> tuple[str, Choice, Workspace]:
    """The collection and checkpoint choice of the sidebar (app.py renders it), then the cached workspace
    they name (or the engine's error on the page and the rest of the page skipped); the sidebar then says how
    its task vectors are held (the memory plan's line, e.g. "20 × ViT-L-14: 22.6 GiB as float32; opening out of
    core")."""
    collection, choice = current_collection(), st.session_state.get(CHOICE, ())
    ws = resources.workspace_or_stop(collection, choice)
    if ws.store_plan is not None:
        st.sidebar.caption(ws.store_plan.summary(), help=STORE_HELP)
    return collection, choice, ws
