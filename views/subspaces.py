"""Subspaces: how low-rank the task vectors' layer updates are, and how much tasks share directions."""

import streamlit as st

from engine.merge import METHODS
from engine.merge.pipeline import CALIBRATORS, pipeline_display, pipeline_name
from engine.merge.spectra import alignment_vs_taujp, update_spectra
from engine.params import network_order
from ui import figures, formats, pages
from ui.state import sidebar_workspace

st.header(pages.heading("subspaces"))
st.caption(
    "Each layer's task vector is a matrix τₜ = Uₜ Sₜ Vₜᵀ. The subspace merges (TSV-M, Iso-C, Iso-CTS, CART) work "
    "on these decompositions: they pay off when task matrices are close to low-rank (most energy in a few "
    "directions) and when tasks use different directions (low alignment), so keeping each task's top "
    "directions and orthogonalising them removes interference."
)
collection, choice, ws = sidebar_workspace()
with st.spinner("Factoring every layer of every task…"):
    stats = ws.subspace_stats()

layer = st.selectbox("Layer", [stats.layers[i] for i in network_order(stats.layers)], key="subspace_layer")
left, right = st.columns(2)
left.plotly_chart(figures.spectrum_chart(stats, layer), key="subspace_spectrum")
right.plotly_chart(figures.top_share_heatmap(stats), key="subspace_top_share")
i = stats.layers.index(layer)
st.caption(
    f"{layer}: effective rank "
    + ", ".join(f"{t} {float(r):.1f}" for t, r in zip(stats.tasks, stats.effective_rank[i]))
    + f" of {stats.full_rank[i]}. The top 1/K directions are the share TSV-M keeps of each task."
)

st.subheader("What a calibrator does to the merged update")
bases = [name for name, m in METHODS.items() if not m.task_specific]  # a task-specific merge serves no one Δ
c1, c2 = st.columns(2)
base = c1.selectbox(
    "base merge",
    bases,
    index=bases.index("task_arithmetic"),
    format_func=lambda m: METHODS[m].display_name,
    key="pipe_base",
)
steps = c2.multiselect(
    "calibrators after it",
    list(CALIBRATORS),
    default=["svc"],
    format_func=lambda c: CALIBRATORS[c].display_name,
    key="pipe_calibrate",
)
if ws.merges.needs_job(ws.task_names, base, {}):
    st.info(f"{METHODS[base].display_name} is slow on this pool: compute its parts on the Merge page first.")
else:
    merged = {pipeline_display(base): ws.merge(ws.task_names, base, {})}
    if steps:
        merged[pipeline_display(pipeline_name(base, steps))] = ws.merge(ws.task_names, base, {}, calibrate=steps)
    spectra = update_spectra(ws.matrix.theta0, merged, ws.matrix.spec, layer)
    st.plotly_chart(figures.pipeline_spectrum_chart(spectra, layer), key="pipeline_spectrum")
    st.caption(
        f"{layer}, every task merged at each step's declared defaults (set them on the Merge page). SVC rescales "
        "each singular value of Δ by how much the tasks' own updates use that direction: task arithmetic adds the "
        "tasks' shared directions K times, and SVC shrinks them most. LiNeS multiplies a whole layer by one "
        "factor, so it only moves the spectrum up or down."
    )

st.subheader("Do tasks share directions?")
a, b = st.columns(2)
a.plotly_chart(
    figures.alignment_heatmap(stats.overall_alignment, stats.tasks, title="Top-k alignment, mean over layers"),
    key="alignment_overall",
)
b.plotly_chart(
    figures.alignment_heatmap(stats.alignment[i], stats.tasks, title=f"Top-k alignment: {layer}"),
    key="alignment_layer",
)
st.caption(
    r"Alignment of tasks a and b: $\lVert U_{a,k}^\top U_{b,k} \rVert_F^2 / k$ over their top "
    r"$k = \lfloor p/K \rfloor$ left singular vectors (1: the same subspace, 0: orthogonal subspaces)."
)

st.subheader("Against τJp")
if ws.taujp.ready():
    matrix = ws.taujp.matrix()
    agreement = alignment_vs_taujp(stats, matrix.values, matrix.vectors, matrix.tasks)
    c, d = st.columns(2)
    c.plotly_chart(figures.taujp_heatmap(matrix), key="subspace_taujp")
    d.plotly_chart(figures.agreement_scatter(agreement), key="subspace_agreement")
    st.caption(
        f"Spearman ρ = {formats.fixed(agreement.rho)} over {len(agreement.pairs)} ordered pairs: positive when the "
        "pairs whose subspaces overlap most are also the pairs whose vectors move each other's embeddings most "
        "(τJp, the Interference page), i.e. when the two measures of interference agree."
    )
else:
    st.info("The τJp matrix of these checkpoints is not computed yet: open the Interference page to compute it.")
