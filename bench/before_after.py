"""In-memory merge speed now against the commit before the task store (issue 30's "within 1.10×" goal).

The issue changed how every merge reads its task vectors; on a pool held in memory that must cost nothing.
This runs `bench/merge_bandwidth.py` and `bench/sparse_merge.py` (random ViT-B/32 tower, K = 8, in memory) from
two git worktrees, the old commit's and this checkout's HEAD, interleaved old, new, old, new … `--runs` times
each, every run in a fresh process, and compares the medians over runs of each run's own median figure:
- merges: task arithmetic into a new and into a reused buffer (`flat_merge_s`, `flat_merge_reused_buffer_s`),
  TIES, DARE, magnitude and STA from scratch (`merge_s`);
- slider moves: a λ move from cached parts (`lam_move_s`) and a per-task λ move (`per_task_lam_move_s`).
Writes the key `in_memory_speed` of bench/results/scale_cpu.json: per figure the old and new medians, their
ratio (new / old) and whether it is within the goal. Run it on a quiet machine; the load is recorded per run.

    python bench/before_after.py [--old 8bde939] [--runs 5] [--append]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "scale_cpu.json"
BEFORE_STORE = "8bde939"  # the last commit before issue 30's task store (its merge hashes were recorded next)
GOAL = 1.10
BENCHES = {  # script → (its results file, the figures read from it: dotted paths to a number)
    "merge_bandwidth.py": (
        "merge_bandwidth_cpu.json",
        ("flat_merge_s.median", "flat_merge_reused_buffer_s.median"),
    ),
    "sparse_merge.py": (
        "sparse_merge_cpu.json",
        (
            *(f"merge_s.{m}" for m in ("ties", "dare", "magnitude", "sta")),
            *(f"lam_move_s.{m}" for m in ("ties", "dare", "magnitude", "sta")),
            *(f"per_task_lam_move_s.{m}" for m in ("dare", "magnitude")),
        ),
    ),
}


def worktree(commit: str, folder: Path) -> Path:
    """A detached worktree of `commit` at `folder` (made once)."""
    if not folder.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(folder), commit], cwd=ROOT, check=True)
    return folder


def figure(document: dict, path: str) -> float:
    value = document
    for key in path.split("."):
        value = value[key]
    return float(value)


def run_once(tree: Path) -> dict[str, float]:
    """Every figure of both benchmarks, each script in a fresh process in `tree` (its own engine)."""
    found = {}
    for script, (results, paths) in BENCHES.items():
        subprocess.run([sys.executable, str(tree / "bench" / script)], cwd=tree, check=True, capture_output=True)
        document = json.loads((tree / "bench" / "results" / results).read_text())
        found |= {f"{script[:-3]}:{p}": figure(document, p) for p in paths}
    return found


def compare(old_runs: list[dict], new_runs: list[dict]) -> dict:
    rows = {}
    for name in old_runs[0]:
        old = statistics.median(r[name] for r in old_runs)
        new = statistics.median(r[name] for r in new_runs)
        rows[name] = {"old_s": round(old, 5), "new_s": round(new, 5), "new_over_old": round(new / old, 3)}
        rows[name]["within_goal"] = rows[name]["new_over_old"] <= GOAL
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", default=BEFORE_STORE)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--trees", type=Path, default=Path(tempfile.gettempdir()) / "mergelab-before-after")
    parser.add_argument("--append", action="store_true", help="add these runs to the recorded ones of the same pair")
    args = parser.parse_args()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True, text=True)
    trees = {"old": worktree(args.old, args.trees / "old"), "new": worktree(head.stdout.strip(), args.trees / "new")}
    document = json.loads(OUT.read_text()) if OUT.exists() else {}
    recorded = document.get("in_memory_speed", {})
    same_pair = args.append and recorded.get("old_commit") == args.old and "runs" in recorded
    runs: dict[str, list[dict]] = recorded["runs"] if same_pair else {"old": [], "new": []}
    loads = recorded.get("load_at_each_run", []) if same_pair else []
    for i in range(args.runs):
        for which in ("old", "new"):  # interleaved: drift in the machine's speed hits both alike
            loads.append(round(os.getloadavg()[0], 2))
            runs[which].append(run_once(trees[which]))
            print(i, which, runs[which][-1], flush=True)
    document = json.loads(OUT.read_text()) if OUT.exists() else {}  # again: other benches may have written
    document["in_memory_speed"] = {
        "old_commit": args.old,
        "new_commit": head.stdout.strip()[:12],
        "runs_each": len(runs["new"]),
        "goal_new_over_old_max": GOAL,
        "load_at_each_run": loads,
        "figures": compare(runs["old"], runs["new"]),
        "runs": runs,
    }
    OUT.write_text(json.dumps(document, indent=1) + "\n")
    print(json.dumps(document["in_memory_speed"], indent=1))


if __name__ == "__main__":
    main()
