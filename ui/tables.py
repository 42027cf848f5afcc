"""Column widths for st.dataframe that fit their content: Streamlit's "small" (75 px) cut the Zoo's
"63.5% (mean)" to "63.5% (mea", and a cut cell reads as a different number.

A column's width is its longest shown text (header or cell) at `CHAR_PX` per character plus `PAD_PX`; what a
number shows is estimated from its column's format (a percentage: "63.5%")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

CHAR_PX = 7  # one character of the table font (14 px sans, digits 7-8 px); PAD_PX covers the difference
PAD_PX = 32  # cell padding and the header's sort / menu icons
MAX_PX = 420  # a long free-text cell wraps in the cell's tooltip rather than pushing the table sideways

Rows = Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]


def fitted_columns(rows: Rows, config: Mapping[str, Mapping] | None = None) -> dict[str, dict]:
    """`config` (column → st.column_config dict) with a pixel width on every column of `rows` (a list of
    records or a dict of columns), wide enough for its header and its longest cell."""
    columns = _columns(rows)
    fitted = {}
    for name, values in columns.items():
        entry = dict((config or {}).get(name) or {"label": None, "type_config": {}})
        type_config = entry.get("type_config") or {}
        texts = [entry.get("label") or name, *(_shown(v, type_config) for v in values)]
        entry["width"] = min(MAX_PX, max(len(t) for t in texts) * CHAR_PX + PAD_PX)
        fitted[name] = entry
    return fitted


def _columns(rows: Rows) -> dict[str, list[Any]]:
    if isinstance(rows, Mapping):
        return {name: list(values) for name, values in rows.items()}
    names = list(dict.fromkeys(k for row in rows for k in row))
    return {name: [row.get(name) for row in rows] for name in names}


def _shown(value: Any, type_config: Mapping[str, Any]) -> str:
    """The text a cell shows, as far as the width goes."""
    if type_config.get("display_text"):
        return str(type_config["display_text"])
    if isinstance(value, bool) or value is None:
        return "false"
    if isinstance(value, float):
        return f"{value:.1%}" if type_config.get("format") == "percent" else f"{value:.4f}"
    return str(value)
