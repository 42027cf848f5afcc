"""Sweeps: a grid sweep or coefficient search from the run log (the CLI's `sweep` and `search`, or a sweep
job): its trials on two objectives with their Pareto front, each trial's setting as parallel coordinates,
and its best trial opened in the Merge page by a link holding its setting (a relative link, so the page
works whether or not app.py's navigation lists it)."""

from urllib.parse import urlencode

import streamlit as st

from engine.errors import MergelabError
from engine.merge import METHODS, get_method
from engine.merge.pipeline import CALIBRATORS, parse_pipeline, pipeline_display, pipeline_name, qualified_params
from engine.search.axes import parse_axes
from engine.search.grid import checked_axes
from engine.search.logged import SUMMARIES, LoggedSweep, coordinates, logged_sweeps, objective_plane, read_sweep
from ui import figures, job_states, messages, pages, resources
from ui.state import CHOICE, current_collection

st.header(pages.heading("sweeps"))


def merge_link(sweep: LoggedSweep) -> dict[str, str | list[str]]:
    """The Merge page's URL for the best trial: its collection, checkpoints, tasks, method and every parameter
    (per task where the setting has one value per task)."""
    base, calibrate = parse_pipeline(sweep.run.method)  # a pipeline's sweep opens with its calibrators
    best, method = sweep.best, get_method(base)
    per_task = any(not isinstance(v, (int, float)) for v in best.params.values())
    query: dict[str, str | list[str]] = {
        "collection": sweep.run.inputs["collection"],
        "tasks": list(sweep.tasks),
        "method": method.name,
        "per_task": "true" if per_task else "false",
    }
    query |= {"calibrate": list(calibrate)} if calibrate else {}
    query |= {name: f"{best.params[name]:.6g}" for name, _ in qualified_params(calibrate) if name in best.params}
    checkpoints = sweep.run.inputs.get("checkpoints", {})  # the sidebar's part: the checkpoints it ran on
    query |= {f"ckpt.{t}": v for t, v in checkpoints.items() if v != "standard"}
    for param in method.params:
        if param.name not in best.params:
            continue
        value = best.params[param.name]
        if param.per_task and per_task:
            values = value if not isinstance(value, (int, float)) else [value] * len(sweep.tasks)
            query |= {f"{param.name}.{t}": f"{v:.6g}" for t, v in zip(sweep.tasks, values)}
        else:
            query[param.name] = f"{value:.6g}"
    return query


def start_job(kind: str, method: str, grid_text: str, trials: int, strategy: str) -> None:
    """Check the request as the CLI does (axes parsed and checked against the method's declared ranges), then
    submit it as a background job on the sidebar's workspace: Jobs & runs follows and cancels it."""
    collection, choice = current_collection(), st.session_state.get(CHOICE, ())
    ws = resources.workspace_or_stop(collection, choice)
    tasks = list(ws.task_names)
    try:
        if kind == "grid":
            axes = checked_axes(method, dict(parse_axes(grid_text.split())), {}, len(tasks))
            args = {"tasks": tasks, "method": method, "grid": {name: list(values) for name, values in axes}}
            name = f"grid sweep · {pipeline_display(method)} · {grid_text}"
        else:
            args = {"tasks": tasks, "method": "task_arithmetic", "strategy": strategy, "trials": trials}
            name = f"{strategy} search · per-task λ · {trials} trials"
    except MergelabError as exc:
        st.error(messages.shown(exc))
        return
    job_id = resources.submit_job(
        resources.job_spec("grid_sweep" if kind == "grid" else "search", ws, collection, choice, args, name=name)
    )
    st.success(f"Started job #{job_id}: follow or cancel it on Jobs & runs; it is listed here as it runs.")


log = resources.run_log()
sweeps = logged_sweeps(log)
with st.expander("Start a grid sweep or a coefficient search", expanded=not sweeps):
    kind = st.radio(
        "kind",
        ["grid", "search"],
        horizontal=True,
        key="sweep_kind",
        format_func={
            "grid": "grid over a method's parameters",
            "search": "search over per-task λ (task arithmetic)",
        }.get,
    )
    left, right = st.columns(2)
    method = left.selectbox(
        "method",
        list(METHODS),
        key="sweep_method",
        format_func=lambda m: METHODS[m].display_name,
        disabled=kind != "grid",
    )
    grid_text = right.text_input(
        "grid",
        "lam=0:1:11",
        key="sweep_grid",
        disabled=kind != "grid",
        help="NAME=LOW:HIGH:COUNT or NAME=V1,V2,..., separated by spaces (as `python -m engine sweep --grid`)",
    )
    calibrate = left.multiselect(
        "calibrators after the merge",
        list(CALIBRATORS),
        key="sweep_calibrate",
        format_func=lambda c: CALIBRATORS[c].display_name,
        disabled=kind != "grid" or METHODS[method].task_specific,
        help="a calibrated pipeline is swept as one method; grid its parameters as svc.alpha=0.5,1,2",
    )
    trials = left.number_input("trials", 8, 2000, 48, step=8, key="sweep_trials", disabled=kind != "search")
    strategy = right.radio(
        "strategy",
        ["tpe", "cma"],
        horizontal=True,
        key="sweep_strategy",
        disabled=kind != "search",
        help="Optuna's TPE or CMA-ES, 8 trials asked at a time, seed 0",
    )
    if st.button("Start as a background job", type="primary", key="sweep_start"):
        start_job(
            kind,
            pipeline_name(method, () if METHODS[method].task_specific else calibrate),
            grid_text,
            int(trials),
            strategy,
        )
    st.caption(
        "On the sidebar's collection and checkpoints, evaluated on val; a search's best is re-evaluated on test. "
        "With MERGELAB_RAY set, trials run on Ray workers."
    )
SWEEP_JOBS = ("grid_sweep", "search")


def unfinished_sweep_jobs() -> list:
    """Sweep and search jobs of the run log still queued or running, whoever started them."""
    return [r for r in log.jobs() if r.spec.get("kind") in SWEEP_JOBS and r.state in ("queued", "running")]


@st.fragment(run_every=1.0)
def sweep_jobs(known: int) -> None:
    """The sweep jobs under way, drawn at once (a job logs its sweep only once it runs); the tick that finds a
    new sweep in the run log reruns the page, which then lists it."""
    job_states.show_jobs_of(unfinished_sweep_jobs(), header="Under way (follow or cancel them on Jobs & runs):")
    if len(logged_sweeps(log)) != known:
        st.rerun(scope="app")


sweep_jobs(len(sweeps))
if not sweeps:
    if unfinished_sweep_jobs():
        st.info("Its sweep is listed here as soon as the job starts logging trials.")
    else:
        st.info("No sweep yet: `python -m engine sweep RECIPE --grid lam=0:1:21` or `python -m engine search RECIPE`.")
    st.stop()
labels = {
    r.id: f"#{r.id} {r.kind} · {r.method} · {r.outputs.get('trials', 0)} trials · {r.status_shown}" for r in sweeps
}
run_id = st.selectbox("Sweep", list(labels), format_func=labels.get, key="sweep_run")
sweep = read_sweep(log, run_id)
if not sweep.trials:
    st.warning("This sweep logged no trial.")
    st.stop()
options = [*SUMMARIES, *sweep.tasks]
left, right = st.columns(2)
x = left.selectbox("x axis", options, index=0, key="sweep_x")
y = right.selectbox("y axis", options, index=1, key="sweep_y")
st.plotly_chart(figures.objective_plane_chart(objective_plane(sweep, x, y)), key="sweep_plane")
coords = coordinates(sweep)
if coords.names:
    st.plotly_chart(figures.coordinates_chart(coords), key="sweep_coordinates")
best = sweep.best
test = sweep.run.outputs.get("test") or {}
st.markdown(
    f"Best trial: **#{best.index}**, mean normalized accuracy **{best.mean_normalized:.1%}** on {best.split}"
    + (f", **{test['mean_normalized']:.1%}** on test." if test else ".")
)
st.markdown(f"[Open the best trial in Merge](merge?{urlencode(merge_link(sweep), doseq=True)})")
