"""Figures of the Jobs & runs and Sweeps pages: logged runs, a job's live curve, sweep trials."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from engine.jobs.finetune import FinetuneCurves
from engine.jobs.learn import LearnCurves
from engine.runs.log import Run
from engine.search.logged import Coordinates, ObjectivePlane
from ui.figures.merge import parts_loss_curve, sweep_chart
from ui.figures.style import COLOURS, readable
from ui.figures.training import finetune_curves, learning_curves


def runs_comparison(runs: Sequence[Run]) -> go.Figure:
    """Per-task accuracy of 2-4 logged runs side by side (tasks a run did not cover are left out)."""
    tasks = list(dict.fromkeys(t for run in runs for t in run.outputs.get("accuracy") or {}))
    fig = go.Figure(
        [
            go.Bar(
                name=f"#{run.id} {run.kind} ({run.method or '-'})",
                x=tasks,
                y=[(run.outputs.get("accuracy") or {}).get(t) for t in tasks],
            )
            for run in runs
        ]
    )
    fig.update_layout(
        barmode="group",
        title="Per-task accuracy of the selected runs",
        xaxis_title="task",
        yaxis=dict(title="accuracy", range=[0, 1], tickformat=".0%", hoverformat=".1%"),
        legend=dict(orientation="h", y=-0.15),
        margin=dict(t=50, b=40),
    )
    return readable(fig)


def job_curve(kind: str, metrics: Mapping, *, name: str = "") -> go.Figure | None:
    """A background job's live curve from the progress metrics the jobs table keeps, drawn by the figure its
    own page uses (None for a kind without a curve, or before its first point): fine-tune loss and val
    accuracy, aTLAS / DV-BASI epochs, an iterative merge's loss, a sweep's accuracy over λ."""
    from engine.jobs.sweep import sweep_from_metrics

    if kind == "finetune":
        curves = FinetuneCurves.from_json(metrics)
        return finetune_curves(curves) if curves.step else None
    if kind == "learn":
        learned = LearnCurves.from_json(metrics)
        return learning_curves(learned) if learned.epochs else None
    if kind == "merge_parts":
        return parts_loss_curve(metrics["loss"], method=name) if metrics.get("loss") else None
    if kind == "sweep":
        sweep = sweep_from_metrics(metrics)
        return sweep_chart(sweep) if sweep is not None else None
    return None


def objective_plane_chart(plane: ObjectivePlane) -> go.Figure:
    """Every trial of a sweep on two objectives (accuracy of a task, the mean or the worst task), its Pareto
    front joined and its best trial (by mean normalized accuracy on val) marked."""
    label = lambda name: f"{name} accuracy" if name not in ("mean", "worst") else f"{name} task accuracy"
    text = [f"trial {i}" for i in plane.indices]
    fig = go.Figure(
        go.Scatter(
            x=list(plane.xs), y=list(plane.ys), mode="markers", name="trials", text=text, marker=dict(color="#9aa5b1")
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[plane.xs[i] for i in plane.front],
            y=[plane.ys[i] for i in plane.front],
            text=[text[i] for i in plane.front],
            mode="lines+markers",
            name="Pareto front",
            line=dict(color=COLOURS["merged"]),
        )
    )
    if plane.best is not None:
        fig.add_trace(
            go.Scatter(
                x=[plane.xs[plane.best]],
                y=[plane.ys[plane.best]],
                text=[text[plane.best]],
                mode="markers",
                name="best (mean normalized, val)",
                marker=dict(symbol="star", size=16, color=COLOURS["fine-tuned"]),
            )
        )
    fig.update_layout(
        title=f"Every trial: {label(plane.x)} against {label(plane.y)}",
        xaxis=dict(title=label(plane.x), tickformat=".0%"),
        yaxis=dict(title=label(plane.y), tickformat=".0%"),
        margin=dict(t=30),
    )
    return readable(fig)


def coordinates_chart(coords: Coordinates) -> go.Figure:
    """Parallel coordinates of every trial's varied parameters (per-task λ), coloured by mean normalized
    accuracy."""
    dimensions = [dict(label=name, values=list(column)) for name, column in zip(coords.names, coords.columns)]
    dimensions.append(dict(label="mean normalized", values=list(coords.score)))
    line = dict(color=list(coords.score), colorscale="Viridis", showscale=True, colorbar=dict(title="normalized"))
    fig = go.Figure(go.Parcoords(dimensions=dimensions, line=line))
    return fig.update_layout(title="Every trial's settings, coloured by its score", margin=dict(t=90, l=60, r=60))
