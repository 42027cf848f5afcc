"""The demo zoo's storage–accuracy plane, stored in its own JSON (assets/zoo/plane.json) beside report.json.

Every method at its best val setting, reported on test (the Compare rule, engine/jobs/compare.py). The single-model
methods' rows are report.json's "methods" rows as stored (chosen on val by that rule when the zoo was built); this
module adds the rows report.json lacks: the task-specific methods (TALL masks, EMR) over their declared grids, and
calibrated pipelines (`tsv_m+svc`, engine/merge/pipeline.py). Our choice for a pipeline, to keep the search small:
its base stays at the base's stored best setting and only the calibrator's declared axis (`Calibrator.grid`) is
searched on val, so a pipeline's row says what the calibrator adds to the base as the zoo chose it. With P and each
task's fine-tuned test accuracy, `storage_plane` (engine/jobs/plane.py) draws the plane from it. Computed once, read
by the Compare page; tests/test_storage_plane.py recomputes one point.

    python -m engine.zoo.plane [ZOO_DIR]
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from engine.data.generated import file_sha256
from engine.home import ASSETS_DIR
from engine.io.atomic import write_text_atomic
from engine.jobs.compare import DEFAULT_GRIDS, MethodsComparison, compare_job
from engine.jobs.plane import PLANE_FILE
from engine.jobs.runner import JobContext
from engine.merge.pipeline import get_calibrator, parse_pipeline
from engine.workspace import Workspace

TASK_SPECIFIC = ("tall_masks", "emr")
PIPELINES = (
    "task_arithmetic+svc",
    "task_arithmetic+lines",
    "ties+svc",
    "tsv_m+svc",
    "tsv_m+lines",
    "iso_c+svc",
)


def pipeline_grid_at(name: str, base_params: dict[str, float]) -> dict[str, tuple[float, ...]]:
    """A pipeline's grid with its base fixed at `base_params`: only the calibrators' declared axes vary."""
    _, steps = parse_pipeline(name)
    axes = {f"{s}.{axis}": values for s in steps for axis, values in get_calibrator(s).grid}
    return {**{k: (float(v),) for k, v in base_params.items()}, **axes}


def compute_plane(zoo: Path, stored: MethodsComparison) -> dict:
    """The plane's JSON: `stored` rows (report.json's) plus the task-specific methods and the pipelines, each
    chosen on val and reported on test on the zoo at `zoo` (a scratch cache, nothing written beside it)."""
    start, best = time.perf_counter(), {r.method: dict(r.params) for r in stored.results}
    grids = {
        **{m: DEFAULT_GRIDS[m] for m in TASK_SPECIFIC},
        **{p: pipeline_grid_at(p, best[p.split("+")[0]]) for p in PIPELINES},
    }
    report = lambda step, total, message="", metrics=None: print(f"[{step}/{total}] {message}", flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory() as cache:
        ws = Workspace.open(zoo, cache_dir=Path(cache))
        ctx = JobContext(report, threading.Event())
        added = compare_job(ctx, workspace=ws, tasks=stored.tasks, methods=tuple(grids), grids=grids)
        finetuned = ws.finetuned("test")
        numel = ws.matrix.spec.numel
    comparison = MethodsComparison(stored.tasks, (*stored.results, *added.results))
    return {
        "numel": numel,
        "finetuned_test": {t: finetuned[t] for t in stored.tasks},
        "comparison": comparison.to_json(),
        "grids": {m: {k: list(v) for k, v in g.items()} for m, g in grids.items()},
        "stored_from_report": [r.method for r in stored.results],
        "duration_s": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str]) -> None:
    zoo = Path(argv[0]) if argv else ASSETS_DIR / "zoo"
    report = json.loads((zoo / "report.json").read_text(encoding="utf-8"))
    data = compute_plane(zoo, MethodsComparison.from_json(report["methods"]))
    write_text_atomic(zoo / PLANE_FILE, json.dumps(data, indent=1) + "\n")
    record_in_manifest(zoo)
    print(zoo / PLANE_FILE)


def record_in_manifest(zoo: Path) -> None:
    """The plane's sha256 into the zoo's manifest.json (every zoo file's; tests/test_zoo.py checks them)."""
    manifest = json.loads((zoo / "manifest.json").read_text(encoding="utf-8"))
    manifest[PLANE_FILE] = file_sha256(zoo / PLANE_FILE)
    write_text_atomic(zoo / "manifest.json", json.dumps(dict(sorted(manifest.items())), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
