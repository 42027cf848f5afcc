"""Tour: a guided lecture on the demo zoo in six steps, each with one live chart, its formula and a link to
the full page. The step is in st.session_state["tour_step"] and the URL (?step=N), so a link opens a step."""

import streamlit as st

from engine.merge import get_method
from engine.merge.forgetting import METHODS as FORGETTING_METHODS
from ui import figures, links, resources
from ui.state import sidebar_workspace

STEPS = (
    "Task vectors and their similarity",
    "Addition and the role of λ",
    "Interference and TIES's sign conflicts",
    "τJp and its regulariser",
    "Forgetting by negation",
    "Learned coefficients and DV-BASI",
)


def _step_from_url() -> int | None:
    try:
        step = int(st.query_params.get("step", ""))
    except ValueError:
        return None
    return step if 1 <= step <= len(STEPS) else None


if "tour_step" not in st.session_state or st.session_state.get("_tour_url_step") != st.query_params.get("step"):
    st.session_state["tour_step"] = _step_from_url() or st.session_state.get("tour_step", 1)


# Each step's control is a widget only while its step is shown, and Streamlit drops an unrendered widget's
# value: re-assigning it on every run keeps λ, d, ... where the audience left them when the tour comes back.
for key in (
    "tour_sim_tasks",
    "tour_lam",
    "tour_density",
    "tour_taujp_variant",
    "tour_forget_target",
    "tour_forget_method",
    "tour_objective",
):
    if key in st.session_state:
        st.session_state[key] = st.session_state[key]


def go_to(step: int) -> None:
    st.session_state["tour_step"] = min(max(step, 1), len(STEPS))


step = st.session_state["tour_step"]
st.query_params["step"] = str(step)
st.session_state["_tour_url_step"] = str(step)  # the URL now says this step: only a changed URL moves the tour

top, toggle = st.columns([4, 1])
top.header(f"Tour · step {step} of {len(STEPS)}: {STEPS[step - 1]}")
presenter = toggle.toggle("Presenter mode", key="tour_presenter", help="larger fonts and figures for a projector")
if presenter:
    st.markdown(
        # the lecture's text only: a larger root font would also truncate the sidebar's and the widgets' labels
        "<style>[data-testid='stMain'] [data-testid='stMarkdown'] :is(p, li) "
        "{font-size: 1.75rem !important;} .katex {font-size: 1.6em !important;}</style>",
        unsafe_allow_html=True,
    )
collection, choice, ws = sidebar_workspace()
tasks = list(ws.task_names)


def chart(fig, key: str) -> None:
    st.plotly_chart(figures.for_projector(fig) if presenter else fig, key=key, theme=None)


def link(label: str, url: str) -> None:
    st.markdown(f"[{label} →]({url})")


def no_stored(what: str) -> None:
    st.info(f"This collection stores no {what}; the demo zoo does (collection assets/zoo).")


if step == 1:
    st.markdown(
        "A fine-tune's **task vector** is what it changed in the weights, τₜ = θₜ − θ₀ (Ilharco et al., ICLR "
        "2023). Vectors of unrelated tasks are nearly orthogonal; a large cosine flags tasks that will interact "
        "when their vectors are added."
    )
    st.latex(
        r"\tau_t = \theta_t - \theta_0, \qquad \cos(\tau_i, \tau_j) = "
        + r"\frac{\tau_i \cdot \tau_j}{\lVert\tau_i\rVert\,\lVert\tau_j\rVert}"
    )
    st.session_state.setdefault("tour_sim_tasks", tasks)
    shown = st.multiselect("Tasks shown", tasks, key="tour_sim_tasks") or tasks
    similarity = resources.task_similarity(collection, resources.device_name(), choice)
    index = [tasks.index(t) for t in shown]
    chart(figures.similarity_heatmap(similarity[index][:, index], shown), "tour_similarity")
    link("Checkpoints, sample images and the full similarity matrix on the Zoo page", "zoo")

elif step == 2:
    st.markdown(
        "**Task arithmetic** (Ilharco et al., ICLR 2023) adds every task vector to the pretrained model with one "
        "scale λ. Small λ stays close to zero-shot; large λ lets the vectors interfere. Move λ and watch every "
        "task at once (interactive split)."
    )
    st.latex(r"\theta = \theta_0 + \lambda \sum_{t=1}^{K} \tau_t")
    st.session_state.setdefault("tour_lam", 0.3)
    lam = st.slider("λ", 0.0, 1.0, step=0.05, key="tour_lam")
    comparison = ws.compare(tasks, "task_arithmetic", {"lam": lam}, split="interactive")
    chart(figures.accuracy_bars(comparison), "tour_accuracy")
    st.caption(f"Mean normalized accuracy (merged / fine-tuned): {comparison.mean_normalized:.1%}.")
    link("Open this merge on the Merge page", links.merge_link("task_arithmetic", {"lam": lam}))

elif step == 3:
    st.markdown(
        "Added vectors **interfere**: small redundant entries pile up, and tasks pull the same weight in opposite "
        "directions. **TIES** (Yadav et al., NeurIPS 2023) keeps each vector's top-d entries, elects one sign per "
        "entry and averages only the agreeing ones. The bars: the share of kept entries whose signs conflict."
    )
    st.latex(
        r"\hat\tau_t = \operatorname{top}_d(\tau_t), \quad \gamma = \operatorname{sgn}\Big(\sum_t \hat\tau_t\Big),"
        r"\quad \tau_m^{(p)} = \frac{1}{|A_p|}\sum_{t \in A_p} \hat\tau_t^{(p)},\ A_p = \{t : \operatorname{sgn}"
        r"\hat\tau_t^{(p)} = \gamma^{(p)}\}, \quad \theta = \theta_0 + \lambda\,\tau_m"
    )
    ties = get_method("ties")
    st.session_state.setdefault("tour_density", 0.2)
    density = st.slider("d (fraction of each task vector kept)", 0.05, 1.0, step=0.05, key="tour_density")
    params = {p.name: p.default for p in ties.params} | {"density": density}
    report = ws.sparsity(tasks, "ties", params)
    chart(figures.sign_conflict_bars(report), "tour_sign_conflicts")
    link("Open TIES on the Merge page (turn on 'Show what the method keeps')", links.merge_link("ties", params))

elif step == 4:
    st.markdown(
        "Adding τₐ moves the embeddings of task b's images by about J f(x; θ₀)·τₐ. **τJp** (Yoshida et al., ICLR "
        "2025) measures that move for every pair; fine-tuning with it as a **regulariser** (linearized, penalty "
        "β·R on the other tasks' inputs) shrinks the off-diagonal, and with it what merging costs."
    )
    st.latex(
        r"\tau\mathrm{Jp}[a,b] = \mathbb{E}_{x \sim D_b} \big\lVert J_\theta f(x;\theta_0)\,\tau_a \big\rVert,"
        r"\qquad \mathcal{L} = \mathcal{L}_{\mathrm{CE}} + \beta\, \mathbb{E}_{x \sim D_{b \neq t}}"
        r"\big\lVert J_\theta f(x;\theta_0)\,(\theta - \theta_0) \big\rVert"
    )
    stored = ws.stored_taujp()
    if stored:
        variants = list(stored)
        st.session_state.setdefault("tour_taujp_variant", variants[0])
        variant = st.selectbox("Fine-tuning variant", variants, key="tour_taujp_variant")
        heatmaps = dict(zip(variants, figures.taujp_variant_heatmaps(stored)))  # one colour scale for all
        chart(heatmaps[variant], "tour_taujp")
    elif ws.taujp_ready():
        chart(figures.taujp_heatmap(ws.taujp()), "tour_taujp")
    else:
        no_stored("τJp matrix")
    link("Per-layer interference and the accuracy each pair loses on the Interference page", "interference")

elif step == 5:
    st.markdown(
        "Subtracting a task vector **forgets** the task (negation, Ilharco et al., ICLR 2023): the target falls "
        "towards chance while the other tasks should hold. α is chosen as the lowest target with the control "
        "at ≥ 95% of pretrained; STA (provisional definition here) subtracts only the entries important for the target."
    )
    st.latex(r"\theta = \theta_0 - \alpha\,\tau_{\text{target}} \qquad (\text{STA: } \theta_0 - \alpha\, m \odot \tau)")
    stored = resources.stored_forgetting(collection)
    if stored and stored.get("targets"):
        targets = list(stored["targets"])
        a, b = st.columns(2)
        st.session_state.setdefault("tour_forget_target", targets[0])
        target = a.selectbox("Task to forget", targets, key="tour_forget_target")
        methods = list(stored["targets"][target])
        st.session_state.setdefault("tour_forget_method", methods[0])
        if st.session_state["tour_forget_method"] not in methods:
            st.session_state["tour_forget_method"] = methods[0]
        method = b.selectbox(
            "Method", methods, key="tour_forget_method", format_func=lambda m: FORGETTING_METHODS.get(m, m)
        )
        curve = figures.stored_forgetting_curve(stored["targets"][target][method]["curve"])
        chart(figures.forgetting_chart(curve), "tour_forgetting")
        st.caption("Stored when the zoo was built (val split); the Forgetting page sweeps the interactive split.")
        link("Forget this task on the Forgetting page", f"forgetting?target={target}&method={method}")
    else:
        no_stored("forgetting sweeps")
        link("Forget a task on the Forgetting page", "forgetting")

else:
    st.markdown(
        "Instead of one λ, **aTLAS** (Zhang et al., NeurIPS 2024) learns one coefficient per task vector and "
        "parameter block on a little labelled (or unlabelled) data. **DV-BASI** (Wang et al., AAAI-26) then "
        "rescales the merged model's difference vector δ block by block and repeats."
    )
    st.latex(
        r"\theta = \theta_0 + \sum_t \sum_l \lambda_t^{(l)} \tau_t^{(l)}, \qquad"
        r"\delta = \theta - \theta_0,\ \ \theta \leftarrow \theta + \sum_l s^{(l)} \delta^{(l)}"
    )
    report = resources.build_report(collection) if not choice else None
    if report and report.get("learned"):
        st.session_state.setdefault("tour_objective", "supervised")
        objective = st.radio(
            "Objective",
            ["supervised", "unsupervised"],
            key="tour_objective",
            horizontal=True,
            help="supervised: cross-entropy with val labels; unsupervised: prediction entropy",
        )
        chart(figures.learned_bars(figures.learned_table(report["learned"]), objective=objective), "tour_learned")
    else:
        no_stored("learned coefficients")
    link("Learn coefficients yourself on the aTLAS & DV-BASI page", "learned")

previous, _, following = st.columns([1, 4, 1])
previous.button("← Previous", key="tour_previous", on_click=go_to, args=(step - 1,), disabled=step == 1)
following.button("Next →", key="tour_next", on_click=go_to, args=(step + 1,), disabled=step == len(STEPS))
st.caption(f"Share this step: `tour?step={step}`.")
