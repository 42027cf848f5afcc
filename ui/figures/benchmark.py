"""Figures of a benchmark's table: each method's test accuracy per task, and each method's mean beside the
published numbers for the same suite, architecture and checkpoints."""

from __future__ import annotations

import plotly.graph_objects as go

from engine.eval.benchmark import Benchmark
from ui.figures.style import COLOURS, readable

BASELINE_COLOURS = {"zero_shot": COLOURS["zero-shot"], "finetuned": COLOURS["fine-tuned"]}


def benchmark_task_bars(benchmark: Benchmark) -> go.Figure:
    """Test accuracy per task (groups) and method (bars, zero-shot and fine-tuned first), as the table's rows."""
    fig = go.Figure()
    for row in benchmark.rows:
        name = benchmark.names.get(row.method, row.method)
        fig.add_bar(
            x=list(benchmark.tasks),
            y=[row.accuracy[t] for t in benchmark.tasks],
            name=f"{name} · {row.mean_accuracy:.1%}",
            marker_color=BASELINE_COLOURS.get(row.method),
            hovertemplate=f"{name}<br>%{{x}}: %{{y:.1%}}<extra></extra>",
        )
    fig.update_layout(
        title="Test accuracy per task, each method at its setting chosen on val",
        barmode="group",
        xaxis=dict(title="task", tickangle=0 if len(benchmark.tasks) <= 8 else -45),
        yaxis=dict(title="test accuracy", tickformat=".0%", range=[0, 1.05]),
        legend=dict(title="method · mean"),
        height=440,
    )
    return readable(fig)


def benchmark_published_chart(benchmark: Benchmark) -> go.Figure:
    """Each method's mean test accuracy (bars) and, where the pool is comparable, what the papers report for
    the same suite, architecture and checkpoints (a marker per release), so our difference reads off the gap."""
    rows = list(benchmark.rows)
    names = [benchmark.names.get(r.method, r.method) for r in rows]
    fig = go.Figure(
        go.Bar(
            y=names,
            x=[r.mean_accuracy for r in rows],
            orientation="h",
            name="ours",
            marker_color=COLOURS["merged"],
            opacity=0.6,
            hovertemplate="%{y}: %{x:.1%} (ours)<extra></extra>",
        )
    )
    releases = sorted({p.checkpoints for p in benchmark.published.rows})
    for release in releases:
        theirs = {p.method: p.accuracy / 100 for p in benchmark.published.rows if p.checkpoints == release}
        shown = [(n, theirs[r.method]) for n, r in zip(names, rows) if r.method in theirs]
        fig.add_scatter(
            y=[n for n, _ in shown],
            x=[v for _, v in shown],
            mode="markers",
            name=f"published ({release} checkpoints)",
            marker=dict(size=12, symbol="diamond"),
            hovertemplate="%{y}: %{x:.1%} published<extra></extra>",
        )
    title = (
        "Mean test accuracy, ours and published" if releases else f"Mean test accuracy ({benchmark.published.reason})"
    )
    fig.update_layout(
        title=title,
        xaxis=dict(title="mean test accuracy", tickformat=".0%", range=[0, 1.05]),
        yaxis=dict(title="method", autorange="reversed"),
        height=max(320, 40 * len(rows) + 160),
    )
    return readable(fig)
