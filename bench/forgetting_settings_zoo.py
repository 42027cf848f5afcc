"""How STA forgetting's κ (importance threshold) and ρ (target-over-controls margin) were chosen.

For each (κ, ρ): every zoo task as target, α chosen on val as in the protocol; a setting's val score is
the number of targets whose val accuracy fell at least half way to chance (control ≥ 95% by
construction); the test count (the acceptance measure) is reported beside it but not used to choose.
Writes bench/results/forgetting_settings_zoo.json. About 3 minutes per setting on 2 CPU cores.

    python bench/forgetting_settings_zoo.py [0.1:2.0 0.1:1.5 ...]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_GRID = ("0.05:1.5", "0.1:1.0", "0.1:1.5", "0.1:2.0", "0.2:1.5")


def main() -> None:
    from engine.home import ASSETS_DIR
    from engine.merge.forgetting import forgetting_outcome, negation_curve
    from engine.workspace import Workspace

    settings = [tuple(map(float, s.split(":"))) for s in (sys.argv[1:] or DEFAULT_GRID)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(ASSETS_DIR / "zoo", cache_dir=Path(tmp))
        for kappa, rho in settings:
            val_count, test_count = 0, 0
            for target in ws.task_names:
                curve = negation_curve(ws, target, method="sta", threshold=kappa, margin=rho, split="val")
                pre, chance = curve.target_accuracy[0], 1 / len(ws.suite.tasks[target].class_names)
                val_count += curve.target_accuracy[curve.chosen_index()] <= pre - 0.5 * (pre - chance)
                test_count += forgetting_outcome(ws, curve, split="test").succeeded
            rows.append({"threshold": kappa, "margin": rho, "val_forgotten": val_count, "test_forgotten": test_count})
            print(rows[-1], flush=True)
    best = max(rows, key=lambda r: r["val_forgotten"])
    out = {
        "benchmark": "STA forgetting settings on the demo zoo, chosen on val",
        "settings": rows,
        "chosen_on_val": {"threshold": best["threshold"], "margin": best["margin"]},
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (ROOT / "bench" / "results" / "forgetting_settings_zoo.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
