"""Subspaces: how low-rank the task vectors' layer updates are, and how much tasks share directions."""

import streamlit as st

from engine.merge.spectra import alignment_vs_taujp
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
if ws.taujp_ready():
    matrix = ws.taujp()
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
