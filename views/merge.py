"""Merge: pick tasks and a method, move the sliders, see every task's accuracy at once."""

import streamlit as st

from engine.errors import MergelabError
from engine.jobs.warm import opening_setting
from engine.merge import METHODS, get_method
from engine.merge.pipeline import CALIBRATORS
from engine.runs.recipe_runner import select
from engine.runs.recipes import parse_recipe
from engine.taujp.preview import preview_gap
from ui import figures, formats, links, messages, pages, resources, widgets
from ui import merge_panels as panels
from ui.state import sidebar_owns, sidebar_workspace

st.header(pages.heading("merge"))
collection, choice, ws = sidebar_workspace()
MERGE = "merge"  # the links' scope of this page's values


def opened(method_name: str):
    """The method as this page opens it: a slow one at the setting the collection's stored comparison chose
    (WUDI on the zoo: the 1000 steps whose parts ship with it), others at their declared defaults."""
    method = get_method(method_name)
    return method.with_defaults(opening_setting(resources.build_report(collection), method))  # report cached


def page_links(method_name: str, tasks: list[str], *, per_task: bool, calibrate=()) -> list[links.Link]:
    """This page's part of the URL: the tasks, the method by its engine name, the calibrators after it, their
    parameters (`svc.alpha`), the preview."""
    shared = [
        links.subset("tasks", "tasks", ws.task_names),
        links.choice("method", "method", list(METHODS), "task_arithmetic"),
        links.flag("per_task", "per_task"),
        links.subset("calibrate", "calibrate", list(CALIBRATORS), default=[]),
    ]
    method = opened(method_name)
    preview = [links.flag("preview", "preview")] if method_name == "task_arithmetic" else []
    steps = widgets.calibrator_links(calibrate)
    return [*shared, *widgets.param_links(method, tasks, per_task=per_task), *steps, *preview]


def restore_from_link() -> None:
    """The URL's tasks, method and parameters into the widgets' state, before any widget exists; what the
    page cannot use is named in a notice. Tasks of another collection (the box changed) are dropped."""
    if st.session_state.get("_merge_tasks_of") != ws.task_names:
        st.session_state["tasks"] = list(ws.task_names)
        st.session_state["_merge_tasks_of"] = ws.task_names
    links.restore(page_links("task_arithmetic", [], per_task=False)[:4], scope=MERGE)
    state = st.session_state
    if get_method(state["method"]).task_specific and state["calibrate"]:  # it serves each task its own model
        name = METHODS[state["method"]].display_name
        links.notice(f"Ignored `calibrate` from the link: {name} is {panels.TASK_SPECIFIC}.", scope=MERGE)
        state["calibrate"] = []
    wanted = page_links(state["method"], state["tasks"], per_task=state["per_task"], calibrate=state["calibrate"])
    links.restore(wanted[4:], scope=MERGE)
    claimed = {link.name for link in wanted} | {a for link in wanted for a in link.aliases}
    # Only on the run that opens the link: on the rerun a changed method triggers, the URL still holds the
    # previous method's values (publish runs after the widgets), which are not "from the link".
    ignored = links.unclaimed(lambda name: name in claimed or sidebar_owns(name)) if links.entering() else []
    if ignored:
        links.notice(
            f"Ignored {', '.join(ignored)} from the link: not a setting of {METHODS[state['method']].display_name}"
            + (" with one value for all tasks" if not state["per_task"] else "")
            + ".",
            scope=MERGE,
        )


def apply_recipe() -> None:
    """Callback of "Apply recipe": checks the recipe as `python -m engine run` does (engine.runs.recipe_runner
    .select), then sets all of it (collection, checkpoints, tasks, method, parameters) before the widgets run.
    A recipe that fails changes nothing and shows the command line's message."""
    try:
        recipe = parse_recipe(
            st.session_state.get("_recipe_text", ""), source="pasted recipe", defaults={"collection": collection}
        )
        target = resources.user_collection(recipe.collection)
        picked = select(recipe, target)
    except MergelabError as exc:
        st.session_state["_recipe_error"] = messages.shown(exc)
        return
    state = st.session_state
    state.update(collection=recipe.collection, tasks=list(picked.tasks), method=recipe.method, _recipe_error=None)
    state.update({f"ckpt.{t}": v for t, v in picked.variants.items()}, _merge_tasks_of=target.task_names)
    state["per_task"] = widgets.set_params_in_state(get_method(recipe.method), picked.tasks, recipe.params)


def controls() -> tuple[list[str], str, bool, dict, tuple[str, ...]]:
    """Tasks, method, one λ per task, the method's sliders and the calibrators after it, in the left column."""
    tasks = st.multiselect("Tasks to merge", ws.task_names, key="tasks")
    method_name = st.selectbox(
        "Method", list(METHODS), key="method", format_func=lambda name: METHODS[name].display_name
    )
    per_task = st.toggle("one λ per task", key="per_task")
    method = opened(method_name)
    if method.provisional:
        st.caption(
            f"**Provisional definition.** {method.display_name}: the paper body was not available, so the "
            "importance aggregation, normalisation and threshold are our choices. Importance maps are computed "
            "once per checkpoint and cached."
        )
    params = widgets.method_params(method, tasks, per_task=per_task, columns=1)
    calibrate, steps = panels.pipeline_controls(method)
    return tasks, method_name, per_task, {**params, **steps}, calibrate


HELP = {
    "mean accuracy (merged)": "Top-1 accuracy of the merged model on each task's interactive split (a fixed "
    "subset of val), averaged over the tasks picked: the blue bars' mean.",
    "mean normalized accuracy": "Per task, the merged model's accuracy divided by that task's own fine-tuned "
    "model's (blue bar ÷ green bar), averaged over the tasks: 100% means the merge does as well as every expert. "
    "The number the merging papers report.",
    "tasks · images": "How many tasks are merged, and how many images of their interactive splits were evaluated.",
}


def headline(column, comparison, tasks: list[str]) -> None:
    """The two mean accuracies (with their change since the last move) and the evaluation's size."""
    previous = st.session_state.get("_previous_means")
    means = (comparison.mean_merged, comparison.mean_normalized)
    changes = [formats.signed_percent(now - was) for now, was in zip(means, previous)] if previous else [None] * 2
    a, b, c = column.columns(3)
    for cell, label, value, change in zip((a, b), list(HELP)[:2], means, changes):
        off = "off" if change == "0.0%" else "normal"
        cell.metric(label, formats.percent(value), delta=change, delta_color=off, help=HELP[label])
    images = f"{len(tasks)} · {sum(comparison.merged.total.values())}"
    c.metric("tasks · images", images, help=HELP["tasks · images"])
    st.session_state["_previous_means"] = means


restore_from_link()
state = st.session_state
shown = page_links(state["method"], state["tasks"], per_task=state["per_task"], calibrate=state["calibrate"])
links.show_notices(MERGE, links=shown)
left, right = st.columns([1, 2.4], gap="medium")
with left:
    tasks, method_name, per_task, params, calibrate = controls()
    method = get_method(method_name)
    plain_ta = method_name == "task_arithmetic" and not calibrate  # the preview linearizes TA alone
    preview_on = plain_ta and st.toggle(
        "Tangent-space preview",
        key="preview",
        help="bars from cached Jacobian-vector products at once, then the exact evaluation",
    )
wanted = page_links(method_name, tasks, per_task=per_task, calibrate=calibrate)
links.publish(wanted, owned=lambda name: not sidebar_owns(name))
with right:
    if not tasks:
        st.info("Pick at least one task.")
        st.stop()
    if method.importance:
        widgets.require_importance(ws, method.importance)
    metrics, bars = st.container(), st.empty()
    preview = None
    if preview_on:
        with st.spinner("Caching tangent features of the interactive split (once)…"):
            preview = ws.taujp.preview(tasks, params)
        bars.plotly_chart(figures.preview_bars(preview), key="preview_bars")
    setting = panels.Setting(ws, collection, choice, tuple(tasks), method, params, calibrate)
    panels.mask_note(setting, per_task=per_task)
    if ws.merges.needs_job(tasks, method_name, setting.base_params):
        panels.parts_job(setting)
    try:
        comparison = ws.compare(tasks, method_name, params, split="interactive", calibrate=calibrate)
    except MergelabError as exc:
        st.error(messages.shown(exc))
        st.stop()
    headline(metrics, comparison, tasks)
    bars.plotly_chart(figures.accuracy_bars(comparison, preview=preview), key="accuracy_bars")
if preview is not None:
    gap = preview_gap(preview, comparison.merged.accuracy)
    kind = (
        "exact for these linearized checkpoints (the gap is 0 up to ties)"
        if ws.linearized
        else "a first-order approximation for these standard fine-tunes"
    )
    st.caption(
        f"Tangent preview vs exact: mean |gap| {gap:.1%}. The preview is the linearized model "
        f"f(x; θ₀) + Σₜ λₜ J f(x; θ₀)·τₜ: {kind}."
    )
steps = "".join(f"; then {CALIBRATORS[c].display_name}: {CALIBRATORS[c].formula}" for c in calibrate)
st.caption(
    f"{method.display_name}: {method.formula}, with τₜ = θₜ − θ₀{steps}. Bars: accuracy on the interactive split "
    "(a fixed subset of val) of the zero-shot model θ₀, the merge, and each task's own fine-tuned model. "
    "Normalized accuracy = merged / fine-tuned, averaged over tasks."
)
if st.toggle(
    "Show what the method keeps, and where tasks disagree",
    key="show_sparsity",
    help="kept fraction per task and sign conflicts per layer; computed only while this is on",
):
    panels.sparsity_panel(setting)
sweep_col, test_col = st.columns(2)
panels.sweep_panel(setting, sweep_col)
panels.test_panel(setting, test_col)
panels.keep_panel(setting, comparison)
with st.expander("Load a recipe"):
    st.text_area("Recipe (JSON or YAML)", key="_recipe_text", placeholder="method: task_arithmetic\nparams: {lam: 0.3}")
    st.button("Apply recipe", on_click=apply_recipe)
    if st.session_state.get("_recipe_error"):
        st.error(st.session_state["_recipe_error"])
