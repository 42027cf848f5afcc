"""Sweeps: a grid sweep or coefficient search from the run log (the CLI's `sweep` and `search`, or a sweep
job): its trials on two objectives with their Pareto front, each trial's setting as parallel coordinates,
and its best trial opened in the Merge page by a link holding its setting (a relative link, so the page
works whether or not app.py's navigation lists it)."""

from urllib.parse import urlencode

import streamlit as st

from engine.merge import get_method
from engine.search.logged import SUMMARIES, LoggedSweep, coordinates, logged_sweeps, objective_plane, read_sweep
from ui import figures, resources

st.header("Sweeps and searches")


def merge_link(sweep: LoggedSweep) -> dict[str, str | list[str]]:
    """The Merge page's URL for the best trial: its collection, checkpoints, tasks, method and every parameter
    (per task where the setting has one value per task)."""
    best, method = sweep.best, get_method(sweep.run.method)
    per_task = any(not isinstance(v, (int, float)) for v in best.params.values())
    query: dict[str, str | list[str]] = {
        "collection": sweep.run.inputs["collection"],
        "tasks": list(sweep.tasks),
        "method": method.name,
        "per_task": "true" if per_task else "false",
    }
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


log = resources.run_log()
sweeps = logged_sweeps(log)
if not sweeps:
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
