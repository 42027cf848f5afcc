"""Plotly figure builders: engine result objects in, go.Figure out. No Streamlit, no maths beyond layout."""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
import torch

from engine.analysis import SparsityReport
from engine.forgetting import CONTROL_FLOOR, ForgettingCurve
from engine.runs import Run
from engine.workspace import MergeComparison, Sweep

COLOURS = {"zero-shot": "#9aa5b1", "merged": "#2f6fdb", "fine-tuned": "#1b9e77"}


def accuracy_bars(comparison: MergeComparison) -> go.Figure:
    """Grouped bars per task: zero-shot, merged and fine-tuned accuracy on the same split."""
    tasks = list(comparison.tasks)
    series = {"zero-shot": comparison.zero_shot, "merged": comparison.merged.accuracy,
              "fine-tuned": comparison.finetuned}
    fig = go.Figure([go.Bar(name=name, x=tasks, y=[values[t] for t in tasks], marker_color=COLOURS[name],
                            hovertemplate="%{x}: %{y:.1%}<extra>" + name + "</extra>")
                     for name, values in series.items()])
    fig.update_layout(barmode="group", title=f"Merged: mean accuracy {comparison.mean_merged:.1%} "
                                             f"({comparison.split} split)",
                      yaxis=dict(title="accuracy", range=[0, 1], tickformat=".0%"),
                      legend=dict(orientation="h", y=-0.15), margin=dict(t=50, b=40))
    return fig


def sweep_chart(sweep: Sweep) -> go.Figure:
    """Mean and per-task accuracy against the swept parameter, best value marked."""
    x = list(sweep.values)
    fig = go.Figure([go.Scatter(x=x, y=list(acc), name=task, mode="lines", line=dict(width=1), opacity=0.6)
                     for task, acc in sweep.per_task.items()])
    fig.add_trace(go.Scatter(x=x, y=list(sweep.mean_accuracy), name="mean", mode="lines+markers",
                             line=dict(width=3, color="black")))
    fig.add_vline(x=sweep.best_value, line_dash="dash", annotation_text=f"best {sweep.param} = {sweep.best_value:g}")
    fig.update_layout(title=f"Accuracy over {sweep.param} ({sweep.split} split)", xaxis_title=sweep.param,
                      yaxis=dict(title="accuracy", range=[0, 1], tickformat=".0%"), margin=dict(t=50))
    return fig


def similarity_heatmap(similarity: torch.Tensor, names: Sequence[str]) -> go.Figure:
    """Cosine similarity of task vectors [K, K] as a diverging heatmap centred on 0."""
    values = similarity.tolist()
    fig = go.Figure(go.Heatmap(z=values, x=list(names), y=list(names), zmin=-1, zmax=1, colorscale="RdBu",
                               reversescale=True, text=[[f"{v:.2f}" for v in row] for row in values],
                               texttemplate="%{text}", hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title="Cosine similarity of task vectors", yaxis=dict(autorange="reversed"),
                      margin=dict(t=50))
    return fig


def runs_comparison(runs: Sequence[Run]) -> go.Figure:
    """Per-task accuracy of 2-4 logged runs side by side (tasks a run did not cover are left out)."""
    tasks = list(dict.fromkeys(t for run in runs for t in run.outputs.get("accuracy") or {}))
    fig = go.Figure([go.Bar(name=f"#{run.id} {run.kind} ({run.method or '-'})", x=tasks,
                            y=[(run.outputs.get("accuracy") or {}).get(t) for t in tasks])
                     for run in runs])
    fig.update_layout(barmode="group", title="Per-task accuracy of the selected runs",
                      yaxis=dict(title="accuracy", range=[0, 1], tickformat=".0%"),
                      legend=dict(orientation="h", y=-0.15), margin=dict(t=50, b=40))
    return fig


def sign_conflict_bars(report: SparsityReport) -> go.Figure:
    """Per layer: the share of entries where the (masked) task vectors disagree in sign."""
    fig = go.Figure(go.Bar(x=list(report.layers), y=list(report.sign_conflict), marker_color="#d95f02",
                           hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
    fig.update_layout(title="Sign conflicts between tasks, per layer", yaxis=dict(tickformat=".0%", title="share"),
                      xaxis=dict(tickangle=-45), margin=dict(t=50, b=120))
    return fig


def forgetting_chart(curve: ForgettingCurve, *, alpha: float | None = None) -> go.Figure:
    """Target and control accuracy over α, the control floor, the chosen α (and the slider's α)."""
    x = list(curve.alphas)
    fig = go.Figure([go.Scatter(x=x, y=list(curve.target_accuracy), name=f"target: {curve.target}",
                                mode="lines+markers", line=dict(color="#d62728")),
                     go.Scatter(x=x, y=list(curve.control_accuracy), name="control (mean of the others)",
                                mode="lines+markers", line=dict(color="#1f77b4"))])
    fig.add_hline(y=CONTROL_FLOOR * curve.pretrained_control, line_dash="dot", line_color="#1f77b4",
                  annotation_text="95% of pretrained control")
    fig.add_vline(x=curve.chosen_alpha, line_dash="dash", annotation_text=f"chosen α = {curve.chosen_alpha:g}")
    if alpha is not None:
        fig.add_vline(x=alpha, line_color="grey", opacity=0.5)
    fig.update_layout(title=f"Forgetting {curve.target}: θ₀ − α·τ ({curve.split} split)", xaxis_title="α",
                      yaxis=dict(title="accuracy", range=[0, 1], tickformat=".0%"), margin=dict(t=50))
    return fig
