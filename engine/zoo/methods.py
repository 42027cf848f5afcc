"""The zoo's methods stage: every merge method at its best val setting, on test, and the subspace statistics.

Stored in report.json → "methods" so the Compare methods and Subspaces pages read it instead of running
several hundred merges on page load; CI recomputes one method's row (tests/test_zoo.py).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from engine.jobs.compare import DEFAULT_GRIDS, compare_job
from engine.jobs.runner import JobContext
from engine.merge.wudi import wudi_run
from engine.workspace import Workspace


def methods_stage(work: Path, *, grids: Mapping[str, Mapping[str, Sequence[float]]] | None = None) -> dict:
    """Compare every method with a grid (`grids` overrides DEFAULT_GRIDS, e.g. smaller for a smoke build)."""
    ws = Workspace.open(work, cache_dir=work / ".cache")
    chosen = {**DEFAULT_GRIDS, **(grids or {})}
    comparison = compare_job(JobContext(lambda **_: None, threading.Event()), workspace=ws, grids=chosen)
    stats = ws.subspace_stats()
    off_diagonal = ~torch.eye(len(stats.tasks), dtype=torch.bool)  # [K, K]
    return {
        "methods": {
            **comparison.to_json(),
            "grids": {m: {k: list(v) for k, v in g.items()} for m, g in chosen.items()},
            "subspaces": {
                "layers": list(stats.layers),
                "full_rank": list(stats.full_rank),
                "top_share_mean": [round(float(v), 4) for v in stats.top_share.mean(dim=1)],
                "effective_rank_mean": [round(float(v), 2) for v in stats.effective_rank.mean(dim=1)],
                "mean_off_diagonal_alignment": round(float(stats.overall_alignment[off_diagonal].mean()), 4),
            },
            "wudi": _wudi_reach(ws),
        }
    }


def _wudi_reach(ws: Workspace) -> dict:
    """How far WUDI's Adam gets: the share of its interference loss left after 300 and 1000 steps, and the
    task matrices' rms entry (Adam's step is absolute, lr 1e-5: larger task vectors need more steps)."""
    T, spec = ws.matrix.T, ws.matrix.spec
    entries = torch.cat([spec.matrix_view(T, n).reshape(T.shape[0], -1) for n in spec.matrices()], dim=1)  # [K, M]
    losses = wudi_run(T, spec, steps=1000).losses  # [1001]: before the first step, then after each
    return {
        "matrix_rms": round(float(entries.square().mean().sqrt()), 6),
        "loss_left": {str(n): round(losses[n] / losses[0], 4) for n in (300, 1000)},
    }
