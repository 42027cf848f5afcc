"""STA importance: which entries each task's loss is sensitive to, and how the kept sets overlap."""

import streamlit as st

from engine.jobs.forms import IMPORTANCE
from ui import figures, links, pages, resources, widgets
from ui.state import sidebar_workspace

st.header(pages.heading("sta"))
st.caption(
    "**Provisional definition.** STA (Tian, Lai et al., arXiv 2411.16139) scores each task-vector entry "
    "by a first-order Taylor estimate of the loss change; the paper body was not available, so the "
    "aggregation, normalisation and threshold are our choices."
)
collection, choice, ws = sidebar_workspace()
kind_field = IMPORTANCE.field("kind")
page_links = [
    links.choice("kind", "sta_kind", kind_field.options(()), kind_field.default, aliases=("sta_kind",)),
    links.number("threshold", "sta_threshold", low=0.0, high=1.0, default=0.05, aliases=("sta_threshold",)),
]
links.restore(page_links, scope="sta")
links.show_notices("sta", links=page_links)
left, right = st.columns(2)
kind = widgets.job_input(left, IMPORTANCE, "kind")
threshold = right.slider(
    "κ (keep entries with importance ≥ κ)",
    0.0,
    1.0,
    step=0.01,
    key="sta_threshold",
    help="importance is normalised per tensor: each tensor's peak is 1",
)
links.publish(page_links, owned=links.owned_by(page_links))
widgets.require_importance(ws, kind)
summary = resources.importance_summary(collection, resources.device_name(), kind, threshold, choice)

st.dataframe(
    {"task": list(summary.tasks), "kept at κ": summary.kept_fraction.tolist()},
    column_config={"kept at κ": st.column_config.NumberColumn(format="percent")},
)
st.plotly_chart(figures.importance_histograms(summary), key="importance_histograms")
st.caption(
    "Entries with importance below 10⁻⁶ of their tensor's peak are counted in the legend; the maps are "
    "stored as one byte per entry on a log scale (5.6% steps)."
)
a, b = st.columns(2)
a.plotly_chart(figures.mask_overlap_heatmap(summary), key="mask_overlap")
b.plotly_chart(figures.layer_importance_heatmap(summary), key="layer_importance")
st.caption(
    "Overlap: |mᵢ ∧ mⱼ| / |mᵢ ∨ mⱼ| of the kept sets. Masks that overlap little let STA merge tasks "
    "with less interference; the per-layer view shows where in the network each task's loss is sensitive."
)
