"""Forgetting on the demo zoo, every task as target, task arithmetic vs STA (issue "Sparse and selective merging").

For each target and method (default settings): α chosen on val over linspace(0, 2, 41) (target lowest
with control ≥ 95% of pretrained), reported on test; "forgotten" = the target's test accuracy fell at
least half the way from pretrained to chance with test control ≥ 95% of pretrained. The zoo stores
the same sweeps (forgetting.json); this recomputes them from the shipped files.
Writes bench/results/forgetting_zoo.json.

    python bench/forgetting_zoo.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from engine.home import ASSETS_DIR
    from engine.merge.forgetting import STA_MARGIN, STA_THRESHOLD
    from engine.workspace import Workspace
    from engine.zoo.sta import forgetting_sweeps

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report = forgetting_sweeps(Workspace.open(ASSETS_DIR / "zoo", cache_dir=Path(tmp)))
    table = {
        target: {
            method: {
                "alpha": e["outcome"]["alpha"],
                "target_test": round(e["outcome"]["target_accuracy"], 4),
                "pretrained_test": round(e["outcome"]["pretrained_target"], 4),
                "chance": round(e["outcome"]["chance"], 4),
                "control_ratio": round(e["outcome"]["control_accuracy"] / e["outcome"]["pretrained_control"], 4),
                "forgotten": e["succeeded"],
            }
            for method, e in methods.items()
        }
        for target, methods in report["targets"].items()
    }
    out = {
        "benchmark": "forgetting on the demo zoo: task arithmetic vs STA",
        "protocol": report["protocol"],
        "sta_settings": {"threshold": STA_THRESHOLD, "margin": STA_MARGIN},
        "forgotten_count": report["succeeded_count"],
        "goal_sta_forgotten_min": 6,
        "tasks": table,
        "seconds": round(time.perf_counter() - start, 1),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (ROOT / "bench" / "results" / "forgetting_zoo.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"forgotten_count": out["forgotten_count"]}, indent=2))


if __name__ == "__main__":
    main()
