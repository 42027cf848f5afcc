"""The zoo's warm stage: the first-open caches its pages read (engine/jobs/warm.py), shipped in `warm/`.

The stage warms the standard checkpoints of every task into a scratch cache and copies the kinds keyed by content
alone, not by where the zoo lies (`results/`: the Merge page's opening numbers; `jvp/`: the interactive split's
tangent features; `merge_parts/`: WUDI's parts at the setting its comparison chose), into `warm/` (what an
earlier warm stage shipped there is read, not recomputed), and names the folder in collection.json. The tasks'
images and heads are regenerated into the data home instead (tens of MB); the τJp matrices and importance maps
ship as the zoo's own files already.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from engine.jobs.warm import warm_workspace
from engine.workspace import Workspace

WARM = "warm"
SHIPPED = ("results", "jvp", "merge_parts")  # the data home's cache folders a collection's warm folder may hold


def warm_stage(work: Path) -> dict:
    """Warm the zoo in `work` and ship its content-keyed caches there; returns report.json's "warm" entry."""
    cache = work / ".cache"
    report = warm_workspace(Workspace.open(work, cache_dir=cache))
    shipped = work / WARM  # what an earlier warm stage shipped is read, not computed again, and kept
    for kind in SHIPPED:
        if (cache / kind).is_dir():
            shutil.copytree(cache / kind, shipped / kind, dirs_exist_ok=True)
    manifest_path = work / "collection.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "warm": WARM}, indent=2) + "\n")
    return {"warm": {k: v for k, v in report.to_json().items() if k != "collection"}}  # not the scratch copy's path
