"""Jobs & runs: live progress of background jobs, and every logged run with a side-by-side compare."""

import streamlit as st

from engine.home import DataHome
from engine.jobs import progress
from ui import figures, formats, job_states, messages, pages, resources

st.header(pages.heading("jobs"))
resources.job_runner()  # one per server: it marks the jobs a crashed server left as interrupted


@st.fragment(run_every=1.0)
def live_jobs() -> None:
    """Every job of the run log, this server's and earlier ones' (a job a crash cut off reads "interrupted");
    only the session that started a job can cancel it. A job with a curve (fine-tune, aTLAS / DV-BASI, an
    iterative merge, a sweep) shows it under its bar, drawn from the metrics the jobs table keeps."""
    records = resources.run_log().jobs()
    if not records:
        st.caption("No jobs yet: start a λ sweep from the Merge page.")
    me = resources.session_owner()
    for record in records:
        left, right = st.columns([5, 1])
        active = record.state in ("queued", "running")
        job_states.job_bar(
            left,
            job_id=record.id,
            name=record.name,
            state=record.state,
            step=record.step,
            total=record.total,
            message=record.message,
            timing=formats.job_time(progress.of_record(record)),
        )
        if active and record.owner == me and right.button("Cancel", key=f"cancel-{record.id}"):
            resources.cancel_job(record.id)  # checks the owner again, on the server
        elif active and record.owner != me:
            right.caption("another session's")
        if record.error:
            left.error(messages.shown(record.error))
        curve = figures.job_curve(record.kind, record.metrics, name=record.name)
        if curve is not None:
            with left.expander(f"Curve of #{record.id}", expanded=active):
                st.plotly_chart(curve, key=f"job-curve-{record.id}")


live_jobs()
st.subheader("Run log")
log = resources.run_log()
all_runs = log.runs(top_level=True)  # a sweep's trials are on the Sweeps page
kinds = sorted({r.kind for r in all_runs})
methods = sorted({r.method for r in all_runs if r.method})
tasks = sorted({t for r in all_runs for t in r.tasks})
a, b, c = st.columns(3)
kind = a.selectbox("kind", ["(all)", *kinds], key="runs_kind")
method = b.selectbox("method", ["(all)", *methods], key="runs_method")
task = c.selectbox("task", ["(all)", *tasks], key="runs_task")
runs = log.runs(
    kind=None if kind == "(all)" else kind,
    method=None if method == "(all)" else method,
    task=None if task == "(all)" else task,
    top_level=True,
)
st.dataframe(
    [
        {
            "id": r.id,
            "created": r.created,
            "kind": r.kind,
            "status": r.status_shown,
            "reached": r.reached,
            "method": r.method,
            "tasks": ", ".join(r.tasks),
            "mean accuracy": r.mean_accuracy,
            "duration (s)": r.duration_s,
            "device": r.device,
        }
        for r in runs
    ],
    column_config={
        "mean accuracy": st.column_config.NumberColumn(
            format="percent", help="a partial run's: at the best of the points it reached"
        ),
        "reached": st.column_config.TextColumn(help="how far a cancelled run got (its steps, epochs or values)"),
    },
)
chosen = st.multiselect("Compare runs (2 to 4)", [r.id for r in runs], max_selections=4, key="runs_compare")
if len(chosen) >= 2:
    st.plotly_chart(figures.runs_comparison([log.get(i) for i in chosen]), key="runs_comparison")
    st.caption("Each run's per-task accuracy as logged (for sweeps: at the best λ of the sweep).")

with st.expander("Data home"):
    home = DataHome.from_env().ensure()
    if st.button("Clear caches", help="heads, decoded tasks, importance maps, τJp, merge parts: all recomputed"):
        freed = home.clear_caches()
        st.success(f"Cleared {freed.files} cached files ({freed.bytes / 2**20:.1f} MB).")
    st.dataframe(
        [{"folder": f.name, "files": f.files, "MB": round(f.bytes / 2**20, 1)} for f in home.usage()],
        hide_index=True,
    )
    st.caption(f"`{home.root}`. Clearing caches keeps exports, checkpoints (your fine-tunes) and the run log.")
