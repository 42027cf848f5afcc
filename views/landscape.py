"""λ landscape: two tasks' merge over a λ₁ × λ₂ grid, exact and tangent preview side by side."""

import streamlit as st

from engine.errors import MergelabError
from engine.home import DataHome
from engine.jobs.forms import LANDSCAPE
from engine.jobs.landscape import Landscape, exact_grid, preview_grid
from engine.jobs.runner import JobState
from engine.merge.session import LARGE_MODEL_PARAMS
from ui import figures, links, messages, pages, resources, widgets
from ui.state import sidebar_query, sidebar_workspace

st.header(pages.heading("landscape"))
st.caption(
    "θ = θ₀ + λ₁ τ₁ + λ₂ τ₂: the mean normalized accuracy of the two tasks (merged / fine-tuned, averaged) at "
    "every point of the grid. Left, each point evaluated; right, the tangent-space preview (the model linearized "
    "at θ₀), which is exact for linearized checkpoints and a first-order guess for standard ones. Click a cell to "
    "open that merge on the Merge page."
)
collection, choice, ws = sidebar_workspace()
names = ws.task_names
a_field, b_field, step_field = (LANDSCAPE.field(n) for n in ("a", "b", "step"))
page_links = [
    links.choice("a", "landscape_a", names, a_field.default_value(names), aliases=("landscape_a",)),
    links.choice("b", "landscape_b", names, b_field.default_value(names), aliases=("landscape_b",)),
    links.choice("step", "landscape_step", step_field.options(names), step_field.default, aliases=("landscape_step",)),
]
links.restore(page_links, scope="landscape")
links.show_notices("landscape", links=page_links)
left, middle, right = st.columns(3)
task_a = widgets.job_input(left, LANDSCAPE, "a", tasks=names)
task_b = widgets.job_input(middle, LANDSCAPE, "b", tasks=names)
step = widgets.job_input(right, LANDSCAPE, "step")
links.publish(page_links, owned=links.owned_by(page_links))
if task_a == task_b:
    st.info("Pick two different tasks.")
    st.stop()
args = LANDSCAPE.arguments({"a": task_a, "b": task_b, "step": step}, tasks=names, home=DataHome.from_env())
values = tuple(args["values"])
pair, split = (task_a, task_b), "interactive"
large = ws.matrix.spec.numel >= LARGE_MODEL_PARAMS
try:
    with st.spinner("Caching tangent features of the interactive split (once)…"):
        preview = preview_grid(ws, pair, values, split=split)
except MergelabError as exc:
    st.error(messages.shown(exc))
    st.stop()

pending = tuple((None,) * len(values) for _ in values)  # the exact grid before it is evaluated
exact_col, preview_col = st.columns(2)
preview_col.plotly_chart(  # first: drawn from the cached tangent features before any merge is evaluated
    figures.landscape_heatmap(Landscape(pair, values, split, pending, preview), preview=True),
    key="landscape_preview",
    on_select="rerun",
    selection_mode="points",
)
exact = None
setting = f"{pair}:{values}"
with exact_col:
    if large:  # hundreds of full evaluations of a big model: a background job
        if st.button("Evaluate every point as a background job", type="primary"):
            spec = resources.job_spec("landscape", ws, collection, choice, args, name=LANDSCAPE.title({}))
            st.session_state.update(landscape_job=resources.submit_job(spec), landscape_for=setting)
        widgets.restore_job(
            "landscape_job",
            "landscape",
            collection,
            for_key="landscape_for",
            setting_of=lambda args: f"{tuple(args['tasks'])}:{tuple(float(v) for v in args['values'])}",
        )
        job = widgets.job_progress("landscape_job") if st.session_state.get("landscape_for") == setting else None
        if job is not None and job.state is JobState.DONE:
            exact = job.result.exact
    else:
        bar = st.progress(0.0, text="evaluating the grid")
        exact = exact_grid(ws, pair, values, split=split, progress=lambda f, msg: bar.progress(f, text=msg))
        bar.empty()
    landscape = Landscape(pair, values, split, exact or pending, preview)
    st.plotly_chart(
        figures.landscape_heatmap(landscape), key="landscape_exact", on_select="rerun", selection_mode="points"
    )
clicked = figures.clicked_lambdas(st.session_state.get("landscape_exact")) or figures.clicked_lambdas(
    st.session_state.get("landscape_preview")
)
best = landscape.best() or landscape.best(preview=True)
if best is not None:
    kind = "evaluated" if exact is not None else "preview"
    st.markdown(
        f"Best ({kind}): λ {task_a} = {best[0]:g}, λ {task_b} = {best[1]:g}, mean normalized {best[2]:.1%} · "
        f"[open in Merge]({links.two_task_merge_link(pair, best[:2], base=sidebar_query())})"
    )
if clicked is not None:
    st.markdown(
        f"Clicked: λ {task_a} = {clicked[0]:g}, λ {task_b} = {clicked[1]:g} · "
        f"[open in Merge]({links.two_task_merge_link(pair, clicked, base=sidebar_query())})"
    )
