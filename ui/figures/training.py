"""Figures of training: fine-tuning curves and learned coefficients (aTLAS, DV-BASI)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from engine.jobs.finetune import FinetuneCurves
from engine.jobs.learn import LearnCurves
from engine.runs.log import Run
from ui.figures.style import COLOURS, readable
from ui.formats import fixed_grid


def finetune_curves(curves: FinetuneCurves, *, beta: float | None = None) -> go.Figure:
    """Loss (and β·penalty) per step on the left axis, val accuracy at its evaluation steps on the right."""
    fig = go.Figure(
        go.Scatter(
            name="cross-entropy",
            x=list(curves.step),
            y=list(curves.loss),
            mode="lines",
            line=dict(color=COLOURS["merged"]),
        )
    )
    penalty = [p for p in curves.penalty if p is not None]
    if penalty and beta is not None:
        fig.add_scatter(
            name=f"τJp penalty R (× β = {beta:g} in the loss)",
            x=list(curves.step),
            y=penalty,
            mode="lines",
            line=dict(color="#d95f02"),
        )
    fig.add_scatter(
        name="val accuracy",
        x=list(curves.val_step),
        y=list(curves.val_accuracy),
        mode="lines+markers",
        yaxis="y2",
        line=dict(color=COLOURS["fine-tuned"]),
    )
    fig.update_layout(
        title="Fine-tuning",
        xaxis=dict(title="step"),
        yaxis=dict(title="loss / penalty", rangemode="tozero"),
        yaxis2=dict(
            title="val accuracy", overlaying="y", side="right", range=[0, 1], tickformat=".0%", hoverformat=".1%"
        ),
        legend=dict(orientation="h", y=-0.2),
        margin=dict(t=50, b=40),
    )
    return readable(fig)


def learning_curves(curves: LearnCurves) -> go.Figure:
    """Objective per epoch (aTLAS, then each DV-BASI iteration, end to end) and selection accuracy on a
    second axis; dashed lines mark where a DV-BASI iteration starts."""
    epochs = curves.epochs
    x = list(range(1, len(epochs) + 1))
    fig = go.Figure(
        go.Scatter(
            name="objective (fit part of val)",
            x=x,
            y=[e.loss for e in epochs],
            mode="lines",
            line=dict(color=COLOURS["merged"]),
        )
    )
    fig.add_scatter(
        name="selection accuracy",
        x=x,
        y=[e.selection for e in epochs],
        mode="lines",
        yaxis="y2",
        line=dict(color=COLOURS["fine-tuned"]),
    )
    starts = [i + 1 for i, e in enumerate(epochs) if e.stage == "dv-basi" and e.epoch == 1]
    for i, start in enumerate(starts, start=1):
        fig.add_vline(
            x=start - 0.5,
            line_dash="dash",
            line_color="#9aa5b1",
            annotation_text=f"iteration {i}",
            annotation_position="top left",
        )
    fig.update_layout(
        title="Learning the coefficients",
        xaxis_title="epoch (all stages)",
        yaxis=dict(title="objective", rangemode="tozero"),
        yaxis2=dict(title="selection accuracy", overlaying="y", side="right", tickformat=".0%", hoverformat=".1%"),
        legend=dict(orientation="h", y=-0.2),
        margin=dict(t=50, b=40),
    )
    return readable(fig)


def iteration_accuracy(curves: LearnCurves) -> go.Figure:
    """Per DV-BASI iteration: mean and per-task selection accuracy after the move, and ‖δ‖."""
    its = curves.iterations
    x = [it.iteration for it in its]
    fig = go.Figure()
    tasks = list(its[0].selection) if its else []
    for task in tasks:
        fig.add_scatter(
            name=task,
            x=x,
            y=[it.selection[task] for it in its],
            mode="lines+markers",
            line=dict(width=1),
            opacity=0.6,
        )
    fig.add_scatter(
        name="mean",
        x=x,
        y=[sum(it.selection.values()) / len(it.selection) for it in its],
        mode="lines+markers",
        line=dict(color="black", width=3),
    )
    fig.add_scatter(
        name="‖δ‖",
        x=x,
        y=[it.delta_norm for it in its],
        mode="lines+markers",
        yaxis="y2",
        line=dict(color="#d95f02", dash="dot"),
    )
    fig.update_layout(
        title="DV-BASI iterations: selection accuracy and ‖δ‖",
        xaxis=dict(title="iteration", dtick=1),
        yaxis=dict(title="accuracy", tickformat=".0%", hoverformat=".1%"),
        yaxis2=dict(title="‖δ‖", overlaying="y", side="right", rangemode="tozero"),
        margin=dict(t=50),
    )
    return readable(fig)


def scales_heatmap(curves: LearnCurves, blocks: Sequence[str]) -> go.Figure:
    """Learned λ per block (columns) per DV-BASI iteration (rows); one column when isotropic."""
    its = curves.iterations
    labels = list(blocks) if its and len(its[0].scales) == len(blocks) else ["all (isotropic)"]
    fig = go.Figure(
        go.Heatmap(
            z=[list(it.scales) for it in its],
            x=labels,
            y=[f"iteration {it.iteration}" for it in its],
            colorscale="RdBu",
            zmid=0,
            colorbar=dict(title="λ"),
            customdata=fixed_grid([list(it.scales) for it in its], 3),
            hovertemplate="%{y}, %{x}: λ = %{customdata}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Learned scale λ of δ per block (θ ← θ + λ·δ)",
        xaxis=dict(title="parameter block", showticklabels=len(labels) <= 60),
        yaxis_title="DV-BASI iteration",
        margin=dict(t=50),
    )
    return readable(fig)


def learned_runs_overlay(runs: Sequence[Run]) -> go.Figure:
    """Selection accuracy per epoch of several logged aTLAS / DV-BASI runs, on one chart."""
    fig = go.Figure()
    for run in runs:
        epochs = LearnCurves.from_json(run.outputs.get("curves", {})).epochs
        fig.add_scatter(
            name=f"#{run.id} {run.outputs.get('point', '')}",
            x=list(range(1, len(epochs) + 1)),
            y=[e.selection for e in epochs],
            mode="lines",
        )
    fig.update_layout(
        title="Logged runs: selection accuracy per epoch",
        xaxis_title="epoch (all stages)",
        yaxis=dict(title="selection accuracy", tickformat=".0%", hoverformat=".1%"),
        margin=dict(t=50),
    )
    return readable(fig)


def learned_table(learned: Mapping[str, Mapping]) -> list[dict]:
    """report.json's "learned": test mean accuracy of every learned-coefficient method, per objective."""
    rows = [
        {
            "method": f"task arithmetic (λ = {learned['task_arithmetic']['lambda']:g})",
            "supervised": learned["task_arithmetic"]["test_mean"],
            "unsupervised": learned["task_arithmetic"]["test_mean"],
        }
    ]
    names = {
        "atlas": "aTLAS",
        "dv_basi": "aTLAS + DV-BASI",
        "isotropic": "aTLAS + DV-BASI, isotropic",
        "random_direction": "aTLAS + random-direction control",
        "dv_basi_from_task_arithmetic": "TA + DV-BASI",
    }
    for key, label in names.items():
        rows.append({"method": label, **{o: learned[o][key]["test_mean"] for o in ("supervised", "unsupervised")}})
    if "dv_basi_from_tau_jp" in learned["supervised"]:  # zoos built with the τJp-regularised variant
        start = learned["supervised"]["dv_basi_from_tau_jp"]["start"]
        rows.append(
            {
                "method": f"τJp task arithmetic (λ = {start['lambda']:g}, linearized)",
                "supervised": start["test_mean"],
                "unsupervised": start["test_mean"],
            }
        )
        rows.append(
            {
                "method": "τJp TA + DV-BASI",
                **{o: learned[o]["dv_basi_from_tau_jp"]["test_mean"] for o in ("supervised", "unsupervised")},
            }
        )
    return rows


def learned_bars(rows: Sequence[Mapping], *, objective: str) -> go.Figure:
    """`learned_table` rows as bars: test mean accuracy of every learned-coefficient method for one objective."""
    fig = go.Figure(
        go.Bar(
            x=[r[objective] for r in rows],
            y=[r["method"] for r in rows],
            orientation="h",
            marker_color=COLOURS["merged"],
            text=[f"{r[objective]:.1%}" for r in rows],
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Learned coefficients, {objective} objective: test mean accuracy",
        xaxis=dict(title="mean accuracy (test)", range=[0, 1], tickformat=".0%", hoverformat=".1%"),
        yaxis=dict(title="method", autorange="reversed"),
        margin=dict(t=50),
    )
    return readable(fig)
