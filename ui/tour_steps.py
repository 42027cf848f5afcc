"""The Tour's six steps, one function each: a paragraph, the formula, one live chart and a link to the page
that goes further. views/tour.py keeps the frame (which step, presenter mode, Previous / Next)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import plotly.graph_objects as go
import streamlit as st

from engine.merge import get_method
from engine.merge.forgetting import NEGATIONS
from engine.workspace import Workspace
from ui import figures, links, resources
from ui.resources import Choice


@dataclass(frozen=True)
class Tour:
    """What every step draws with: the sidebar's workspace and whether presenter mode is on."""

    collection: str
    choice: Choice
    ws: Workspace
    presenter: bool

    @property
    def tasks(self) -> list[str]:
        return list(self.ws.task_names)

    def chart(self, fig: go.Figure, key: str) -> None:
        st.plotly_chart(figures.for_projector(fig) if self.presenter else fig, key=key, theme=None)


def link(label: str, url: str) -> None:
    st.markdown(f"[{label} →]({url})")


def no_stored(what: str) -> None:
    st.info(f"This collection stores no {what}; the demo zoo does (collection assets/zoo).")


def similarity(t: Tour) -> None:
    """Step 1: task vectors and the cosine similarity between them."""
    st.markdown(
        "A fine-tune's **task vector** is what it changed in the weights, τₜ = θₜ − θ₀ (Ilharco et al., ICLR "
        "2023). Vectors of unrelated tasks are nearly orthogonal; a large cosine flags tasks that will interact "
        "when their vectors are added."
    )
    st.latex(
        r"\tau_t = \theta_t - \theta_0, \qquad \cos(\tau_i, \tau_j) = "
        + r"\frac{\tau_i \cdot \tau_j}{\lVert\tau_i\rVert\,\lVert\tau_j\rVert}"
    )
    st.session_state.setdefault("tour_sim_tasks", t.tasks)
    shown = st.multiselect("Tasks shown", t.tasks, key="tour_sim_tasks") or t.tasks
    cosine = resources.task_similarity(t.collection, resources.device_name(), t.choice)
    index = [t.tasks.index(name) for name in shown]
    t.chart(figures.similarity_heatmap(cosine[index][:, index], shown), "tour_similarity")
    link("Checkpoints, sample images and the full similarity matrix on the Zoo page", "zoo")


def addition(t: Tour) -> None:
    """Step 2: task arithmetic, one λ for every task, every task's accuracy at once."""
    st.markdown(
        "**Task arithmetic** (Ilharco et al., ICLR 2023) adds every task vector to the pretrained model with one "
        "scale λ. Small λ stays close to zero-shot; large λ lets the vectors interfere. Move λ and watch every "
        "task at once (interactive split)."
    )
    st.latex(r"\theta = \theta_0 + \lambda \sum_{t=1}^{K} \tau_t")
    st.session_state.setdefault("tour_lam", 0.3)
    lam = st.slider("λ", 0.0, 1.0, step=0.05, key="tour_lam")
    comparison = t.ws.compare(t.tasks, "task_arithmetic", {"lam": lam}, split="interactive")
    t.chart(figures.accuracy_bars(comparison), "tour_accuracy")
    st.caption(f"Mean normalized accuracy (merged / fine-tuned): {comparison.mean_normalized:.1%}.")
    link("Open this merge on the Merge page", links.merge_link("task_arithmetic", {"lam": lam}))


def ties(t: Tour) -> None:
    """Step 3: TIES's kept entries and the sign conflicts between tasks per layer."""
    st.markdown(
        "Added vectors **interfere**: small redundant entries pile up, and tasks pull the same weight in opposite "
        "directions. **TIES** (Yadav et al., NeurIPS 2023) keeps each vector's top-d entries, elects one sign per "
        "entry and averages only the agreeing ones. The bars: the share of kept entries whose signs conflict."
    )
    st.latex(
        # two lines: one would overflow the page at the projector's size
        r"\begin{gathered}\hat\tau_t = \operatorname{top}_d(\tau_t), \quad"
        r"\gamma = \operatorname{sgn}\Big(\sum_t \hat\tau_t\Big), \quad A_p = \{t : \operatorname{sgn}"
        r"\hat\tau_t^{(p)} = \gamma^{(p)}\} \\ \tau_m^{(p)} = \frac{1}{|A_p|}\sum_{t \in A_p} \hat\tau_t^{(p)},"
        r"\quad \theta = \theta_0 + \lambda\,\tau_m\end{gathered}"
    )
    st.session_state.setdefault("tour_density", 0.2)
    density = st.slider("d (fraction of each task vector kept)", 0.05, 1.0, step=0.05, key="tour_density")
    params = {p.name: p.default for p in get_method("ties").params} | {"density": density}
    report = t.ws.merges.sparsity(t.tasks, "ties", params)
    t.chart(figures.sign_conflict_bars(report), "tour_sign_conflicts")
    link("Open TIES on the Merge page (turn on 'Show what the method keeps')", links.merge_link("ties", params))


def taujp(t: Tour) -> None:
    """Step 4: τJp between every pair of tasks, per fine-tuning variant when the collection stores them."""
    st.markdown(
        "Adding τₐ moves the embeddings of task b's images by about J f(x; θ₀)·τₐ. **τJp** (Yoshida et al., ICLR "
        "2025) measures that move for every pair; fine-tuning with it as a **regulariser** (linearized, penalty "
        "β·R on the other tasks' inputs) shrinks the off-diagonal, and with it what merging costs."
    )
    st.latex(
        r"\begin{gathered}\tau\mathrm{Jp}[a,b] = \mathbb{E}_{x \sim D_b} \big\lVert J_\theta f(x;\theta_0)\,\tau_a"
        r"\big\rVert \\ \mathcal{L} = \mathcal{L}_{\mathrm{CE}} + \beta\, \mathbb{E}_{x \sim D_{b \neq t}}"
        r"\big\lVert J_\theta f(x;\theta_0)\,(\theta - \theta_0) \big\rVert\end{gathered}"
    )
    stored = t.ws.taujp.stored()
    if stored:
        variants = list(stored)
        st.session_state.setdefault("tour_taujp_variant", variants[0])
        variant = st.selectbox("Fine-tuning variant", variants, key="tour_taujp_variant")
        heatmaps = dict(zip(variants, figures.taujp_variant_heatmaps(stored)))  # one colour scale for all
        t.chart(heatmaps[variant], "tour_taujp")
    elif t.ws.taujp.ready():
        t.chart(figures.taujp_heatmap(t.ws.taujp.matrix()), "tour_taujp")
    else:
        no_stored("τJp matrix")
    link("Per-layer interference and the accuracy each pair loses on the Interference page", "interference")


def forgetting(t: Tour) -> None:
    """Step 5: forgetting a task by negation, from the stored sweeps."""
    st.markdown(
        "Subtracting a task vector **forgets** the task (negation, Ilharco et al., ICLR 2023): the target falls "
        "towards chance while the other tasks should hold. α is chosen as the lowest target with the control "
        "at ≥ 95% of pretrained; STA (provisional definition here) subtracts only the entries important for the target."
    )
    st.latex(r"\theta = \theta_0 - \alpha\,\tau_{\text{target}} \qquad (\text{STA: } \theta_0 - \alpha\, m \odot \tau)")
    stored = resources.stored_forgetting(t.collection)
    if stored and stored.get("targets"):
        targets = list(stored["targets"])
        a, b = st.columns(2)
        st.session_state.setdefault("tour_forget_target", targets[0])
        target = a.selectbox("Task to forget", targets, key="tour_forget_target")
        methods = list(stored["targets"][target])
        st.session_state.setdefault("tour_forget_method", methods[0])
        if st.session_state["tour_forget_method"] not in methods:
            st.session_state["tour_forget_method"] = methods[0]
        method = b.selectbox("Method", methods, key="tour_forget_method", format_func=lambda m: NEGATIONS.get(m, m))
        curve = figures.stored_forgetting_curve(stored["targets"][target][method]["curve"])
        t.chart(figures.forgetting_chart(curve), "tour_forgetting")
        st.caption("Stored when the zoo was built (val split); the Forgetting page sweeps the interactive split.")
        link("Forget this task on the Forgetting page", f"forgetting?target={target}&method={method}")
    else:
        no_stored("forgetting sweeps")
        link("Forget a task on the Forgetting page", "forgetting")


def learned(t: Tour) -> None:
    """Step 6: learned coefficients (aTLAS) and DV-BASI, from the stored results."""
    st.markdown(
        "Instead of one λ, **aTLAS** (Zhang et al., NeurIPS 2024) learns one coefficient per task vector and "
        "parameter block on a little labelled (or unlabelled) data. **DV-BASI** (Wang et al., AAAI-26) then "
        "rescales the merged model's difference vector δ block by block and repeats."
    )
    st.latex(
        r"\theta = \theta_0 + \sum_t \sum_l \lambda_t^{(l)} \tau_t^{(l)}, \qquad"
        r"\delta = \theta - \theta_0,\ \ \theta \leftarrow \theta + \sum_l s^{(l)} \delta^{(l)}"
    )
    report = resources.build_report(t.collection) if not t.choice else None
    if report and report.get("learned"):
        st.session_state.setdefault("tour_objective", "supervised")
        objective = st.radio(
            "Objective",
            ["supervised", "unsupervised"],
            key="tour_objective",
            horizontal=True,
            help="supervised: cross-entropy with val labels; unsupervised: prediction entropy",
        )
        t.chart(figures.learned_bars(figures.learned_table(report["learned"]), objective=objective), "tour_learned")
    else:
        no_stored("learned coefficients")
    link("Learn coefficients yourself on the aTLAS & DV-BASI page", "learned")


STEPS: tuple[tuple[str, Callable[[Tour], None]], ...] = (
    ("Task vectors and their similarity", similarity),
    ("Addition and the role of λ", addition),
    ("Interference and TIES's sign conflicts", ties),
    ("τJp and its regulariser", taujp),
    ("Forgetting by negation", forgetting),
    ("Learned coefficients and DV-BASI", learned),
)
