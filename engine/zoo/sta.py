"""The zoo's STA stage: ship importance maps, and store every target's forgetting sweep.

Importance maps of all three kinds ("tau", "theta" at each fine-tuned model; "grad0" at θ₀) are
computed once, written as uint8 codes under importance/ and named in collection.json, so the
dashboard never recomputes them. The forgetting sweeps (each task as target, each forgetting method,
α over linspace(0, 2, 41) on val, the chosen α reported on test) go to forgetting.json, named by the
manifest's "forgetting_report"; the tests recompute one of them. `python -m engine zoo add-sta` applies
the stage to an existing zoo (engine/zoo/build.py `update_zoo`), so adding it needs no retraining.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from engine.merge.forgetting import ALPHAS, NEGATIONS, ForgettingCurve, forgetting_outcome, negation_curve
from engine.sta.importance import KINDS, save_importance
from engine.workspace import Workspace

FORGETTING_REPORT = "forgetting.json"


def ship_importance(work: Path) -> None:
    """Compute every task's maps of every kind into work/importance and name them in collection.json."""
    ws = Workspace.open(work, cache_dir=work / ".cache")
    manifest = json.loads((work / "collection.json").read_text())
    for kind in KINDS:
        codes = ws.importance.codes(kind)  # uint8 [K, P]
        for k, task in enumerate(ws.task_names):
            relative = f"importance/{task}.{kind}.safetensors"
            source = ws.importance.source(task, kind)
            save_importance(work / relative, codes[k], checkpoint_sha=source.checkpoint_sha, config=source.config)
            manifest["tasks"][task].setdefault("importance", {})[kind] = relative
    manifest["forgetting_report"] = FORGETTING_REPORT
    (work / "collection.json").write_text(json.dumps(manifest, indent=2) + "\n")


def forgetting_report(work: Path, *, alphas: Sequence[float] = ALPHAS, progress=None) -> dict:
    """Sweep every target with every method on the collection at `work`; write and return forgetting.json."""
    report = forgetting_sweeps(Workspace.open(work, cache_dir=work / ".cache"), alphas=alphas, progress=progress)
    (work / FORGETTING_REPORT).write_text(json.dumps(report, indent=1) + "\n")
    return report


def forgetting_sweeps(ws: Workspace, *, alphas: Sequence[float] = ALPHAS, progress=None) -> dict:
    """Every target × forgetting method (default settings): the val curve, the chosen α, test accuracies there."""
    rows: dict[str, dict] = {}
    for i, target in enumerate(ws.task_names):
        rows[target] = {}
        for method in NEGATIONS:
            curve = negation_curve(ws, target, method=method, alphas=alphas, split="val")
            outcome = forgetting_outcome(ws, curve, split="test")
            rows[target][method] = {"curve": asdict(curve), "outcome": asdict(outcome), "succeeded": outcome.succeeded}
        if progress is not None:
            progress("forgetting sweeps", (i + 1) / len(ws.task_names), target)
    counts = {m: sum(rows[t][m]["succeeded"] for t in rows) for m in NEGATIONS}
    return {
        "schema_version": 1,
        "protocol": "α on linspace(0, 2, 41) chosen on val (target lowest with control "
        "≥ 95% of pretrained), reported on test; succeeded = target at least halfway from pretrained "
        "to chance with control ≥ 95% of pretrained",
        "succeeded_count": counts,
        "targets": rows,
    }


def stored_curve(entry: dict) -> ForgettingCurve:
    """A curve as stored in forgetting.json."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in entry["curve"].items()}
    return ForgettingCurve(**fields)


def selective_stage(work: Path, *, alphas: Sequence[float] = ALPHAS, progress=None) -> dict:
    """The whole stage on a zoo folder: maps, then sweeps; returns what report.json records of it."""
    ship_importance(work)
    report = forgetting_report(work, alphas=alphas, progress=progress)
    return {"forgetting_succeeded_count": report["succeeded_count"]}
