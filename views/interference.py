"""Interference: τJp, one task's vector times the pretrained Jacobian on another task's inputs."""

import streamlit as st

from ui import figures, links, pages, widgets
from ui.state import sidebar_workspace

st.header(pages.heading("interference"))
st.caption(
    "Adding τ_a to the model moves the embedding of task b's images by about J f(x; θ₀)·τ_a (first order). "
    "τJp[a, b] is the mean length of that move (Yoshida et al., ICLR 2025): where it is large, task a's vector "
    "disturbs task b, and the scatter below checks it against the accuracy b loses when τ_a is added (to first "
    "order, or evaluated through the network with 'Exact drops')."
)
collection, choice, ws = sidebar_workspace()
widgets.require_taujp(ws)
matrix = ws.taujp.matrix()
pair_links = [
    links.choice("a", "interference_vector", ws.task_names, ws.task_names[0], aliases=("interference_vector",)),
    links.choice("b", "interference_task", ws.task_names, ws.task_names[-1], aliases=("interference_task",)),
]
lam_link = links.number("lam", "interference_lam", low=0.05, high=1.0, default=0.3, aliases=("interference_lam",))
links.restore([*pair_links, lam_link], scope="interference")
links.show_notices("interference", links=[*pair_links, lam_link])


def select_cell() -> None:
    """A click on a heatmap cell picks the pair for the per-layer chart below."""
    cell = figures.clicked_cell(st.session_state.get("taujp_heatmap"))
    if cell is not None and all(name in ws.task_names for name in cell):
        st.session_state["interference_vector"], st.session_state["interference_task"] = cell


left, right = st.columns([3, 2])
left.plotly_chart(figures.taujp_heatmap(matrix), key="taujp_heatmap", on_select=select_cell, selection_mode="points")
right.plotly_chart(figures.taujp_diagonal_bars(matrix), key="taujp_diagonal")
st.caption("Click a cell to see which layers carry that pair's interference (below).")
stored = ws.taujp.stored()
if len(stored) > 1:
    st.subheader("Fine-tuning variants side by side")
    columns = st.columns(len(stored))
    for i, (column, figure) in enumerate(zip(columns, figures.taujp_variant_heatmaps(stored))):
        column.plotly_chart(figure, key=f"taujp_variant_{i}")
    st.caption(
        "The same tasks fine-tuned three ways, on one colour scale. Linearized fine-tuning alone does not "
        "remove interference; adding the τJp penalty while fine-tuning shrinks the off-diagonal entries, and "
        "with them what a merge costs the other tasks (Merge page: choose the variant under 'Fine-tuned "
        "checkpoints')."
    )

DROPS_EXPLAINED = {
    "network, val split": "The drops are the network's own, on val.",
    "linearized model, interactive split": "The drops are the linearized model's, f₀ + λ·J(τ_a + τ_b): exactly how "
    "these checkpoints are evaluated, from stored Jacobian-vector products that moving λ only re-reads.",
    "first order, interactive split": "The drops are the first-order (tangent-space) estimate f₀ + λ·J(τ_a + τ_b), "
    "the model τJp describes, from stored Jacobian-vector products that moving λ only re-reads; turn on 'Exact "
    "drops' for the network's own.",
}


@st.fragment
def drops_section() -> None:
    """The λ slider and the scatter it drives, rerun on their own: moving λ redraws only this chart, not the
    heatmaps and layer bars above and below it."""
    lam = st.slider("λ for the accuracy drop", 0.05, 1.0, step=0.05, key="interference_lam")
    links.publish([lam_link], owned=links.owned_by([lam_link]))
    exact = not ws.linearized and st.toggle(
        "Exact drops: evaluate the network on val",
        key="interference_exact",
        help="every pair through the network at each λ: seconds per λ on a CPU, where the first-order drops take "
        "milliseconds once J f(x; θ₀)·τ is stored",
    )
    if exact:
        with st.spinner("Evaluating every pair of tasks on val…"):
            drops, source = ws.taujp.pair_drops(lam), "network, val split"
    else:
        with st.spinner("J f(x; θ₀)·τ on every task's interactive images (once, then kept in the data home)…"):
            drops = ws.taujp.tangent_pair_drops(lam)
        source = "linearized model, interactive split" if ws.linearized else "first order, interactive split"
    st.plotly_chart(figures.interference_scatter(matrix, drops, lam=lam, source=source), key="interference_scatter")
    st.caption(
        "Spearman ρ in the title: the rank correlation of τJp and the accuracy drop over all ordered pairs. Near 1, "
        "the pairs τJp ranks as interfering more do lose more accuracy, so τJp, computed without any merge, predicts "
        f"which tasks will disturb which; near 0 it does not, at this λ. {DROPS_EXPLAINED[source]}"
    )


drops_section()

st.subheader("Which layers carry it")
a, b = st.columns(2)
vector = a.selectbox("task vector a", ws.task_names, key="interference_vector")
task = b.selectbox("inputs of task b", ws.task_names, key="interference_task")
links.publish(pair_links, owned=links.owned_by(pair_links))
with st.spinner("τJp per layer…"):
    parts = ws.taujp.layers(vector, task)
st.plotly_chart(figures.layer_bars(parts, vector=vector, task=task), key="taujp_layers")
