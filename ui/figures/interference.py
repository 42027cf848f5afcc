"""Figures of τJp interference (Interference page, Tour step 4) and the fine-tuning variants it compares."""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go
import torch

from engine.merge.spectra import rank_correlation
from engine.params import network_order
from engine.taujp.matrix import TauJpMatrix
from ui.figures.style import colour_bar_on_top, layers_height, readable
from ui.formats import fixed, short_number


def taujp_heatmap(matrix: TauJpMatrix, *, title: str | None = None, zmax: float | None = None) -> go.Figure:
    """Off-diagonal τJp[a, b] (interference); the diagonal (each task's own signal) is left blank here.

    A transparent marker sits on every off-diagonal cell, so a click selects it (Streamlit's plotly
    selections report scatter points, not heatmap cells): `clicked_cell` reads the pair back."""
    values = matrix.values.tolist()
    z = [[None if a == b else v for b, v in zip(matrix.tasks, row)] for a, row in zip(matrix.vectors, values)]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(matrix.tasks),
            y=list(matrix.vectors),
            colorscale="Reds",
            colorbar=dict(title="τJp"),
            zmin=0,
            zmax=zmax,
            text=[["" if v is None else fixed(v) for v in row] for row in z],
            texttemplate="%{text}",
            hoverinfo="skip",
        )
    )
    cells = [(a, b, v) for a, row in zip(matrix.vectors, z) for b, v in zip(matrix.tasks, row) if v is not None]
    fig.add_scatter(
        x=[b for _, b, _ in cells],
        y=[a for a, _, _ in cells],
        mode="markers",
        name="cells",
        marker=dict(size=28, symbol="square", opacity=0),
        customdata=[v for *_, v in cells],
        hovertemplate="τ_%{y} on %{x} inputs: %{customdata:.3f}<extra>click for layers</extra>",
        showlegend=False,
    )
    fig.update_layout(
        title=title
        or f"τJp: ‖J f(x; θ₀)·τ_a‖ on task b's inputs ({matrix.split}, "
        f"{min(matrix.images)}–{max(matrix.images)} images per task)",
        xaxis=dict(title="inputs of task b", tickangle=-90),  # upright: slanted names overlap in narrow columns
        yaxis=dict(title="task vector a", autorange="reversed"),
        margin=dict(t=50),
    )
    return readable(fig)


def clicked_cell(selection: Mapping | None) -> tuple[str, str] | None:
    """(task vector a, inputs of task b) of the first selected heatmap cell, from st.plotly_chart's selection."""
    points = ((selection or {}).get("selection") or {}).get("points") or []
    cell = next((p for p in points if "x" in p and "y" in p), None)
    return None if cell is None else (str(cell["y"]), str(cell["x"]))


def taujp_variant_heatmaps(matrices: Mapping[str, TauJpMatrix]) -> list[go.Figure]:
    """One compact heatmap per variant on a shared colour scale (each with its colour bar: the Tour shows
    one at a time), titled with its mean off-diagonal τJp: small multiples, so the numbers are in the hover,
    not in the cells."""
    zmax = max(float(_off_diagonal(m).max()) for m in matrices.values())
    figures = []
    for name, m in matrices.items():
        fig = taujp_heatmap(m, title=f"{name}: mean off-diagonal {float(_off_diagonal(m).mean()):.3g}", zmax=zmax)
        fig.update_traces(texttemplate=None, colorbar=colour_bar_on_top("τJp"), selector=dict(type="heatmap"))
        fig.update_layout(height=420, margin=dict(t=40, l=10, r=10, b=10))  # cells under the bar strip
        figures.append(fig)
    return figures


def _off_diagonal(matrix: TauJpMatrix) -> torch.Tensor:
    keep = ~torch.eye(*matrix.values.shape, dtype=torch.bool)
    return matrix.values[keep]  # [A·B − min(A, B)]


def taujp_diagonal_bars(matrix: TauJpMatrix) -> go.Figure:
    """τJp[t, t]: how far each task's own vector moves its own inputs (the signal, not interference)."""
    shared = [t for t in matrix.vectors if t in matrix.tasks]
    values = [matrix.values[matrix.vectors.index(t), matrix.tasks.index(t)].item() for t in shared]
    fig = go.Figure(go.Bar(x=shared, y=values, marker_color="#2f6fdb", hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(
        title="Diagonal: each task's vector on its own inputs", xaxis_title="task", yaxis_title="τJp", margin=dict(t=50)
    )
    return readable(fig)


def interference_scatter(
    matrix: TauJpMatrix, drops: Mapping[tuple[str, str], float], *, lam: float, source: str = ""
) -> go.Figure:
    """Off-diagonal τJp[a, b] against the accuracy task b loses when τ_a is added (drop_b(a)), with their
    Spearman rank correlation in the title: near 1, the pairs τJp ranks higher lose more accuracy. `source`
    says how the drops were obtained (e.g. "first order, interactive split")."""
    pairs = [(a, b) for a in matrix.vectors for b in matrix.tasks if a != b and (a, b) in drops]
    x = [matrix.values[matrix.vectors.index(a), matrix.tasks.index(b)].item() for a, b in pairs]
    rho = rank_correlation(torch.tensor(x), torch.tensor([drops[p] for p in pairs])) if len(pairs) > 1 else None
    fig = go.Figure(
        go.Scatter(
            x=x,
            y=[drops[p] for p in pairs],
            mode="markers",
            text=[f"τ_{a} → {b}" for a, b in pairs],
            hovertemplate="%{text}<br>τJp %{x:.3f}<br>drop %{y:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Interference: τJp against the accuracy drop at λ = {short_number(lam)}"
        + (f", {source}" if source else "")
        + ("" if rho is None else f" (Spearman ρ = {fixed(rho)})"),
        xaxis_title="τJp[a, b]",
        yaxis=dict(title="drop_b(a) = acc_b(λτ_b) − acc_b(λ(τ_a + τ_b))", tickformat=".0%", hoverformat=".1%"),
        margin=dict(t=50),
    )
    return readable(fig)


def layer_bars(parts: Mapping[str, float], *, vector: str, task: str) -> go.Figure:
    """τJp of one vector on one task's inputs, restricted to each layer block in turn (network order from the
    top; horizontal bars, so block names read level)."""
    names = list(parts)
    names = [names[i] for i in network_order(names)]
    fig = go.Figure(
        go.Bar(
            y=names,
            x=[parts[n] for n in names],
            orientation="h",
            marker_color="#d95f02",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"τ_{vector} on {task} inputs, per layer",
        yaxis=dict(title="layer block (network order)", autorange="reversed"),
        xaxis_title="τJp of the block's part",
        height=layers_height(len(names)),
        margin=dict(t=50),
    )
    return readable(fig)


def variants_table(variants: Mapping[str, Mapping]) -> list[dict]:
    """One row per fine-tuning variant of report.json's "variants": what the τJp paper compares."""
    return [
        {
            "variant": name,
            "fine-tuned": v["averages"]["finetuned_test"],
            "merge at best λ": v["averages"]["ta_best_test"],
            "best λ (val)": v["task_arithmetic"]["best_lambda"],
            "merge at λ = 1": v["averages"]["ta_one_test"],
            "mean off-diagonal τJp": v["taujp"]["mean_off_diagonal"],
        }
        for name, v in variants.items()
    ]


def variant_curves(variants: Mapping[str, Mapping]) -> go.Figure:
    """Mean val accuracy of the all-task merge θ₀ + λΣτ against λ, one line per fine-tuning variant."""
    fig = go.Figure()
    for name, v in variants.items():
        curve = v["task_arithmetic"]["val_curve"]
        fig.add_scatter(
            name=name,
            x=[c["lam"] for c in curve],
            y=[c["mean_accuracy"] for c in curve],
            mode="lines+markers",
            hovertemplate=name + " λ=%{x}: %{y:.1%}<extra></extra>",
        )
    fig.update_layout(
        title="Merging every task: mean accuracy on val against λ (λ is chosen on val)",
        xaxis_title="λ",
        yaxis=dict(title="mean accuracy (val)", tickformat=".0%", hoverformat=".1%"),
        margin=dict(t=50),
    )
    return readable(fig)
