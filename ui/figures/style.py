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
    default keeps fixed margins and cuts long labels, "Task arithmetic" → "3)"), at any font size."""
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def layers_height(rows: int) -> int:
    """Height of a chart with one row per layer: 24 px a row and room for title and axis, at least 320 px."""
    return max(320, 24 * rows + 140)
