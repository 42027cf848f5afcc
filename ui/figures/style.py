"""Shared look of every figure: the series colours and the projector's larger fonts."""

from __future__ import annotations

import plotly.graph_objects as go

TOP_LEGEND = dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0)  # under the title
COLOURS = {"zero-shot": "#9aa5b1", "tangent preview": "#9ecae1", "merged": "#2f6fdb", "fine-tuned": "#1b9e77"}


PROJECTOR_FONT = 22


PROJECTOR_HEIGHT = 640


def for_projector(fig: go.Figure, *, font_size: int = PROJECTOR_FONT, height: int = PROJECTOR_HEIGHT) -> go.Figure:
    """The same figure, readable from the back of a lecture room: larger base and title fonts, taller (a chart
    already taller, one row per layer, keeps its height)."""
    height = max(height, fig.layout.height or 0)
    top = max(fig.layout.margin.t or 0, 3 * font_size)  # the larger title stays inside the figure
    fig.update_layout(font=dict(size=font_size), title_font=dict(size=font_size + 4), height=height, margin=dict(t=top))
    return fig


def readable(fig: go.Figure) -> go.Figure:
    """Every builder's last step: axes grow their margins to fit their tick labels and titles (plotly's
    default keeps fixed margins and cuts long labels, "Task arithmetic" → "3)"), at any font size; and every
    category gets its label: plotly's automatic ticks draw every second task name when a category is narrower
    than 80 px (40 px on a y axis), so a category axis ticks every category (dtick=1), unless the builder
    chose its own tick labels."""
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    for name in category_axes(fig):
        axis = fig.layout[name]
        if axis.tickmode != "array" and axis.type in (None, "category"):  # a date axis's dtick=1 is 1 ms
            axis.update(dtick=1)
    return fig


def category_axes(fig: go.Figure) -> set[str]:
    """Layout names ("xaxis", "yaxis2") of the axes some trace places names (strings) on."""
    names = set()
    for trace in fig.data:
        for letter in "xy":
            values = getattr(trace, letter, None)  # a parcoords trace has none
            if values is not None and len(values) and isinstance(values[0], str):
                names.add(f"{letter}axis{(getattr(trace, letter + 'axis') or letter)[1:]}")
    return names


def colour_bar_on_top(title: str, **more) -> dict:
    """A heatmap's colour bar as a strip above its cells: in a narrow column an upright bar takes a third of the
    width, and the task names under the cells then get less room than a line of text (they overlap)."""
    return dict(title=dict(text=title, side="top"), orientation="h", y=1.02, yanchor="bottom", thickness=12, **more)


def layers_height(rows: int) -> int:
    """Height of a chart with one row per layer: 24 px a row and room for title and axis, at least 320 px."""
    return max(320, 24 * rows + 140)
