"""Demo-zoo speed on this machine (issue "The offline demo zoo"); writes bench/results/zoo_speed_<device>.json.

- merge + evaluate of all 8 tasks on the interactive split (target ≤ 1 s on the 2-core CPU),
- zoo load time (collection, task matrix, evaluation suite) with a warm data-home cache,
- cold start to first result in a fresh process, with an empty and with a warm cache,
- the build's per-stage times, copied from assets/zoo/report.json.

    python bench/zoo_speed.py [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.eval.evaluate import EvalResult

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIRST_RESULT = """
import time; t0 = time.perf_counter()
from pathlib import Path
from engine.pool.collection import load_collection, open_suite, task_matrix
from engine.eval.evaluate import evaluate
from engine.merge import apply
from engine.home import ASSETS_DIR, DataHome
home = DataHome.from_env().ensure()
c = load_collection(ASSETS_DIR / "zoo"); p = c.pretrained()
suite = open_suite(c, cache_dir=home.cache, device="{device}", pretrained=p)
tm = task_matrix(c, device="{device}", pretrained=p)
r = evaluate(apply("task_arithmetic", tm.theta0, tm.T, {{"lam": 0.3}}), suite, "interactive")
print(time.perf_counter() - t0)
"""


def cold_start(device: str, home: Path) -> float:
    """Seconds from process start to the first merged accuracy (python start-up included)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", FIRST_RESULT.format(device=device)],
        check=True,
        cwd=ROOT,
        env={**os.environ, "MERGELAB_HOME": str(home)},
        capture_output=True,
    )
    return time.perf_counter() - start


def slider_moves(theta0, T, suite, *, split: str, repeats: int) -> tuple[list[float], EvalResult]:
    """Seconds of each λ move, as the Merge page makes it: a task-arithmetic merge into one reused buffer, then
    the exact accuracies of every task on `split` (the accuracies are read back, so the GPU has finished)."""
    import torch

    from engine.eval.evaluate import evaluate
    from engine.merge import apply

    buffer = torch.empty_like(theta0)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        merged = apply("task_arithmetic", theta0, T, {"lam": 0.05 * (i % 20)}, out=buffer)
        result = evaluate(merged, suite, split)
        times.append(time.perf_counter() - start)
    return times, result


def main() -> None:
    import torch

    from engine.home import ASSETS_DIR
    from engine.models import pick_device
    from engine.pool.collection import load_collection, open_suite, task_matrix

    parser = argparse.ArgumentParser()
    parser.add_argument("--device")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        cold_empty = cold_start(device.type, home)  # builds tasks and heads into the cache
        cold_warm = cold_start(device.type, home)
        start = time.perf_counter()
        collection = load_collection(ASSETS_DIR / "zoo")
        pretrained = collection.pretrained()
        suite = open_suite(collection, cache_dir=home / "cache", device=device, pretrained=pretrained)
        tm = task_matrix(collection, device=device, pretrained=pretrained)
        load_s = time.perf_counter() - start
    times, result = slider_moves(tm.theta0, tm.T, suite, split="interactive", repeats=args.repeats)
    report = json.loads((ASSETS_DIR / "zoo" / "report.json").read_text())
    out = {
        "benchmark": "demo zoo speed",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "images_per_slider_move": sum(result.total.values()),
        "merge_and_evaluate_interactive_s": {"median": round(statistics.median(times), 4), "max": round(max(times), 4)},
        "target_s": 1.0,
        "zoo_load_warm_cache_s": round(load_s, 3),
        "cold_start_to_first_result_s": {"empty_cache": round(cold_empty, 2), "warm_cache": round(cold_warm, 2)},
        "zoo_build_stage_s": report["timings_s"],
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (ROOT / "bench" / "results" / f"zoo_speed_{device.type}.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
