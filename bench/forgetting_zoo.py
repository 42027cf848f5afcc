"""Task-arithmetic negation on the demo zoo, every task as target (issue "Sparse and selective merging").

α chosen on val over linspace(0, 2, 41) (target lowest with control ≥ 95% of pretrained), reported on
test; "halfway" = the target's test accuracy fell at least half the way from pretrained to chance.
Writes bench/results/forgetting_zoo.json.
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
    from engine.evaluate import evaluate
    from engine.forgetting import negate, negation_curve
    from engine.home import ASSETS_DIR
    from engine.workspace import Workspace

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(ASSETS_DIR / "zoo", cache_dir=Path(tmp))
        pre = ws.zero_shot("test")
        for target in ws.task_names:
            alpha = negation_curve(ws, target, split="val").chosen_alpha
            acc = evaluate(negate(ws, target, alpha), ws.suite, "test").accuracy
            others = [t for t in ws.task_names if t != target]
            chance = 1 / len(ws.suite.tasks[target].class_names)
            control, pre_control = (sum(acc[t] for t in others) / 7, sum(pre[t] for t in others) / 7)
            rows[target] = {"alpha": alpha, "target_test": round(acc[target], 4), "pretrained": round(pre[target], 4),
                            "chance": round(chance, 4), "control_ratio": round(control / pre_control, 4),
                            "halfway_to_chance": acc[target] <= pre[target] - 0.5 * (pre[target] - chance)}
    out = {"benchmark": "task-arithmetic negation on the demo zoo", "tasks": rows,
           "tasks_halfway_with_control": sum(r["halfway_to_chance"] and r["control_ratio"] >= 0.95 for r in rows.values()),
           "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (ROOT / "bench" / "results" / "forgetting_zoo.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
