"""Forgetting: subtract a task vector (or its important part) and watch the target fall while the others hold."""

import streamlit as st

from engine.merge.forgetting import NEGATIONS, STA_MARGIN, STA_THRESHOLD
from ui import figures, formats, links, pages, resources, tables, widgets
from ui.state import sidebar_workspace

st.header(pages.heading("forgetting"))
collection, choice, ws = sidebar_workspace()
page_links = [
    links.choice("target", "forget_target", ws.task_names, ws.task_names[0], aliases=("forget_target",)),
    links.choice("method", "forget_method", list(NEGATIONS), "task_arithmetic", aliases=("forget_method",)),
    links.number(
        "threshold", "forget_threshold", low=0.0, high=1.0, default=STA_THRESHOLD, aliases=("forget_threshold",)
    ),
    links.number("margin", "forget_margin", low=0.0, high=4.0, default=STA_MARGIN, aliases=("forget_margin",)),
]
links.restore(page_links, scope="forgetting")


def reset_alpha() -> None:
    """A new target, method or mask setting opens at its own chosen α, not the previous one's."""
    links.forget("forget_alpha")


left, right = st.columns(2)
target = left.selectbox("Task to forget", ws.task_names, key="forget_target", on_change=reset_alpha)
method = right.selectbox(
    "Method", list(NEGATIONS), key="forget_method", format_func=NEGATIONS.get, on_change=reset_alpha
)
settings = {}
if method != "task_arithmetic":
    st.caption(
        "**Provisional definition** (the STA paper body was not available): subtract only the entries of "
        "τ whose importance for the target, normalised per tensor, is ≥ κ and at least ρ times their "
        "importance for every control task."
    )
    a, b = st.columns(2)
    settings = {
        "threshold": a.slider(
            "κ (importance threshold)",
            0.0,
            1.0,
            step=0.01,
            key="forget_threshold",
            on_change=reset_alpha,
        ),
        "margin": b.slider(
            "ρ (target over controls)",
            0.0,
            4.0,
            step=0.1,
            key="forget_margin",
            on_change=reset_alpha,
            help="0 ignores the controls' importance",
        ),
    }
links.publish(page_links, owned=links.owned_by(page_links))
if method != "task_arithmetic":
    widgets.require_importance(ws, "grad0")
curve = resources.shown_forgetting_curve(collection, resources.device_name(), target, method, **settings, choice=choice)
alpha_link = links.number(
    "alpha", "forget_alpha", low=0.0, high=2.0, default=curve.chosen_alpha, aliases=("forget_alpha",)
)
links.restore([alpha_link], scope="forgetting")  # after the curve: α opens at its chosen value
links.show_notices("forgetting", links=[*page_links, alpha_link])
alpha = st.slider("α", 0.0, 2.0, step=0.05, format="%.2f", key="forget_alpha", help="θ = θ₀ − α·v")
links.publish([alpha_link], owned=links.owned_by([alpha_link]))

point = curve.nearest_index(alpha)  # α moves on the sweep's grid: the numbers are the chart's own
a, b = st.columns(2)
a.metric(
    f"target: {target} ({curve.split} split)",
    formats.percent(curve.target_accuracy[point]),
    delta=f"{formats.signed_percent(curve.target_accuracy[point] - curve.pretrained_target)} vs pretrained",
    delta_color="inverse",
)
b.metric(f"control (mean of the {len(curve.controls)} others)", formats.percent(curve.control_accuracy[point]))

st.plotly_chart(figures.forgetting_chart(curve, alpha=alpha), key="forgetting_chart")
st.caption(
    "The papers' protocol: choose the α that brings the target lowest while the control accuracy stays "
    f"at or above 95% of the pretrained model's (dotted line), on the {curve.split} split"
    + (
        " (the sweep stored when the collection was built, whose chosen α the table below reports)"
        if curve.split != "interactive"
        else ""
    )
    + ". The numbers above are this sweep's at the slider's α, which opens at the chosen α."
)

st.subheader("Methods at their chosen α")
stored = resources.stored_forgetting(collection)
if stored is not None and target in stored["targets"]:
    table = figures.forgetting_table(stored["targets"][target])
    percents = ("target", "control", "pretrained target", "chance", "control / pretrained")
    st.dataframe(
        table,
        column_config=tables.fitted_columns(
            table, {k: st.column_config.NumberColumn(format="percent") for k in percents}
        ),
    )
    st.caption(
        "Stored when the collection was built, with each method's default settings: α chosen on val, "
        "accuracies on test. 'forgotten' = the target fell at least half way from pretrained to chance "
        "with control ≥ 95% of pretrained."
    )
elif st.button("Compare methods", help="sweep α for every method (default settings) on the interactive split"):
    ready = [m for m in NEGATIONS if m == "task_arithmetic" or ws.importance.ready("grad0")]
    rows = {m: resources.forgetting_curve(collection, resources.device_name(), target, m, choice=choice) for m in ready}
    st.dataframe(
        [
            {
                "method": NEGATIONS[m],
                "chosen α": formats.fixed(c.chosen_alpha),
                "target": c.target_accuracy[c.chosen_index()],
                "control": c.control_accuracy[c.chosen_index()],
            }
            for m, c in rows.items()
        ],
        column_config={k: st.column_config.NumberColumn(format="percent") for k in ("target", "control")},
    )
