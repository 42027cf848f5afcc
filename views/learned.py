"""Learned coefficients: aTLAS (per task and block) and DV-BASI (per block of the merged difference vector)."""

import streamlit as st

from engine.errors import MergelabError
from engine.home import DataHome
from engine.jobs.forms import LEARN
from engine.jobs.learn import LearnCurves, LearnOutcome
from engine.jobs.runner import FINISHED, JobState
from ui import figures, messages, pages, resources, widgets
from ui.state import sidebar_workspace

st.header(pages.heading("learned"))
st.caption(
    "aTLAS (Zhang et al., NeurIPS 2024) learns one coefficient per task vector and parameter tensor. DV-BASI "
    "(Wang et al., AAAI-26) then takes the merged model's difference vector δ = θ − θ₀, learns one scale per "
    "tensor, moves to θ + λ·δ and repeats. The objective uses half of each task's val split; the other half "
    "chooses epochs and iterations; test is only reported."
)
collection, choice, ws = sidebar_workspace()
widgets.job_defaults(LEARN, ws.task_names)
a, b, c = st.columns(3)
values = {"start": widgets.job_input(a, LEARN, "start")}
values["lam"] = widgets.job_input(a, LEARN, "lam", values=values)
values["objective"] = widgets.job_input(b, LEARN, "objective")
values["dv_basi"] = widgets.job_input(b, LEARN, "dv_basi")
values["iterations"] = widgets.job_input(c, LEARN, "iterations", values=values)
values["patience"] = widgets.job_input(c, LEARN, "patience")
with st.expander("More settings"):
    for column, name in zip(st.columns(3), ("epochs", "scaling", "direction")):
        values[name] = widgets.job_input(column, LEARN, name)

if st.button("Learn as a background job", type="primary"):
    try:
        args = LEARN.arguments(values, tasks=ws.task_names, home=DataHome.from_env())
    except MergelabError as exc:
        st.error(messages.shown(exc))
    else:
        spec = resources.job_spec("learn", ws, collection, choice, args, name=LEARN.title(values))
        st.session_state["dv_job"] = resources.submit_job(spec)


@st.fragment(run_every=1.0)
def live_run() -> None:
    """Ticks only while the job runs; the tick that sees it finish reruns the page once, which then shows
    the finished run outside this fragment (rendered once, not every second)."""
    job = widgets.job_progress("dv_job")
    if job is None:
        return
    if job.state in FINISHED:
        st.rerun(scope="app")
    _curve_charts(LearnCurves.from_json(job.metrics))


def _curve_charts(curves: LearnCurves) -> None:
    if curves.epochs:
        st.plotly_chart(figures.learning_curves(curves), key="dv_learning")
    if curves.iterations:
        st.plotly_chart(figures.iteration_accuracy(curves), key="dv_iterations_chart")


def finished_run() -> None:
    job = widgets.job_progress("dv_job")
    curves = job.result.curves if job.state is JobState.DONE else LearnCurves.from_json(job.metrics)
    _curve_charts(curves)
    if job.state is JobState.DONE:
        result: LearnOutcome = job.result
        st.success(
            f"{result.point}: test mean accuracy {result.mean_accuracy:.1%} "
            f"(normalized {result.mean_normalized:.1%}); exported to `{result.artifact}`."
        )
        if curves.iterations:
            st.plotly_chart(figures.scales_heatmap(curves, ws.matrix.spec.names), key="dv_scales")
        tasks = list(result.accuracy)
        table = {"task": tasks}
        if result.start is not None:
            table[f"start: {result.start.point}"] = [result.start.accuracy[t] for t in tasks]
        table["learned"] = [result.accuracy[t] for t in tasks]
        ta = ws.compare(tasks, "task_arithmetic", {"lam": float(st.session_state["dv_lam"])}, split="test")  # cached
        table[f"task arithmetic (λ = {st.session_state['dv_lam']:g})"] = [ta.merged.accuracy[t] for t in tasks]
        table["fine-tuned"] = [ta.finetuned[t] for t in tasks]
        st.dataframe(
            table, column_config={k: st.column_config.NumberColumn(format="percent") for k in table if k != "task"}
        )
        st.caption("Test accuracy per task, for reporting only.")
    elif job.state is JobState.FAILED:
        st.error(messages.shown(job.error))


widgets.restore_job("dv_job", "learn", collection)  # after a reload: the job this page started
dv_job = st.session_state.get("dv_job")
if dv_job is not None and resources.job_runner().status(dv_job).state in FINISHED:
    finished_run()
else:
    live_run()

report = resources.build_report(collection) if not choice else None
if report and report.get("learned"):
    st.subheader("Stored at build time")
    st.dataframe(
        figures.learned_table(report["learned"]),
        column_config={k: st.column_config.NumberColumn(format="percent") for k in ("supervised", "unsupervised")},
    )
    atlas_cfg, inner_cfg = report["learned"]["config"], report["learned"].get("inner_config", {})
    st.caption(
        "Test mean accuracy over the tasks; every epoch and iteration was chosen on the selection half of val. "
        f"aTLAS: up to {atlas_cfg['epochs']} epochs, patience {atlas_cfg['patience']}; DV-BASI: "
        f"{report['learned']['iterations']} iterations of up to {inner_cfg.get('epochs', '?')} epochs "
        f"(patience {inner_cfg.get('patience', '?')} on the fit loss)."
        + (
            " τJp rows start from the linearized fine-tunes trained with the τJp penalty (variant tau_jp), "
            "evaluated as linearized models; DV-BASI keeps its start when no iteration raises selection accuracy."
            if "dv_basi_from_tau_jp" in report["learned"]["supervised"]
            else ""
        )
    )

st.subheader("Logged runs")
logged = resources.run_log().runs(kind="learned")
chosen = st.multiselect(
    "Overlay runs",
    [r.id for r in logged],
    key="dv_overlay",
    format_func=lambda i: next(f"#{r.id} {r.outputs.get('point', '')} · {r.status}" for r in logged if r.id == i),
)
if chosen:
    st.plotly_chart(figures.learned_runs_overlay([r for r in logged if r.id in chosen]), key="dv_overlay_chart")
