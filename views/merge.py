"""Merge: pick tasks and a method, move the sliders, see every task's accuracy at once."""

from pathlib import Path

import streamlit as st

from engine.errors import MergelabError
from engine.home import DataHome
from engine.jobs.runner import JobState
from engine.jobs.sweep import record_sweep
from engine.merge import METHODS, get_method
from engine.runs.recipe_runner import run_recipe, save_merge_run, select
from engine.runs.recipes import MergeRecipe, parse_recipe
from engine.taujp.preview import preview_gap
from ui import figures, formats, links, pages, resources, widgets
from ui.state import sidebar_owns, sidebar_workspace

st.header(pages.heading("merge"))
collection, choice, ws = sidebar_workspace()
MERGE = "merge"  # the links' scope of this page's values


def page_links(method_name: str, tasks: list[str], *, per_task: bool) -> list[links.Link]:
    """This page's part of the URL: the tasks, the method by its engine name, its parameters, the preview."""
    shared = [
        links.subset("tasks", "tasks", ws.task_names),
        links.choice("method", "method", list(METHODS), "task_arithmetic"),
        links.flag("per_task", "per_task"),
    ]
    method = get_method(method_name)
    preview = [links.flag("preview", "preview")] if method_name == "task_arithmetic" else []
    return [*shared, *widgets.param_links(method, tasks, per_task=per_task), *preview]


def restore_from_link() -> None:
    """The URL's tasks, method and parameters into the widgets' state, before any widget exists; what the
    page cannot use is named in a notice. Tasks of another collection (the box changed) are dropped."""
    if st.session_state.get("_merge_tasks_of") != ws.task_names:
        st.session_state["tasks"] = list(ws.task_names)
        st.session_state["_merge_tasks_of"] = ws.task_names
    links.restore(page_links("task_arithmetic", [], per_task=False)[:3], scope=MERGE)
    state = st.session_state
    wanted = page_links(state["method"], state["tasks"], per_task=state["per_task"])
    links.restore(wanted[3:], scope=MERGE)
    claimed = {link.name for link in wanted} | {a for link in wanted for a in link.aliases}
    ignored = links.unclaimed(lambda name: name in claimed or sidebar_owns(name))
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
        st.session_state["_recipe_error"] = str(exc)
        return
    state = st.session_state
    state.update(collection=recipe.collection, tasks=list(picked.tasks), method=recipe.method, _recipe_error=None)
    state.update({f"ckpt.{t}": v for t, v in picked.variants.items()}, _merge_tasks_of=target.task_names)
    state["per_task"] = widgets.set_params_in_state(get_method(recipe.method), picked.tasks, recipe.params)


restore_from_link()
state = st.session_state
links.show_notices(MERGE, links=page_links(state["method"], state["tasks"], per_task=state["per_task"]))
with st.expander("Load a recipe"):
    st.text_area("Recipe (JSON or YAML)", key="_recipe_text", placeholder="method: task_arithmetic\nparams: {lam: 0.3}")
    st.button("Apply recipe", on_click=apply_recipe)
    if st.session_state.get("_recipe_error"):
        st.error(st.session_state["_recipe_error"])
tasks = st.multiselect("Tasks to merge", ws.task_names, key="tasks")
left, right = st.columns([2, 1])
method_name = left.selectbox("Method", list(METHODS), key="method", format_func=lambda name: METHODS[name].display_name)
per_task = right.toggle("one λ per task", key="per_task")
method = get_method(method_name)
if method.provisional:
    st.caption(
        f"**Provisional definition.** {method.display_name}: the paper body was not available, so the "
        "importance aggregation, normalisation and threshold are our choices (engine/sta/importance.py). "
        "Importance maps are computed once per checkpoint and cached."
    )
params = widgets.method_params(method, tasks, per_task=per_task)
links.publish(page_links(method_name, tasks, per_task=per_task), owned=lambda name: not sidebar_owns(name))
if not tasks:
    st.info("Pick at least one task.")
    st.stop()
if method.importance:
    widgets.require_importance(ws, method.importance)
scale_label = method.scale.symbol or method.scale.name

preview = None
bars = st.empty()
if method_name == "task_arithmetic" and st.toggle(
    "Tangent-space preview",
    key="preview",
    help="bars from cached Jacobian-vector products at once, then the exact evaluation",
):
    with st.spinner("Caching tangent features of the interactive split (once)…"):
        preview = ws.preview(tasks, params)
    bars.plotly_chart(figures.preview_bars(preview), key="preview_bars")


@st.fragment(run_every=1.0)
def parts_job_live(setting: str) -> None:
    """The parts job's progress and live loss curve; the tick that sees it done reruns the page, which
    then merges from the parts it left (every later slider move is one add)."""
    if st.session_state.get("parts_job_for") != setting:
        return
    job = widgets.job_progress("parts_job")
    if job.state is JobState.DONE:
        st.rerun(scope="app")
    if job.state is JobState.FAILED:
        st.error(job.error.strip().splitlines()[-1])
    if job.metrics.get("loss"):
        st.plotly_chart(figures.parts_loss_curve(job.metrics["loss"], method=method.display_name), key="parts_loss")


if ws.needs_job(tasks, method_name, params):
    expensive = {n: params[n] for n in method.expensive if n in params}
    setting = f"{method_name}:{sorted(expensive.items())}:{tasks}"
    work = (
        f"{int(expensive.get('steps', method.params[-1].default))} Adam steps on every layer"
        if method.iterative
        else "the SVDs of every layer of this large model"
    )
    st.info(
        f"{method.display_name} first computes its parts for this setting: {work}. That runs as a "
        f"background job (progress below, cancel any time); then every {scale_label} move re-composes from "
        "them at once, and they stay in the data home for the next session."
    )
    if st.button(f"Compute {method.display_name}", key="parts_start", type="primary"):
        args = {"method": method_name, "params": expensive, "tasks": list(tasks)}
        spec = resources.job_spec("merge_parts", ws, collection, choice, args, name=f"{method.display_name} parts")
        st.session_state.update(parts_job=resources.submit_job(spec), parts_job_for=setting)
    widgets.restore_job(  # after a reload: the parts job this setting started, with its live curve
        "parts_job",
        "merge_parts",
        collection,
        for_key="parts_job_for",
        setting_of=lambda args: f"{args['method']}:{sorted(args['params'].items())}:{args['tasks']}",
    )
    parts_job_live(setting)
    st.stop()
try:
    comparison = ws.compare(tasks, method_name, params, split="interactive")
except MergelabError as exc:
    st.error(str(exc))
    st.stop()
previous = st.session_state.get("_previous_means")
means = (comparison.mean_merged, comparison.mean_normalized)
a, b, c = st.columns(3)
changes = [formats.signed_percent(now - before) for now, before in zip(means, previous)] if previous else [None] * 2
for column, label, value, change in zip((a, b), ("mean accuracy (merged)", "mean normalized accuracy"), means, changes):
    column.metric(label, formats.percent(value), delta=change, delta_color="off" if change == "0.0%" else "normal")
c.metric("tasks · images", f"{len(tasks)} · {sum(comparison.merged.total.values())}")
st.session_state["_previous_means"] = means
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
st.caption(
    f"{method.display_name}: {method.formula}, with τₜ = θₜ − θ₀. Bars: accuracy on the interactive split "
    "(a fixed subset of val) of the zero-shot model θ₀, the merge, and each task's own fine-tuned model. "
    "Normalized accuracy = merged / fine-tuned, averaged over tasks."
)

if st.toggle(
    "Show what the method keeps, and where tasks disagree",
    key="show_sparsity",
    help="kept fraction per task and sign conflicts per layer; computed only while this is on",
):
    with st.container(border=True):
        if method.selection == "low_rank":
            ranks = ws.ranks(tasks, method_name, params)
            st.dataframe(
                {
                    "layer": [r.layer for r in ranks],
                    "rank kept": [r.rank for r in ranks],
                    "of": [r.full_rank for r in ranks],
                    "energy share": [r.energy for r in ranks],
                },
                column_config={"energy share": st.column_config.NumberColumn(format="percent")},
            )
            st.caption(
                "Per layer, the directions the method keeps (per task for TSV-M and CART, the common subspace "
                "for Iso-CTS, all of them for Iso-C) and the share of the task matrices' energy (squared "
                "Frobenius norm) they carry: task vectors that are close to low-rank lose little."
            )
        else:
            report = ws.sparsity(tasks, method_name, params)
            st.dataframe(
                {"task": list(report.tasks), "kept fraction": [report.kept_fraction[t] for t in report.tasks]},
                column_config={"kept fraction": st.column_config.NumberColumn(format="percent")},
            )
            st.plotly_chart(figures.sign_conflict_bars(report), key="sign_conflicts")
            st.caption(
                "Sign conflict: among the entries the method keeps, the share where some task vector is "
                "positive and another negative. TIES elects one sign per entry to resolve exactly these."
            )

sweep_col, test_col = st.columns(2)
scale = method.scale
# Results the user asked for stay while their inputs do: the sweep ignores the scale it sweeps.
inputs = (collection, choice, tuple(tasks), method_name, repr(sorted(params.items())))
sweep_inputs = (*inputs[:4], repr(sorted((k, v) for k, v in params.items() if k != scale.name)))
if sweep_col.button(
    f"{scale.symbol or scale.name} sweep",
    help=f"accuracy at 21 values of {scale.label} over its range, one global value",
):
    bar = st.progress(0.0, text=f"sweeping {scale.name}")
    sweep = ws.sweep(
        tasks,
        method_name,
        params,
        param=scale.name,
        values=method.sweep_values(21),
        progress=lambda f, msg: bar.progress(f, text=msg),
    )
    bar.empty()
    record_sweep(
        resources.run_log(), sweep, workspace=ws, method=method_name, params=params, device=resources.device_name()
    )
    st.session_state["_merge_sweep"] = (sweep_inputs, sweep)
if st.session_state.get("_merge_sweep", (None,))[0] == sweep_inputs:
    st.plotly_chart(figures.sweep_chart(st.session_state["_merge_sweep"][1]), key="sweep_chart")
    st.caption(
        f"Mean (black) and per-task accuracy as one {scale.symbol or scale.name} scales the merge over its declared "
        f"range. The dashed line marks the value with the best mean normalized accuracy, the papers' way to pick "
        "it on validation data. It stays until the tasks, method or another parameter change."
    )
if test_col.button("Evaluate on test", help="final numbers for the current setting on the test split"):
    with st.spinner("Evaluating on test…"):
        st.session_state["_merge_test"] = (inputs, ws.compare(tasks, method_name, params, split="test"))
if st.session_state.get("_merge_test", (None,))[0] == inputs:
    final = st.session_state["_merge_test"][1]
    st.dataframe(
        {
            "task": list(final.tasks),
            "zero-shot": [final.zero_shot[t] for t in final.tasks],
            "merged": [final.merged.accuracy[t] for t in final.tasks],
            "fine-tuned": [final.finetuned[t] for t in final.tasks],
        },
        column_config={
            k: st.column_config.NumberColumn(format="percent") for k in ("zero-shot", "merged", "fine-tuned")
        },
    )
    st.write(f"Test: mean accuracy {final.mean_merged:.1%}, mean normalized {final.mean_normalized:.1%}.")

st.subheader("Keep this merge")
recipe = MergeRecipe(
    collection=collection, tasks=tuple(tasks), variants=dict(choice), method=method_name, params=params, evaluate="test"
)
with st.expander("Recipe of the current settings (run it with `python -m engine run recipe.json`)"):
    st.code(recipe.model_dump_json(indent=2, exclude={"created"}), language="json")
save_col, export_col, job_col = st.columns(3)
if save_col.button("Save run", help="record this merge and its accuracies in the run log"):
    run_id = save_merge_run(
        resources.run_log(),
        comparison,
        recipe,
        pretrained_sha256=ws.pretrained.tensors_sha256,
        device=resources.device_name(),
    )
    st.success(f"Saved as run #{run_id} (see Jobs & runs).")
if export_col.button("Export checkpoint", help="merge, write safetensors + sidecar + recipe, evaluate on test"):
    try:
        with st.spinner("Exporting and evaluating on test…"):
            outcome = run_recipe(
                recipe, home=DataHome.from_env().ensure(), device=resources.device_name(), workspace=ws
            )
        st.session_state["_export"] = str(outcome.checkpoint.path)
    except MergelabError as exc:
        st.error(str(exc))
if st.session_state.get("_export"):
    exported = Path(st.session_state["_export"])
    st.download_button(
        f"Download {exported.name}",
        data=exported.read_bytes(),
        file_name=exported.name,
        mime="application/octet-stream",
        key="download_export",
    )
if job_col.button(
    f"{scale.symbol or scale.name} sweep on test as a job",
    help=f"101 values of {scale.label} in the background; follow it on Jobs & runs",
):
    args = {
        "tasks": list(tasks),
        "method": method_name,
        "params": params,
        "param": scale.name,
        "values": list(method.sweep_values(101)),
        "split": "test",
    }
    name = f"{scale.symbol or scale.name} sweep · {len(tasks)} tasks"
    spec = resources.job_spec("sweep", ws, collection, choice, args, name=name)
    job_id = resources.submit_job(spec)
    st.info(f"Started job #{job_id}: follow it on Jobs & runs.")
