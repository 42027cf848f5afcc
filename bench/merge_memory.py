"""Peak memory of the merge page's engine calls on a random ViT-B-32 pool, K = 8 (CPU, or --device cuda).

A pool of 1 pretrained + 8 fine-tuned open_clip safetensors checkpoints (tests/foreign.py) with two tiny
images per class is written in a temporary data home; a fresh subprocess opens it as the dashboard does
(`Workspace.open`), then runs what the merge page runs: zero-shot and fine-tuned accuracy, a task-arithmetic
merge of every task and a TIES merge, each evaluated, and "Export checkpoint" (the recipe run on the open
workspace). A thread samples the RSS every 20 ms; each phase
reports its peak above the RSS after imports, in units of the floor, θ₀ and T in fp32 ((K + 1) · P · 4 bytes).
Writes bench/results/merge_memory_<device>.json.

CPU, 2 cores (2026-11-30), the merge page in AppTest on this pool, before → after: opening and merging peaked
at 7.7 → 4.8 GiB (merging indexed T's rows, a 2.6 GiB copy; `TaskMatrix.rows` now returns a view when the
tasks are consecutive), exporting at 11.7 → 5.4 GiB (the recipe run re-read the whole pool; it now takes the
page's workspace, and the workspace keeps the pretrained checkpoint's metadata, not its 0.6 GB of weights).

    python bench/merge_memory.py [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARCH, K = "ViT-B-32", 8
TASKS = tuple(f"task{i}" for i in range(K))

MEASURE = r"""
import json, sys, threading, time
sys.path.insert(0, {root!r})
from pathlib import Path
import torch
from engine.workspace import Workspace

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

peak = [rss()]
def sample():
    while True:
        peak[0] = max(peak[0], rss())
        time.sleep(0.02)

threading.Thread(target=sample, daemon=True).start()
base = rss()
phases = {{}}
def phase(name, fn):
    peak[0] = rss()
    fn()
    time.sleep(0.05)
    phases[name] = {{"peak_gib": (max(peak[0], rss()) - base) / 2**30, "after_gib": (rss() - base) / 2**30}}

state = {{}}
phase("open", lambda: state.update(ws=Workspace.open(Path({pool!r}), cache_dir=Path({cache!r}), device={device!r})))
ws = state["ws"]
phase("zero_shot_and_finetuned", lambda: (ws.zero_shot("interactive"), ws.finetuned("interactive")))
phase("task_arithmetic_compare", lambda: ws.compare(ws.task_names, "task_arithmetic", {{"lam": 0.3}}))
phase("ties_compare", lambda: ws.compare(ws.task_names, "ties", {{"density": 0.2, "lam": 1.0}}))
from engine.home import DataHome
from engine.runs.recipe_runner import run_recipe
from engine.runs.recipes import MergeRecipe
recipe = MergeRecipe(collection={pool!r}, tasks=ws.task_names, method="task_arithmetic", params={{"lam": 0.3}},
                     evaluate="test")
phase("export_recipe", lambda: run_recipe(recipe, home=DataHome.from_env().ensure(), device={device!r}, workspace=ws))
P = ws.matrix.T.shape[1]
print("RESULT " + json.dumps({{"P": P, "floor_gib": (ws.matrix.T.shape[0] + 1) * P * 4 / 2**30, "phases": phases}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.foreign import random_pool, write_image_folders, write_pool

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        pretrained, finetuned, heads = random_pool(ARCH, TASKS)
        pool = write_pool(
            home / "pool", "open_clip", architecture=ARCH, pretrained=pretrained, finetuned=finetuned, heads=heads
        )
        del pretrained, finetuned
        write_image_folders(pool, {t: ("cat", "dog") for t in TASKS}, per_class=1, size=32)
        code = MEASURE.format(root=str(ROOT), pool=str(pool), cache=str(home / "cache"), device=args.device)
        run = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "MERGELAB_HOME": str(home)},
        )
    if run.returncode != 0:
        raise SystemExit(run.stderr[-3000:])
    measured = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))[7:])
    floor = measured["floor_gib"]
    out = {
        "benchmark": "peak RSS of the merge page's engine calls, random ViT-B-32 pool, K = 8",
        "device": args.device,
        "K": K,
        "P": measured["P"],
        "floor_gib": round(floor, 3),
        "phases": {
            name: {k: round(v, 3) for k, v in p.items()} | {"peak_over_floor": round(p["peak_gib"] / floor, 2)}
            for name, p in measured["phases"].items()
        },
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (ROOT / "bench" / "results" / f"merge_memory_{args.device}.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
