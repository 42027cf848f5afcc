"""The zoo's interference stage: the τJp matrix of its standard checkpoints, shipped as taujp.json.

8 vectors × 8 tasks over the whole val split is a few minutes on a 2-core CPU, too slow for a page
load; the Interference page reads the stored matrix (named by the manifest's "taujp_matrix").
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.taujp.matrix import save_taujp, taujp_matrix
from engine.workspace import Workspace

TAUJP_FILE = "taujp.json"


def interference_stage(work: Path, *, max_images: int | None = None) -> dict:
    """Compute and store the matrix on val; returns what report.json records of it."""
    ws = Workspace.open(work, cache_dir=work / ".cache")
    m = ws.matrix
    matrix = taujp_matrix(
        ws.suite, m.theta0, m.T, names=m.task_names, tasks=m.task_names, split="val", max_images=max_images
    )
    save_taujp(work / TAUJP_FILE, matrix)
    manifest = json.loads((work / "collection.json").read_text())
    manifest["taujp_matrix"] = TAUJP_FILE
    (work / "collection.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return {"taujp": {"split": matrix.split, "images": dict(zip(matrix.tasks, matrix.images))}}
