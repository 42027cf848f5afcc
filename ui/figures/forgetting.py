"""Figures and tables of forgetting by negation (Forgetting page, Tour step 5)."""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go

from engine.merge.forgetting import CONTROL_FLOOR, NEGATIONS, ForgettingCurve
from ui.figures.style import readable
from ui.formats import fixed


def forgetting_chart(curve: ForgettingCurve, *, alpha: float | None = None) -> go.Figure:
    """Target and control accuracy over α, the control floor, the chosen α (and the slider's α)."""
    x = list(curve.alphas)
    fig = go.Figure(
        [
            go.Scatter(
                x=x,
                y=list(curve.target_accuracy),
                name=f"target: {curve.target}",
                mode="lines+markers",
                line=dict(color="#d62728"),
            ),
            go.Scatter(
                x=x,
                y=list(curve.control_accuracy),
                name="control (mean of the others)",
                mode="lines+markers",
                line=dict(color="#1f77b4"),
            ),
        ]
    )
    fig.add_hline(
        y=CONTROL_FLOOR * curve.pretrained_control,
        line_dash="dot",
        line_color="#1f77b4",
        annotation_text="95% of pretrained control",
    )
    fig.add_vline(x=curve.chosen_alpha, line_dash="dash", annotation_text=f"chosen α = {fixed(curve.chosen_alpha)}")
    if alpha is not None:
        fig.add_vline(x=alpha, line_color="grey", opacity=0.5)
    vector = "τ" if curve.method == "task_arithmetic" else "(m ⊙ τ)"
    fig.update_layout(
        title=f"Forgetting {curve.target}: θ₀ − α·{vector} ({curve.split} split)",
        xaxis_title="α",
        yaxis=dict(title="accuracy", range=[0, 1], tickformat=".0%", hoverformat=".1%"),
        margin=dict(t=50),
    )
    return readable(fig)


def forgetting_table(stored: Mapping[str, Mapping]) -> list[dict]:
    """Rows of a stored forgetting report for one target: one per method, at its chosen α."""
    rows = []
    for method, entry in stored.items():
        o = entry["outcome"]
        rows.append(
            {
                "method": NEGATIONS[method] if method in NEGATIONS else method,
                "chosen α": fixed(o["alpha"]),
                "target": o["target_accuracy"],
                "pretrained target": o["pretrained_target"],
                "chance": o["chance"],
                "control": o["control_accuracy"],
                "control / pretrained": o["control_accuracy"] / o["pretrained_control"],
                "forgotten": bool(entry["succeeded"]),
            }
        )
    return rows


def stored_forgetting_curve(stored: Mapping) -> ForgettingCurve:
    """A negation curve as forgetting.json stores it (targets → target → method → "curve"), as the engine's object."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()}
    return ForgettingCurve(**fields)
