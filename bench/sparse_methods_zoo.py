"""TA vs TIES vs DARE vs magnitude vs STA on the demo zoo at their best val settings (issue "Sparse and selective
merging"); writes bench/results/sparse_methods_zoo.json. Selection: best mean normalized accuracy on val
over a small grid per method; report: mean test accuracy and normalized accuracy at that setting.

    python bench/sparse_methods_zoo.py
"""

from __future__ import annotations

import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GRIDS = {
    "task_arithmetic": {"lam": [i / 20 for i in range(1, 21)]},
    "ties": {"density": [0.1, 0.2, 0.3, 0.5], "lam": [0.4, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0]},
    "dare": {"drop": [0.5, 0.9], "lam": [0.1, 0.2, 0.3, 0.4, 0.5]},
    "dare_ties": {"drop": [0.5, 0.9], "lam": [0.4, 0.6, 0.8, 1.0, 1.5]},
    "magnitude": {"density": [0.1, 0.2, 0.5], "lam": [0.2, 0.3, 0.4, 0.5, 0.6, 0.8]},
    "sta": {"threshold": [0.01, 0.05, 0.1, 0.2], "lam": [0.2, 0.3, 0.4, 0.5, 0.7, 1.0]},
    "sta_theta": {"threshold": [0.01, 0.05, 0.1, 0.2], "lam": [0.2, 0.3, 0.4, 0.5, 0.7, 1.0]},
}


def main() -> None:
    from engine.home import ASSETS_DIR
    from engine.workspace import Workspace

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(ASSETS_DIR / "zoo", cache_dir=Path(tmp))
        for method, grid in GRIDS.items():
            best = None
            for values in itertools.product(*grid.values()):
                params = dict(zip(grid, values))
                val = ws.compare(ws.task_names, method, params, split="val")
                if best is None or val.mean_normalized > best[0]:
                    best = (val.mean_normalized, params)
            test = ws.compare(ws.task_names, method, best[1], split="test")
            results[method] = {
                "best_val_params": best[1],
                "val_mean_normalized": round(best[0], 4),
                "test_mean_accuracy": round(test.mean_merged, 4),
                "test_mean_normalized": round(test.mean_normalized, 4),
                "test_per_task": {t: round(a, 4) for t, a in test.merged.accuracy.items()},
            }
        zero_shot = ws.zero_shot("test")
        finetuned = ws.finetuned("test")
    out = {
        "benchmark": "sparse merges on the demo zoo at their best val settings",
        "methods": results,
        "zero_shot_test_mean": round(sum(zero_shot.values()) / 8, 4),
        "finetuned_test_mean": round(sum(finetuned.values()) / 8, 4),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (ROOT / "bench" / "results" / "sparse_methods_zoo.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({m: {k: v for k, v in r.items() if k != "test_per_task"} for m, r in results.items()}, indent=2))


if __name__ == "__main__":
    main()
