"""Benchmark: the papers' table on the sidebar's pool, each method's setting chosen on val and reported once on
test, absolute and normalized, per task bars per method, and the published numbers beside ours."""

import hashlib
import json
from pathlib import Path

import streamlit as st

from engine.data.suites import match_suite
from engine.errors import MergelabError
from engine.eval.benchmark import Benchmark, markdown, read_benchmark, stored_benchmark
from engine.home import DataHome
from engine.jobs.benchmark import DEFAULT_METHODS, GPU_NOTE, short_name
from engine.jobs.compare import DEFAULT_GRIDS
from engine.jobs.plane import benchmark_plane
from engine.jobs.runner import JobState
from ui import figures, messages, pages, resources, widgets
from ui.state import sidebar_workspace

JOB_KEY = "benchmark_job"

st.header(pages.heading("benchmark"))
st.caption(
    "Every method's declared grid is searched on val (mean normalized accuracy, the earlier setting on ties); "
    "the chosen setting is evaluated once on test. The published numbers are shown where the pool is a known "
    f"suite on a known architecture and checkpoint family. {GPU_NOTE}; a limit per task subsamples."
)
collection, choice, ws = sidebar_workspace()
stored = stored_benchmark(resources.allowed_collection(collection).root) if not choice else None

match = match_suite(list(ws.task_names))
suites = [""] + ([match.suite.name] if match and match.complete else [])
left, middle, right = st.columns([3, 1, 1])
methods = left.multiselect(
    "methods",
    sorted(DEFAULT_GRIDS),
    default=[m for m in DEFAULT_METHODS if m in DEFAULT_GRIDS],
    format_func=short_name,
    key="bench_methods",
)
limit = middle.number_input("images per task (0: all)", min_value=0, value=0, step=50, key="bench_limit")
suite = right.selectbox("suite", suites, format_func=lambda s: s or "all tasks", key="bench_suite")
args = {"methods": methods, "suite": suite or None, "limit_per_task": int(limit) or None}
if not suite:
    args["tasks"] = list(ws.task_names)
if st.button("Run the benchmark as a background job", type="primary", disabled=not methods):
    key = hashlib.sha256(json.dumps([collection, list(choice), args], sort_keys=True).encode()).hexdigest()[:16]
    args["out"] = str(DataHome.from_env().ensure().root / "benchmarks" / f"page-{key}.json")  # same setting: resumed
    spec = resources.job_spec("benchmark", ws, collection, choice, args, name=f"benchmark · {len(methods)} methods")
    st.session_state[JOB_KEY] = resources.submit_job(spec)
widgets.restore_job(JOB_KEY, "benchmark", collection)
job = widgets.job_progress(JOB_KEY)

table: Benchmark | None = stored
shown = "Stored with the demo zoo (`python -m engine zoo add-benchmark`)." if stored else ""
if job is not None and job.state is JobState.DONE:
    table, shown = job.result, f"Job #{job.id}."
elif job is not None and job.state is JobState.FAILED:
    st.error(messages.shown(job.error))
elif job is not None:
    out = job.metrics.get("out")
    try:
        partial = read_benchmark(Path(out)) if out else None
    except (MergelabError, OSError):
        partial = None  # not written yet
    if partial is not None:
        table, shown = partial, f"Job #{job.id}, so far (finished methods; the file resumes an interrupted run)."

if table is None:
    st.info("No table yet for this pool: run the benchmark above, or `python -m engine benchmark --collection ...`.")
else:
    st.caption(shown)
    st.markdown(markdown(table))
    st.plotly_chart(figures.benchmark_task_bars(table), key="benchmark_task_bars")
    st.plotly_chart(figures.benchmark_published_chart(table), key="benchmark_published_chart")
    if table.methods_done:
        plane = benchmark_plane(table, numel=ws.matrix.spec.numel)
        st.plotly_chart(figures.storage_plane_chart(plane), key="benchmark_storage_plane")
        st.caption(figures.PLANE_HELP)
