"""Merge: pick tasks and a method, move the sliders, see every task's accuracy at once."""

from pathlib import Path

import streamlit as st

from engine.errors import MergelabError
from engine.home import DataHome
from engine.jobs.runner import JobState
from engine.jobs.sweep import record_sweep
from engine.merge import METHODS, get_method
from engine.runs.recipe_runner import run_recipe, save_merge_run
from engine.runs.recipes import MergeRecipe, parse_recipe
from engine.taujp.preview import preview_gap
from ui import figures, resources, widgets
from ui.state import sidebar_workspace

st.header("Merge task vectors")
collection, choice, ws = sidebar_workspace()

st.session_state.setdefault("tasks", list(ws.task_names))


def apply_recipe() -> None:
    """Callback of "Apply recipe": runs before the widgets, so they show the recipe's values."""
    try:
        recipe = parse_recipe(
            st.session_state.get("_recipe_text", ""), source="pasted recipe", defaults={"collection": collection}
        )
        chosen = list(recipe.tasks or ws.task_names)
        unknown = [t for t in chosen if t not in ws.task_names]
        if unknown:
            raise ValueError(f"tasks {unknown} are not in this collection")
    except (MergelabError, ValueError) as exc:
        st.session_state["_recipe_error"] = str(exc)
        return
    st.session_state.update(tasks=chosen, method=recipe.method, _recipe_error=None)
    st.session_state["per_task"] = widgets.set_params_in_state(get_method(recipe.method), chosen, recipe.params)


with st.expander("Load a recipe"):
    st.text_area("Recipe (JSON or YAML)", key="_recipe_text", placeholder="method: task_arithmetic\nparams: {lam: 0.3}")
    st.button("Apply recipe", on_click=apply_recipe)
    if st.session_state.get("_recipe_error"):
        st.error(st.session_state["_recipe_error"])
tasks = st.multiselect("Tasks to merge", ws.task_names, key="tasks", bind="query-params")
left, right = st.columns([2, 1])
if st.query_params.get("method") in METHODS:  # a link naming the method (merge?method=iso_c), as Compare's do
    st.session_state["method"] = st.query_params["method"]
method_name = left.selectbox(
    "Method", list(METHODS), key="method", bind="query-params", format_func=lambda name: METHODS[name].display_name
)
per_task = right.toggle("one λ per task", key="per_task", bind="query-params")
method = get_method(method_name)
if method.provisional:
    st.caption(
        f"**Provisional definition.** {method.display_name}: the paper body was not available, so the "
        "importance aggregation, normalisation and threshold are our choices (engine/sta/importance.py). "
        "Importance maps are computed once per checkpoint and cached."
    )
params = widgets.method_params(method, tasks, per_task=per_task)
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
    bind="query-params",
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
a.metric("mean accuracy (merged)", f"{means[0]:.1%}", delta=f"{means[0] - previous[0]:+.1%}" if previous else None)
b.metric("mean normalized accuracy", f"{means[1]:.1%}", delta=f"{means[1] - previous[1]:+.1%}" if previous else None)
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
    st.plotly_chart(figures.sweep_chart(sweep), key="sweep_chart")
    st.caption(
        f"Mean (black) and per-task accuracy as one {scale.symbol or scale.name} scales the merge. The dashed "
        "line marks the value with the best mean normalized accuracy, the papers' way to pick it on validation data."
    )
if test_col.button("Evaluate on test", help="final numbers for the current setting on the test split"):
    with st.spinner("Evaluating on test…"):
        final = ws.compare(tasks, method_name, params, split="test")
    st.dataframe(
        {
            "task": list(final.tasks),
            "zero-shot": [final.zero_shot[t] for t in final.tasks],
            "merged": [final.merged.accuracy[t] for t in final.tasks],
            "fine-tuned": [final.finetuned[t] for t in final.tasks],
        }
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
