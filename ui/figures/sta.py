"""Figures of STA importance maps: per-entry histograms, mask overlap, kept share per layer."""

from __future__ import annotations

import plotly.graph_objects as go

from engine.params import network_order
from engine.sta.stats import ImportanceSummary
from ui.figures.style import colour_bar_on_top, layers_height, readable
from ui.formats import fixed_grid


def importance_histograms(summary: ImportanceSummary) -> go.Figure:
    """Share of entries per importance code, one line per task, on a log10 axis; κ marked."""
    values = summary.code_values[1:].tolist()  # code 0 (below 10⁻⁶) is reported in the legend
    shares = (summary.histogram / summary.histogram.sum(dim=1, keepdim=True).clamp(min=1)).tolist()
    fig = go.Figure(
        [
            go.Scatter(
                x=values,
                y=share[1:],
                mode="lines",
                name=f"{task} ({share[0]:.1%} < 1e-6)",
                hovertemplate="importance %{x:.2g}: %{y:.2%}<extra>" + task + "</extra>",
            )
            for task, share in zip(summary.tasks, shares)
        ]
    )
    if summary.threshold > 0:
        fig.add_vline(x=summary.threshold, line_dash="dash", annotation_text=f"κ = {summary.threshold:g}")
    fig.update_layout(
        title="Importance per entry, normalised per tensor",
        xaxis=dict(type="log", title="importance"),
        yaxis=dict(title="share of entries", tickformat=".1%"),
        margin=dict(t=50),
    )
    return readable(fig)


def mask_overlap_heatmap(summary: ImportanceSummary) -> go.Figure:
    """Jaccard overlap [K, K] of the entries each task keeps at κ."""
    values = summary.overlap.tolist()
    names = list(summary.tasks)
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=names,
            y=names,
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            colorbar=dict(title="Jaccard"),
            text=fixed_grid(values),
            texttemplate="%{text}",
            hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Mask overlap between tasks at κ = {summary.threshold:g} (Jaccard)",
        xaxis_title="task",
        yaxis=dict(title="task", autorange="reversed"),
        margin=dict(t=50),
    )
    return readable(fig)


def layer_importance_heatmap(summary: ImportanceSummary) -> go.Figure:
    """Layers (rows, network order) × tasks: the share of each layer's entries with importance ≥ κ."""
    order = network_order(summary.layers)
    fig = go.Figure(
        go.Heatmap(
            z=summary.kept_per_layer[:, order].T.tolist(),  # [layers, K]
            y=[summary.layers[i] for i in order],
            x=list(summary.tasks),
            zmin=0,
            zmax=1,
            colorscale="Blues",
            colorbar=colour_bar_on_top("kept", tickformat=".0%"),  # the layer names take half the width
            hovertemplate="%{x} · %{y}: %{z:.1%} kept<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Share of each layer kept at κ = {summary.threshold:g}",
        xaxis=dict(title="task", tickangle=-90),  # upright: plotly's slanted names touch in a half-width column
        yaxis=dict(title="layer (network order)", autorange="reversed"),
        height=layers_height(len(order)) + 60,  # and the colour bar's strip
        margin=dict(t=50),
    )
    return readable(fig)
