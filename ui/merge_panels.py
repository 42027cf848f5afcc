"""The Merge page's panels (views/merge.py draws the controls, metrics and bars): the background job a
method's parts need, what the method keeps, the sweep of its scale, the test numbers, and keeping the merge
(recipe, run, zip, job).

Each panel takes the page's current setting (`Setting`) and draws itself; results the user asked for stay in
session state while their inputs do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from engine.errors import MergelabError
from engine.eval.results import MergeComparison
from engine.home import DataHome
from engine.jobs.forms import PARTS
from engine.jobs.runner import JobState
from engine.jobs.sweep import record_sweep
from engine.merge import MergeMethod
from engine.merge.declaration import ParamValue
from engine.merge.pipeline import CALIBRATORS, pipeline_name, split_params
from engine.runs.export import export_bundle
from engine.runs.recipe_runner import run_recipe, save_merge_run
from engine.runs.recipes import MergeRecipe
from engine.workspace import Workspace
from ui import figures, messages, resources, widgets
from ui.resources import Choice


@dataclass(frozen=True)
class Setting:
    """What the Merge page shows: the workspace and the merge the widgets name."""

    ws: Workspace
    collection: str
    choice: Choice
    tasks: tuple[str, ...]
    method: MergeMethod
    params: dict[str, ParamValue]  # the method's and its calibrators' (`svc.alpha`)
    calibrate: tuple[str, ...] = ()  # calibrators after the merge, in order

    @property
    def key(self) -> tuple:
        """Identifies a result computed for this setting (a sweep ignores the scale it sweeps: `sweep_key`)."""
        return (self.collection, self.choice, self.tasks, self.pipeline, repr(sorted(self.params.items())))

    @property
    def sweep_key(self) -> tuple:
        others = sorted((k, v) for k, v in self.params.items() if k != self.method.scale.name)
        return (*self.key[:4], repr(others))

    @property
    def pipeline(self) -> str:
        """The merge's one name in jobs and runs: the method, then its calibrators (`tsv_m+svc`)."""
        return pipeline_name(self.method.name, self.calibrate)

    @property
    def base_params(self) -> dict[str, ParamValue]:
        """The base method's parameters alone (what it keeps and its parts do not depend on the calibrators)."""
        return split_params(self.params, self.calibrate)[0]


TASK_SPECIFIC = "task-specific: needs the task id at inference"


def pipeline_controls(method: MergeMethod) -> tuple[tuple[str, ...], dict[str, float]]:
    """The calibrators after the merge (none for a task-specific method, which serves each task its own model)
    and their sliders; returns (calibrators in order, their values by namespaced name)."""
    if method.task_specific:
        st.caption(
            f"**{TASK_SPECIFIC}.** {method.display_name} keeps one shared vector and a bit mask per task; task t "
            "is evaluated with its own model θ₀ + r_t·(m_t ⊙ v), built on the fly. Calibrators need one merged model."
        )
        st.session_state["calibrate"] = []
    chosen = st.multiselect(
        "Calibrators after the merge",
        list(CALIBRATORS),
        key="calibrate",
        format_func=lambda name: CALIBRATORS[name].display_name,
        disabled=method.task_specific,
        help="data-free steps on the merged update, in the order picked: LiNeS scales it by depth, SVC "
        "recalibrates each layer's singular values against every task's",
    )
    return tuple(chosen), widgets.calibrator_params(chosen)


@st.fragment(run_every=1.0)
def parts_job_live(setting: str, method) -> None:
    """The parts job's progress and live loss curve; the tick that sees it done reruns the page, which
    then merges from the parts it left (every later slider move is one add)."""
    if st.session_state.get("parts_job_for") != setting:
        return
    job = widgets.job_progress("parts_job")
    if job.state is JobState.DONE:
        st.rerun(scope="app")
    if job.state is JobState.FAILED:
        st.error(messages.shown(job.error))
    if job.metrics.get("loss"):
        st.plotly_chart(figures.parts_loss_curve(job.metrics["loss"], method=method.display_name), key="parts_loss")


def parts_job(s: Setting) -> None:
    """A method whose parts (SVDs, Adam steps) are not cached: offer the background job, show it, stop."""
    method, tasks = s.method, list(s.tasks)
    expensive = {n: s.params[n] for n in method.expensive if n in s.params}
    setting = f"{method.name}:{sorted(expensive.items())}:{tasks}"
    work = (
        f"{int(expensive.get('steps', method.params[-1].default))} Adam steps on every layer"
        if method.iterative
        else "the SVDs of every layer of this large model"
    )
    st.info(
        f"{method.display_name} first computes its parts for this setting: {work}. That runs as a "
        f"background job (progress below, cancel any time); then every {method.scale.symbol or method.scale.name} "
        "move re-composes from them at once, and they stay in the data home for the next session."
    )
    if st.button(f"Compute {method.display_name}", key="parts_start", type="primary"):
        values = {"method": method.name, "param": expensive}
        args = PARTS.arguments(values, tasks=tasks, home=DataHome.from_env())
        spec = resources.job_spec("merge_parts", s.ws, s.collection, s.choice, args, name=PARTS.title(values))
        st.session_state.update(parts_job=resources.submit_job(spec), parts_job_for=setting)
    widgets.restore_job(  # after a reload: the parts job this setting started, with its live curve
        "parts_job",
        "merge_parts",
        s.collection,
        for_key="parts_job_for",
        setting_of=lambda args: f"{args['method']}:{sorted(args['params'].items())}:{args['tasks']}",
    )
    parts_job_live(setting, method)
    st.stop()


def mask_note(s: Setting, *, per_task: bool) -> None:
    """Say so when per-task λ moves cannot reuse a keep mask: it would not fit the cache budget, so each move
    recomputes the mask from the method's cut (engine/merge/session.py: `mask_fits`)."""
    if not per_task or s.method.keep_mask is None or s.ws.merges.mask_fits(s.tasks):
        return
    size = len(s.tasks) * s.ws.matrix.spec.numel / 2**30  # bool [k, P]
    st.caption(
        f"The keep mask of these {len(s.tasks)} tasks ({size:.2f} GiB) does not fit the cache budget, so each "
        "move of a task's λ recomputes it from the method's cut. A larger `cache_budget_mb` in config.json keeps it."
    )


def sparsity_panel(s: Setting) -> None:
    """Per task the share the method keeps (or per layer the rank), and the sign conflicts per layer."""
    with st.container(border=True):
        if s.method.keep_panel == "ranks":
            ranks = s.ws.merges.ranks(list(s.tasks), s.method.name, s.base_params)
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
            return
        report = s.ws.merges.sparsity(list(s.tasks), s.method.name, s.base_params)
        st.dataframe(
            {"task": list(report.tasks), "kept fraction": [report.kept_fraction[t] for t in report.tasks]},
            column_config={"kept fraction": st.column_config.NumberColumn(format="percent")},
        )
        st.plotly_chart(figures.sign_conflict_bars(report), key="sign_conflicts")
        st.caption(
            "Sign conflict: among the entries the method keeps, the share where some task vector is "
            "positive and another negative. TIES elects one sign per entry to resolve exactly these."
        )


def use_best(method: MergeMethod, value: float) -> None:
    """Callback of "Use the best": one global value of the scale (before the sliders exist on the rerun)."""
    st.session_state["per_task"] = False
    st.session_state[widgets.param_key(method, method.scale)] = float(value)


def sweep_panel(s: Setting, column) -> None:
    """The scale's sweep on the interactive split (button in `column`): the chart marks the best value and the
    current one, and a button sets the slider to the best."""
    scale, symbol = s.method.scale, s.method.scale.symbol or s.method.scale.name
    if column.button(f"{symbol} sweep", help=f"accuracy at 21 values of {scale.label} over its range, one value"):
        bar = st.progress(0.0, text=f"sweeping {scale.name}")
        sweep = s.ws.sweep(
            list(s.tasks),
            s.method.name,
            s.params,
            param=scale.name,
            values=s.method.sweep_values(21),
            progress=lambda f, msg: bar.progress(f, text=msg),
            calibrate=s.calibrate,
        )
        bar.empty()
        record_sweep(
            resources.run_log(),
            sweep,
            workspace=s.ws,
            method=s.pipeline,
            params=s.params,
            device=resources.device_name(),
        )
        st.session_state["_merge_sweep"] = (s.sweep_key, sweep)
    if st.session_state.get("_merge_sweep", (None,))[0] != s.sweep_key:
        return
    sweep = st.session_state["_merge_sweep"][1]
    value = s.params.get(scale.name)
    current = float(value) if isinstance(value, (int, float)) else None  # per-task values: no single "now"
    st.plotly_chart(figures.sweep_chart(sweep, current=current), key="sweep_chart")
    at_best = current is not None and abs(current - sweep.best_value) < 1e-9
    st.button(
        f"Use the best {symbol} = {sweep.best_value:g}",
        key="use_best",
        disabled=at_best,
        on_click=use_best,
        args=(s.method, sweep.best_value),
        help="set the slider to the swept value with the best mean normalized accuracy (one value for all tasks)",
    )
    st.caption(
        f"Mean (black) and per-task accuracy as one {symbol} scales the merge over its declared range. The dashed "
        "line marks the value with the best mean normalized accuracy, the papers' way to pick it on validation "
        "data; the solid one the slider's value. It stays until the tasks, method or another parameter change."
    )


def test_panel(s: Setting, column) -> None:
    """Final numbers on the test split for the current setting (button in `column`)."""
    if column.button("Evaluate on test", help="final numbers for the current setting on the test split"):
        with st.spinner("Evaluating on test…"):
            st.session_state["_merge_test"] = (
                s.key,
                s.ws.compare(list(s.tasks), s.method.name, s.params, split="test", calibrate=s.calibrate),
            )
    if st.session_state.get("_merge_test", (None,))[0] != s.key:
        return
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


def keep_panel(s: Setting, comparison: MergeComparison) -> None:
    """The recipe of the setting, and three ways to keep it: a run in the log, a zip to download, a test sweep."""
    st.subheader("Keep this merge")
    recipe = MergeRecipe(
        collection=s.collection,
        tasks=s.tasks,
        variants=dict(s.choice),
        method=s.method.name,
        params=s.params,
        calibrate=s.calibrate,
        evaluate="test",
    )
    with st.expander("Recipe of the current settings (run it with `python -m engine run recipe.json`)"):
        st.code(recipe.model_dump_json(indent=2, exclude={"created"}), language="json")
    save_col, export_col, job_col = st.columns(3)
    if save_col.button("Save run", help="record this merge and its accuracies in the run log"):
        run_id = save_merge_run(
            resources.run_log(),
            comparison,
            recipe,
            pretrained_sha256=s.ws.pretrained.tensors_sha256,
            device=resources.device_name(),
            skipped=[str(entry) for entry in s.ws.collection.skipped],
        )
        st.success(f"Saved as run #{run_id} (see Jobs & runs).")
    export_panel(s, recipe, export_col)
    sweep_job_button(s, job_col)


def export_panel(s: Setting, recipe: MergeRecipe, column) -> None:
    """Merge, write the checkpoint with its sidecar, recipe and open_clip config, evaluate on test, and offer
    all of it as one zip whose README says how to load it with open_clip alone."""
    if column.button("Export checkpoint", help="merge, evaluate on test, and download a zip that loads elsewhere"):
        try:
            with st.spinner("Exporting and evaluating on test…"):
                home = DataHome.from_env().ensure()
                outcome = run_recipe(recipe, home=home, device=resources.device_name(), workspace=s.ws)
                st.session_state["_export"] = str(export_bundle(outcome.checkpoint))
        except MergelabError as exc:
            st.error(messages.shown(exc))
    if st.session_state.get("_export"):
        bundle = Path(st.session_state["_export"])
        st.download_button(
            f"Download {bundle.name}",
            data=bundle.read_bytes(),
            file_name=bundle.name,
            mime="application/zip",
            key="download_export",
            help="weights (.safetensors), metadata, recipe, open_clip config and a README on loading them",
        )


def sweep_job_button(s: Setting, column) -> None:
    """101 values of the scale on test, as a background job."""
    scale, symbol = s.method.scale, s.method.scale.symbol or s.method.scale.name
    if column.button(f"{symbol} sweep on test as a job", help=f"101 values of {scale.label}; see Jobs & runs"):
        args = {
            "tasks": list(s.tasks),
            "method": s.pipeline,
            "params": s.params,
            "param": scale.name,
            "values": list(s.method.sweep_values(101)),
            "split": "test",
        }
        name = f"{symbol} sweep · {len(s.tasks)} tasks"
        spec = resources.job_spec("sweep", s.ws, s.collection, s.choice, args, name=name)
        job_id = resources.submit_job(spec)
        st.info(f"Started job #{job_id}: follow it on Jobs & runs.")
