"""Figures of task vectors in subspaces: spectra (of each task, and of a merged update before and after a
pipeline), top-1/K energy, alignment, τJp agreement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
import torch

from engine.merge.spectra import MeasureAgreement, SubspaceStats
from engine.params import network_order
from ui.figures.style import colour_bar_on_top, layers_height, readable
from ui.formats import fixed, fixed_grid


def spectrum_chart(stats: SubspaceStats, layer: str) -> go.Figure:
    """Singular values of each task's matrix of one layer, log scale, with the ⌊p/K⌋ cut TSV-M keeps."""
    i = stats.layers.index(layer)
    spectra = stats.spectra[i]  # [K, p]
    fig = go.Figure(
        [
            go.Scatter(x=list(range(1, spectra.shape[1] + 1)), y=spectra[k].tolist(), name=task, mode="lines")
            for k, task in enumerate(stats.tasks)
        ]
    )
    cut = max(1, stats.full_rank[i] // len(stats.tasks))
    fig.add_vline(x=cut + 0.5, line_dash="dash", line_color="#9aa5b1", annotation_text=f"top {cut} (1/K)")
    fig.update_layout(
        title=f"Singular values of each task matrix: {layer}",
        xaxis_title="index",
        yaxis=dict(title="singular value", type="log"),
        margin=dict(t=50),
    )
    return readable(fig)


def pipeline_spectrum_chart(spectra: Mapping[str, torch.Tensor], layer: str) -> go.Figure:
    """Singular values of the merged update of one layer, before and after a pipeline's calibrators (one line per
    merge, by its shown name), log scale: SVC reshapes the spectrum, LiNeS shifts it. Values below 1e-6 of the
    largest are numerical zeros (a low-rank merge such as TSV-M's) and are left out, not drawn decades down."""
    floor = 1e-6 * max(float(v.max()) for v in spectra.values())
    fig = go.Figure(
        [
            go.Scatter(x=list(range(1, int((v > floor).sum()) + 1)), y=v[v > floor].tolist(), name=name, mode="lines")
            for name, v in spectra.items()
        ]
    )
    fig.update_layout(
        title=f"Singular values of the merged update Δ = θ − θ₀: {layer}",
        xaxis_title="index",
        yaxis=dict(title="singular value", type="log"),
        margin=dict(t=50),
        legend=dict(orientation="h", y=-0.2),
    )
    return readable(fig)


def top_share_heatmap(stats: SubspaceStats) -> go.Figure:
    """Per layer (rows, network order) and task: the energy share of its top ⌊p/K⌋ directions."""
    order = network_order(stats.layers)
    fig = go.Figure(
        go.Heatmap(
            z=stats.top_share[order].tolist(),
            x=list(stats.tasks),
            y=[stats.layers[i] for i in order],
            zmin=0,
            zmax=1,
            colorscale="Blues",
            colorbar=colour_bar_on_top("energy share", tickformat=".0%"),  # the layer names take half the width
            hovertemplate="%{y} · %{x}: %{z:.0%} of the energy in the top 1/K<extra></extra>",
        )
    )
    fig.update_layout(
        title="Energy share of each task matrix's top 1/K directions",
        # upright task names: the layer names take half the width, and plotly's slanted labels then overlap
        xaxis=dict(title="task", tickangle=-90),
        yaxis=dict(title="layer (network order)", autorange="reversed"),
        height=layers_height(len(stats.layers)) + 60,  # and the colour bar's strip
        margin=dict(t=50),
    )
    return readable(fig)


def alignment_heatmap(values: torch.Tensor, tasks: Sequence[str], *, title: str) -> go.Figure:
    """Top-k subspace alignment [K, K] of the tasks (1: the same directions, 0: orthogonal)."""
    fig = go.Figure(
        go.Heatmap(
            z=values.tolist(),
            x=list(tasks),
            y=list(tasks),
            zmin=0,
            zmax=max(1.0, float(values.max())),  # 1 up to rounding: ‖UᵀU‖² / k can land at 1 + 1e-7
            colorscale="Purples",
            colorbar=dict(title="alignment"),
            text=fixed_grid(values.tolist()),
            texttemplate="%{text}",
            hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        xaxis=dict(title="task", tickangle=-90),  # upright: in a half-width column slanted names overlap
        yaxis=dict(title="task", autorange="reversed"),
        margin=dict(t=50),
    )
    return readable(fig)


def agreement_scatter(agreement: MeasureAgreement) -> go.Figure:
    """τJp[a, b] against the subspace alignment of a and b, one point per ordered pair, ρ in the title."""
    fig = go.Figure(
        go.Scatter(
            x=list(agreement.alignment),
            y=list(agreement.taujp),
            mode="markers",
            text=[f"τ_{a} on {b}" for a, b in agreement.pairs],
            hovertemplate="%{text}: alignment %{x:.3f}, τJp %{y:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"τJp against subspace alignment (Spearman ρ = {fixed(agreement.rho)})",
        xaxis_title="top-k subspace alignment",
        yaxis_title="τJp",
        margin=dict(t=50),
    )
    return readable(fig)
