"""Figures of the Merge page: accuracy bars, the λ sweep, sign conflicts, an iterative merge's loss."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from engine.eval.results import MergeComparison, Sweep
from engine.merge.analysis import SparsityReport
from engine.params import network_order
from ui.figures.style import COLOURS, TOP_LEGEND, layers_height, readable

BARS_HEIGHT = 400  # with the metrics above, the bars and their legend fit a 1440×900 window


def accuracy_bars(comparison: MergeComparison, *, preview: Mapping[str, float] | None = None) -> go.Figure:
    """Grouped bars per task: zero-shot, (tangent preview,) merged and fine-tuned accuracy on the same split."""
    tasks = list(comparison.tasks)
    series = {
        "zero-shot": comparison.zero_shot,
        **({"tangent preview": preview} if preview else {}),
        "merged": comparison.merged.accuracy,
        "fine-tuned": comparison.finetuned,
    }
    fig = go.Figure(
        [
            go.Bar(
                name=name,
                x=tasks,
                y=[values[t] for t in tasks],
                marker_color=COLOURS[name],
                hovertemplate="%{x}: %{y:.1%}<extra>" + name + "</extra>",
            )
            for name, values in series.items()
        ]
    )
    fig.update_layout(
        barmode="group",
        title=f"Merged: mean accuracy {comparison.mean_merged:.1%} ({comparison.split} split)",
        xaxis_title="task",
        yaxis=dict(title="accuracy", range=[0, 1], tickformat=".0%", hoverformat=".1%"),
        legend=TOP_LEGEND,
        height=BARS_HEIGHT,
        margin=dict(t=80, b=40),
    )
    return readable(fig)


def preview_bars(preview: Mapping[str, float]) -> go.Figure:
    """The tangent-space preview alone: shown at once while the exact evaluation runs."""
    mean = sum(preview.values()) / len(preview)
    fig = go.Figure(
        go.Bar(
            name="tangent preview",
            x=list(preview),
            y=list(preview.values()),
            marker_color=COLOURS["tangent preview"],
            hovertemplate="%{x}: %{y:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Tangent-space preview: mean accuracy {mean:.1%} (exact evaluation follows)",
        xaxis_title="task",
        height=BARS_HEIGHT,
        yaxis=dict(title="accuracy", range=[0, 1], tickformat=".0%", hoverformat=".1%"),
        margin=dict(t=50, b=40),
    )
    return readable(fig)


def sweep_chart(sweep: Sweep, *, current: float | None = None) -> go.Figure:
    """Mean and per-task accuracy against the swept parameter, the best value marked (dashed) and the
    slider's `current` value (solid: "you are here")."""
    x = list(sweep.values)
    fig = go.Figure(
        [
            go.Scatter(x=x, y=list(acc), name=task, mode="lines", line=dict(width=1), opacity=0.6)
            for task, acc in sweep.per_task.items()
        ]
    )
    fig.add_trace(
        go.Scatter(
            x=x, y=list(sweep.mean_accuracy), name="mean", mode="lines+markers", line=dict(width=3, color="black")
        )
    )
    fig.add_vline(x=sweep.best_value, line_dash="dash", annotation_text=f"best {sweep.param} = {sweep.best_value:g}")
    if current is not None:
        fig.add_vline(
            x=current,
            line_color=COLOURS["merged"],
            annotation_text=f"now {current:g}",
            annotation_position="bottom right",
        )
    fig.update_layout(
        title=f"Accuracy over {sweep.param} ({sweep.split} split)",
        xaxis_title=sweep.param,
        yaxis=dict(title="accuracy", range=[0, 1], tickformat=".0%", hoverformat=".1%"),
        margin=dict(t=50),
    )
    return readable(fig)


def sign_conflict_bars(report: SparsityReport) -> go.Figure:
    """Per layer, in network order from the top: the share of entries where the (masked) task vectors disagree
    in sign. Horizontal bars: layer names read level, at any length."""
    order = network_order(report.layers)
    fig = go.Figure(
        go.Bar(
            y=[report.layers[i] for i in order],
            x=[report.sign_conflict[i] for i in order],
            orientation="h",
            marker_color="#d95f02",
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Sign conflicts between tasks, per layer",
        xaxis=dict(tickformat=".0%", hoverformat=".1%", title="share of kept entries with conflicting signs"),
        yaxis=dict(title="layer (network order)", autorange="reversed"),
        height=layers_height(len(order)),
        margin=dict(t=50),
    )
    return readable(fig)


def parts_loss_curve(losses: Sequence[float], *, method: str) -> go.Figure:
    """An iterative merge's loss after each step, as a share of the loss at its start (WUDI: the summed
    per-layer interference Σₜ ‖(τ_m − τₜ) τₜᵀ‖² / ‖τₜ‖²)."""
    start = losses[0] if losses and losses[0] else 1.0
    fig = go.Figure(
        go.Scatter(
            x=list(range(1, len(losses) + 1)),
            y=[v / start for v in losses],
            mode="lines",
            line=dict(color=COLOURS["merged"]),
        )
    )
    fig.update_layout(
        title=f"{method}: interference loss per step",
        xaxis=dict(title="step"),
        yaxis=dict(title="loss / loss after step 1", rangemode="tozero"),
        margin=dict(t=50, b=40),
    )
    return readable(fig)
