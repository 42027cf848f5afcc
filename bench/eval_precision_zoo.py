"""bfloat16 against float32 evaluation on the demo zoo (issue 38, "Evaluation at benchmark scale"): every zoo number
on test (each task's fine-tuned accuracy, zero-shot, and every method's merge at its stored best val setting,
report.json → "methods") evaluated in both precisions, with the predictions that changed per task. Writes
bench/results/eval_precision_zoo.json; tests/test_eval_precision.py recomputes a subset of it.

    python bench/eval_precision_zoo.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ZOO = ROOT / "assets" / "zoo"
OUT = ROOT / "bench" / "results" / "eval_precision_zoo.json"


def compare(ws, params, tasks) -> dict:
    """Per task: accuracy in float32 and bfloat16, and how many test predictions differ between them."""
    from engine.eval.evaluate import predictions

    parts = {t: ws.suite.tasks[t].split("test") for t in tasks}
    pred = {p: predictions(params, ws.suite, parts, precision=p) for p in ("float32", "bfloat16")}
    out = {}
    for t, part in parts.items():
        hits = {p: int((pred[p][t] == part.labels).sum()) for p in pred}
        out[t] = {
            "images": len(part),
            "float32": round(hits["float32"] / len(part), 6),
            "bfloat16": round(hits["bfloat16"] / len(part), 6),
            "changed": int((pred["float32"][t] != pred["bfloat16"][t]).sum()),
        }
    return out


def zoo_models(ws, report: dict):
    """(name, θ [P], tasks evaluated): fine-tuned per task on its own task, zero-shot, each stored method's merge."""
    m = ws.matrix
    for k, t in enumerate(m.task_names):
        yield f"finetuned/{t}", m.theta0 + m.T[k], (t,)
    yield "zero_shot", m.theta0, m.task_names
    for row in report["methods"]["results"]:
        yield row["method"], ws.merge(m.task_names, row["method"], row["params"]), m.task_names


def stored_test_accuracy(report: dict, name: str) -> dict[str, float]:
    if name.startswith("finetuned/"):
        return report["finetuned"]["test"]
    if name == "zero_shot":
        return report["zero_shot"]["test"]
    return next(r for r in report["methods"]["results"] if r["method"] == name)["test_accuracy"]


def summary(models: dict) -> dict:
    cells = [(name, t, c) for name, per_task in models.items() for t, c in per_task.items()]
    deltas = [abs(c["bfloat16"] - c["float32"]) for _, _, c in cells]
    changed = sum(c["changed"] for _, _, c in cells)
    images = sum(c["images"] for _, _, c in cells)
    worst = max(cells, key=lambda x: abs(x[2]["bfloat16"] - x[2]["float32"]))
    means = {
        name: round(sum(c["bfloat16"] - c["float32"] for c in per_task.values()) / len(per_task), 6)
        for name, per_task in models.items()
        if not name.startswith("finetuned/")
    }
    return {
        "numbers": len(cells),
        "numbers_changed": sum(d > 0 for d in deltas),
        "max_abs_accuracy_change": round(max(deltas), 6),
        "largest_change": {"model": worst[0], "task": worst[1], **worst[2]},
        "predictions": images,
        "predictions_changed": changed,
        "predictions_changed_share": round(changed / images, 6),
        "mean_accuracy_change_bf16_minus_fp32": means,
    }


def main() -> None:
    import torch

    from engine.workspace import Workspace

    torch.manual_seed(0)
    report = json.loads((ZOO / "report.json").read_text())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(ZOO, cache_dir=Path(tmp))
        models = {}
        for name, params, tasks in zoo_models(ws, report):
            models[name] = compare(ws, params, tasks)
            stored = stored_test_accuracy(report, name)
            for t, c in models[name].items():  # does float32 reproduce report.json? (a recorded fact, not a gate)
                c["report_json"] = round(stored[t], 6)
            print(name, {t: c["changed"] for t, c in models[name].items()}, flush=True)
    out = {
        "benchmark": "test accuracy of every zoo number in float32 and bfloat16 (image tower and batches cast)",
        "split": "test",
        "float32_differs_from_report_json": {
            name: [t for t, c in per_task.items() if abs(c["float32"] - c["report_json"]) > 1e-6]
            for name, per_task in models.items()
            if any(abs(c["float32"] - c["report_json"]) > 1e-6 for c in per_task.values())
        },
        "summary": summary(models),
        "models": models,
        "cpu_bf16_units": _cpu_bf16_flags(),
        "torch": torch.__version__,
        "machine": f"{os.cpu_count()} cores, shared (load average {os.getloadavg()[0]:.1f})",
        "seconds": round(time.perf_counter() - started, 1),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["summary"], indent=1))


def _cpu_bf16_flags() -> list[str]:
    from engine.eval.evaluate import CPU_BF16_FLAGS

    try:
        flags = next(
            line.split() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
        )
    except (OSError, StopIteration):
        return []
    return [f for f in CPU_BF16_FLAGS if f in flags]


if __name__ == "__main__":
    main()
