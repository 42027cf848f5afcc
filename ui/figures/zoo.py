"""Figures and tables of the Zoo page: task-vector similarity and the checkpoint table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import plotly.graph_objects as go
import torch

from engine.pool.info import CheckpointInfo
from ui.figures.style import readable
from ui.formats import fixed_grid, percent


def similarity_heatmap(similarity: torch.Tensor, names: Sequence[str]) -> go.Figure:
    """Cosine similarity of task vectors [K, K] as a diverging heatmap centred on 0."""
    values = similarity.tolist()
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=list(names),
            y=list(names),
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            colorbar=dict(title="cosine"),
            reversescale=True,
            text=fixed_grid(values),
            texttemplate="%{text}",
            customdata=fixed_grid(values, 3),
            hovertemplate="%{y} · %{x}: %{customdata}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Cosine similarity of task vectors",
        xaxis_title="task vector",
        yaxis=dict(title="task vector", autorange="reversed"),
        margin=dict(t=50),
    )
    return readable(fig)


TOWERS = {"clip": "both towers", "visual": "image tower"}


def checkpoint_table(
    pretrained: CheckpointInfo,
    checkpoints: Sequence[CheckpointInfo],
    *,
    in_use: Mapping[str, str],
    zero_shot: Mapping[str, float],
    finetuned: Mapping[str, float],
    sizes: Mapping[Path, int],
) -> list[dict]:
    """The Zoo page's checkpoint rows: the pretrained model (its mean zero-shot accuracy), then every task's
    checkpoints; accuracies as percentages, "—" where a checkpoint is not in use (not evaluated)."""
    rows = [
        {
            "task": f"(pretrained, {TOWERS.get(pretrained.tower, pretrained.tower)})",
            "checkpoint": "pretrained",
            "in use": True,
            "format": pretrained.format,
            "architecture": _architecture(pretrained),
            "size": sizes[pretrained.path] // 1000,
            "zero-shot": percent(sum(zero_shot.values()) / len(zero_shot)) + " (mean)",
            "fine-tuned": "—",
        }
    ]
    for info in checkpoints:
        used = in_use.get(info.task) == info.name
        rows.append(
            {
                "task": info.task,
                "checkpoint": info.name if info.variant == info.name else f"{info.name} ({info.variant})",
                "in use": used,
                "format": info.format,
                "architecture": _architecture(info),
                "size": sizes[info.path] // 1000,
                "zero-shot": percent(zero_shot[info.task]),
                "fine-tuned": percent(finetuned[info.task]) if used else "—",
            }
        )
    return rows


def _architecture(info: CheckpointInfo) -> str:
    return info.architecture + ("-quickgelu" if info.quick_gelu else "")
