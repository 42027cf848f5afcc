"""Figures comparing methods and settings: every method at its best, the two-task λ landscape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from engine.jobs.compare import MethodsComparison
from engine.jobs.landscape import Landscape
from engine.jobs.plane import FINE_TUNED_NAME, StoragePlane
from engine.merge.pipeline import pipeline_display
from ui.figures.style import COLOURS, readable


def methods_chart(comparison: MethodsComparison) -> go.Figure:
    """Every method at its best val setting: mean normalized accuracy on test (bars) and each task's test
    accuracy (points), methods ordered by the bars from the top. Horizontal, so method names read level; each
    bar's value is written after its name, where no per-task point can cover it."""
    results = sorted(comparison.results, key=lambda r: r.test_mean_normalized, reverse=True)
    names = [pipeline_display(r.method) for r in results]
    fig = go.Figure(
        go.Bar(
            y=names,
            x=[r.test_mean_normalized for r in results],
            orientation="h",
            name="mean normalized accuracy",
            marker_color=COLOURS["merged"],
            opacity=0.55,
            hovertemplate="%{y}: %{x:.1%} normalized<extra></extra>",
        )
    )
    for task in comparison.tasks:
        fig.add_scatter(
            y=names, x=[r.test_accuracy[task] for r in results], mode="markers", name=task, marker=dict(size=8)
        )
    fig.update_layout(
        title="Every method at its best val setting, on test",
        xaxis=dict(
            title="accuracy (points: per task) · normalized (bars)",
            tickformat=".0%",
            hoverformat=".1%",
            range=[0, max(1.1, *(r.test_mean_normalized + 0.05 for r in results))],
        ),
        yaxis=dict(
            title="method (mean normalized accuracy)",
            autorange="reversed",
            tickmode="array",
            tickvals=names,
            ticktext=[f"{n} · {r.test_mean_normalized:.1%}" for n, r in zip(names, results)],
        ),
        height=max(360, 34 * len(names) + 160),
        margin=dict(t=50),
    )
    return readable(fig)


def landscape_heatmap(landscape: Landscape, *, preview: bool = False) -> go.Figure:
    """Mean normalized accuracy of the two-task merge over the λ₁ × λ₂ grid (exact, or the tangent preview),
    on one colour scale from 0 to 100% (or to the best cell of either grid, if above) so the two read alike; a
    star marks the best point. Transparent markers on every cell make a click selectable (`clicked_lambdas`
    reads it back)."""
    grid = landscape.preview if preview else landscape.exact
    cells = [v for g in (landscape.exact, landscape.preview) for row in g for v in row if v is not None]
    top = max(1.0, *cells)  # normalized accuracy passes 100% where the merge beats the fine-tuned models
    a, b = landscape.tasks
    values = list(landscape.values)
    fig = go.Figure(
        go.Heatmap(
            z=[list(row) for row in grid],
            x=values,
            y=values,
            zmin=0,
            zmax=top,
            colorscale="Viridis",
            colorbar=dict(title="normalized", tickformat=".0%"),
            hoverinfo="skip",
        )
    )
    _add_click_targets(fig, values, grid, tasks=(a, b))
    best = landscape.best(preview=preview)
    if best is not None:
        fig.add_scatter(
            x=[best[1]],
            y=[best[0]],
            mode="markers",
            marker=dict(symbol="star", size=16, color="white", line=dict(color="black", width=1)),
            name=f"best: {best[2]:.1%}",
            hoverinfo="skip",
        )
    kind = "tangent-space preview" if preview else "exact evaluation"
    fig.update_layout(
        title=f"{kind} ({landscape.split})",
        xaxis_title=f"λ {b}",
        yaxis_title=f"λ {a}",
        legend=dict(orientation="h", y=-0.25),
        margin=dict(t=50),
    )
    return readable(fig)


def _add_click_targets(
    fig: go.Figure, values: list[float], grid: Sequence[Sequence[float | None]], *, tasks: tuple[str, str]
) -> None:
    """A transparent square marker on every evaluated cell: a heatmap cell is not selectable, a marker is."""
    a, b = tasks
    cells = [(x, y, v) for y, row in zip(values, grid) for x, v in zip(values, row) if v is not None]
    fig.add_scatter(
        x=[x for x, _, _ in cells],
        y=[y for _, y, _ in cells],
        customdata=[v for *_, v in cells],
        mode="markers",
        marker=dict(size=18, symbol="square", opacity=0),
        hovertemplate=f"λ {a} = %{{y:g}}, λ {b} = %{{x:g}}: %{{customdata:.1%}}<extra>click to open in Merge</extra>",
        showlegend=False,
    )


def clicked_lambdas(selection: Mapping | None) -> tuple[float, float] | None:
    """(λ₁, λ₂) of the first clicked landscape cell (y is the first task's λ), from st.plotly_chart's selection."""
    points = ((selection or {}).get("selection") or {}).get("points") or []
    cell = next((p for p in points if "x" in p and "y" in p), None)
    return None if cell is None else (float(cell["y"]), float(cell["x"]))


PLANE_X_TITLE = "bytes stored per task to serve all K tasks (log)"
PLANE_HELP = (
    "**Storage–accuracy plane.** x: the bytes a method stores to serve all K tasks, divided by K (log axis; "
    "θ₀ is shared by all and not counted): a single merged model 4P/K, TALL masks 4P/K + P/8 (a bit mask per "
    "task), EMR 4P/K + P/8 + 4 (and a rescaler), the fine-tuned models 4P; a calibrator stores nothing more than "
    "its base. P is the image tower's parameter count, 4 bytes each (float32). y: mean normalized test accuracy "
    "at the setting chosen on val. Diamonds are task-specific (they need the task id at inference); the dashed "
    "line is the Pareto front, the points no other beats on both axes. Hover a point for each task's accuracy."
)


def storage_plane_chart(plane: StoragePlane) -> go.Figure:
    """Bytes per task (log x) against mean normalized test accuracy (y): one point per method at its best val
    setting (diamonds: task-specific, they need the task id at inference), each task's test accuracy on hover,
    the Pareto front as a dashed line through the points nothing beats on both axes."""
    points = plane.points
    hover = [
        "<br>".join([f"<b>{_plane_name(p.method)}</b>", f"{_bytes(p.bytes_per_task)} per task",
                     f"normalized {p.mean_normalized:.1%}", *(f"{t}: {a:.1%}" for t, a in p.accuracy.items())])
        for p in points
    ]  # fmt: skip
    fig = go.Figure(
        go.Scatter(
            x=[p.bytes_per_task for p in points],
            y=[p.mean_normalized for p in points],
            mode="markers",
            name="methods",
            marker=dict(
                size=11,
                symbol=["diamond" if p.task_specific else "circle" for p in points],
                color=[COLOURS["fine-tuned"] if p.on_front else COLOURS["merged"] for p in points],
            ),
            hovertext=hover,
            hoverinfo="text",
        )
    )
    front = plane.front
    fig.add_scatter(
        x=[p.bytes_per_task for p in front],
        y=[p.mean_normalized for p in front],
        mode="lines+text",
        line=dict(dash="dash", color=COLOURS["fine-tuned"]),
        text=[_plane_name(p.method) for p in front],
        textposition="top left",
        name="Pareto front",
        hoverinfo="skip",
    )
    low = min(p.mean_normalized for p in points)
    levels = _tick_levels([p.bytes_per_task for p in points])
    fig.update_layout(
        title=f"What each method stores against what it scores ({len(plane.tasks)} tasks, test)",
        xaxis=dict(title=PLANE_X_TITLE, type="log", tickvals=levels, ticktext=[_bytes(x) for x in levels]),
        yaxis=dict(title="mean normalized accuracy (test)", tickformat=".0%", range=[min(0.5, low - 0.05), 1.08]),
        height=460,
        margin=dict(t=50),
        legend=dict(orientation="h", y=-0.2),
    )
    return readable(fig)


def _plane_name(method: str) -> str:
    return "fine-tuned models" if method == FINE_TUNED_NAME else pipeline_display(method).split(" (")[0]


def _tick_levels(values: list[float], *, apart: float = 1.15) -> list[float]:
    """The few storage levels the points sit at, ascending, each at least `apart`× the one before (EMR's 4 more
    bytes than TALL masks is one level), so their byte labels never overlap on the log axis."""
    levels: list[float] = []
    for value in sorted(set(values)):
        if not levels or value >= levels[-1] * apart:
            levels.append(value)
    return levels


def _bytes(count: float) -> str:
    """4,096 → '4.1 kB': decimal units, as storage is sold."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"
