"""Trials per second of a sweep on the demo zoo (issue "Sweeps and coefficient searches ... on Ray"): in
process, on a local Ray cluster with 1 worker and with 2; writes bench/results/ray_trials_cpu.json.

Every trial is one task-arithmetic merge of the zoo's 8 tasks and its evaluation on val. Each backend first
runs one warm-up trial per worker (a worker's first trial builds its split's features), then `trials` timed
ones at λ values none of them has seen, in interleaved rounds (the shared machine's load drifts; medians are
reported). Ray's overhead per trial is the driver's wall time per trial, times the number of workers, less
the workers' own time per merge and evaluation. A Ray worker gets its share of the cores (1 worker: both,
2 workers: one each). With `--search`, a seeded TPE search over per-task λ (on the 2 workers) is reported
beside the global-λ grid and TA at the zoo's best λ.

With `--vit-b32`, only the time t of one search trial on a random ViT-B/32 (QuickGELU) pool of 1 + K = 8
checkpoints (tests/foreign.py's, written in a child process, with `--images` random val images per task):
one task-arithmetic merge at a per-task λ, as `search` asks it, and one evaluation of every task's val
images, in process on `--device`. The merge is also timed alone, so t can be projected to other image counts
(t = merge + K·n·per image). It is written under the key "vit_b32" of ray_trials_<cpu|gpu>.json.

    python bench/ray_trials.py [--trials 8] [--rounds 3] [--search 48]
    python bench/ray_trials.py --vit-b32 [--images 16] [--trials 3] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(evaluator, tasks: tuple[str, ...], lams: list[float]) -> dict:
    from engine.search.outcome import run_batch
    from engine.search.trials import TrialRequest

    requests = [TrialRequest(i, "task_arithmetic", tasks, {"lam": lam}) for i, lam in enumerate(lams)]
    start = time.perf_counter()
    results = run_batch(evaluator, requests, on_trial=lambda _r: None, stop=lambda: False)
    wall = time.perf_counter() - start
    per_trial = statistics.mean(r.seconds for r in results)
    overhead = wall * evaluator.workers / len(results) - per_trial
    return {
        "workers": evaluator.workers,
        "trials": len(results),
        "wall_s": round(wall, 3),
        "trials_per_s": round(len(results) / wall, 4),
        "trial_s": round(per_trial, 4),  # one merge + evaluation, as the worker timed it
        "overhead_per_trial_s": round(overhead, 4),
        "overhead_share": round(overhead / per_trial, 4),
        "mean_normalized": [round(r.mean_normalized, 6) for r in results],
    }


def summary(rounds: list[dict]) -> dict:
    """Medians over the rounds, with each round's trials per second."""
    keys = ("trials_per_s", "trial_s", "overhead_per_trial_s", "overhead_share", "workers_open_s")
    found = {k: round(statistics.median(r[k] for r in rounds), 4) for k in keys if k in rounds[0]}
    return {"workers": rounds[0]["workers"], **found, "per_round_trials_per_s": [r["trials_per_s"] for r in rounds]}


def main(trials: int, rounds: int, search: int) -> None:
    from engine.home import ASSETS_DIR
    from engine.search.ray_trials import RayEvaluator, WorkerSpec, connect
    from engine.search.ref import WorkspaceRef
    from engine.search.trials import LocalEvaluator
    from engine.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MERGELAB_HOME"] = tmp
        ws = Workspace.open(ASSETS_DIR / "zoo", cache_dir=Path(tmp) / "cache")
        tasks = ws.task_names
        local = LocalEvaluator(ws)
        warm_up(local, tasks)
        connect("local", num_cpus=2)
        spec = WorkerSpec(WorkspaceRef.of(ws), home=tmp)
        measured = measure_rounds(local, spec, tasks, trials=trials, rounds=rounds)
        same = all(
            measured["local"][r]["mean_normalized"] == m[r]["mean_normalized"]
            for m in measured.values()
            for r in range(rounds)
        )
        results = {name: summary(rounds_measured) for name, rounds_measured in measured.items()}
        out = {
            "benchmark": "sweep trials per second on the demo zoo (8 tasks, task arithmetic, val), CPU",
            "machine": f"{os.cpu_count()} cores, shared with other work (load average {os.getloadavg()[0]:.1f})",
            "rounds": rounds,
            "trials_per_round": trials,
            "results": results,
            "same_results_everywhere": same,
            "speedup_2_vs_1_workers": round(results["ray_2"]["trials_per_s"] / results["ray_1"]["trials_per_s"], 3),
            "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if search:
            out["search_vs_grid"] = search_vs_grid(RayEvaluator(spec, workers=2), tasks, search)
    (ROOT / "bench" / "results" / "ray_trials_cpu.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


VIT_TASKS, VIT_CLASSES = tuple(f"task{i}" for i in range(8)), ("cat", "dog")


def write_vit_b32_pool(folder: Path, images_per_task: int) -> None:
    """Runs in its own process (`--write-pool`): the parent that measures never holds the random weights."""
    from tests.foreign import random_pool, write_image_folders, write_pool

    pretrained, finetuned, heads = random_pool("ViT-B-32", VIT_TASKS, num_classes=len(VIT_CLASSES))
    write_pool(folder, "open_clip", architecture="ViT-B-32", pretrained=pretrained, finetuned=finetuned, heads=heads)
    del pretrained, finetuned
    per_class = max(1, images_per_task // len(VIT_CLASSES))
    write_image_folders(folder, {t: VIT_CLASSES for t in VIT_TASKS}, per_class=per_class, size=32)
    os.sync()  # no writeback of the fresh files while the parent reads them


def warm_up(evaluator, tasks: tuple[str, ...]) -> None:
    """One untimed trial per worker: each worker's first trial opens and evaluates what later ones reuse."""
    from engine.search.outcome import run_batch
    from engine.search.trials import TrialRequest

    requests = [TrialRequest(i, "task_arithmetic", tasks, {"lam": 0.9 + 0.01 * i}) for i in range(evaluator.workers)]
    run_batch(evaluator, requests, on_trial=lambda _r: None, stop=lambda: False)


def measure_rounds(local, spec, tasks: tuple[str, ...], *, trials: int, rounds: int) -> dict[str, list[dict]]:
    """Per backend (in process, Ray with 1 and 2 workers), each round's timed trials; the backends take turns
    within a round (the shared machine's load changes over minutes), Ray's workers opened afresh each round."""
    from engine.search.ray_trials import RayEvaluator

    measured: dict[str, list[dict]] = {"local": [], "ray_1": [], "ray_2": []}
    for r in range(rounds):
        lams = [round(0.2 + 0.4 * (r * trials + i) / (rounds * trials), 5) for i in range(trials)]
        measured["local"].append(timed(local, tasks, lams))
        for workers in (1, 2):
            started = time.perf_counter()
            evaluator = RayEvaluator(spec, workers=workers)
            opened = time.perf_counter() - started
            warm_up(evaluator, tasks)
            measured[f"ray_{workers}"].append({**timed(evaluator, tasks, lams), "workers_open_s": round(opened, 2)})
            evaluator.close()
    return measured


def search_vs_grid(evaluator, tasks: tuple[str, ...], search: int) -> dict:
    """On `evaluator` (closed after): a seeded TPE search of per-task λ against the global λ grid 0:1:21 (its
    best re-evaluated on test) and the zoo report's task arithmetic row."""
    from engine.home import ASSETS_DIR
    from engine.search.coefficients import SearchSpace, coefficient_search
    from engine.search.grid import grid_sweep
    from engine.search.outcome import run_batch
    from engine.search.trials import TrialRequest

    space = SearchSpace("task_arithmetic", tasks)
    found = coefficient_search(evaluator, space, strategy="tpe", trials=search, batch=8, seed=0)
    grid = grid_sweep(evaluator, method="task_arithmetic", tasks=tasks, axes=[("lam", lams_grid())])
    best_on_test = TrialRequest(0, "task_arithmetic", tasks, dict(grid.best.params), "test")
    test = run_batch(evaluator, [best_on_test], on_trial=lambda _r: None, stop=lambda: False)[0]
    evaluator.close()
    report = json.loads((ASSETS_DIR / "zoo" / "report.json").read_text())
    ta = next(r for r in report["methods"]["results"] if r["method"] == "task_arithmetic")
    return {
        "tpe_per_task_lam": {
            "trials": search,
            "batch": 8,
            "seed": 0,
            "best_lam": [round(v, 4) for v in found.best.params["lam"]],
            "val_mean_normalized": round(found.best.mean_normalized, 4),
            "test_mean_normalized": round(found.test.mean_normalized, 4),
        },
        "global_lam_grid": {
            "values": "0:1:21",
            "best_lam": grid.best.params["lam"],
            "val_mean_normalized": round(grid.best.mean_normalized, 4),
            "test_mean_normalized": round(test.mean_normalized, 4),
        },
        "zoo_report_ta": {
            "lam": ta["params"]["lam"],
            "val_mean_normalized": round(ta["val_mean_normalized"], 4),
            "test_mean_normalized": round(ta["test_mean_normalized"], 4),
        },
    }


def vit_b32(images_per_task: int, trials: int, device: str) -> dict:
    """One search trial's merge and evaluation on a ViT-B/32 pool, after a warm-up trial (which also
    evaluates the zero-shot and fine-tuned baselines every later trial is normalized by)."""

    from engine.home import DataHome
    from engine.pool.access import open_for_user
    from engine.search.trials import TrialRequest, evaluate_trial
    from engine.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        home, pool = DataHome(Path(tmp) / "home").ensure(), Path(tmp) / "pool"
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--write-pool", str(pool), "--images", str(images_per_task)], check=True
        )
        written = time.perf_counter() - started
        started = time.perf_counter()
        collection = open_for_user(pool, home=home, policy=DataHome.shell_policy())
        ws = Workspace.from_collection(collection, cache_dir=home.cache, device=device)
        opened = time.perf_counter() - started
        tasks, rng = ws.task_names, random.Random(0)
        n_val = len(ws.suite.tasks[tasks[0]].split("val").labels)
        request = lambda i: TrialRequest(i, "task_arithmetic", tasks, {"lam": [rng.uniform(0, 1) for _ in tasks]})
        started = time.perf_counter()
        evaluate_trial(ws, request(0))
        warm = time.perf_counter() - started
        trial_s, merge_s = [], []
        for i in range(1, trials + 1):
            trial_s.append(evaluate_trial(ws, request(i)).seconds)
            merge_s.append(_merge_seconds(ws, {"lam": [rng.uniform(0, 1) for _ in tasks]}, device))
        t, merge = statistics.median(trial_s), statistics.median(merge_s)
        images = len(tasks) * n_val
    return {
        "pool": "random ViT-B-32 (QuickGELU), 1 pretrained + 8 fine-tuned, open_clip safetensors",
        "device": device,
        "val_images_per_task": n_val,
        "val_images_per_trial": images,
        "trials": trials,
        "trial_s": round(t, 3),  # one per-task-λ merge + the evaluation of every task's val images
        "per_round_trial_s": [round(x, 3) for x in trial_s],
        "merge_s": round(merge, 3),
        "eval_per_image_s": round((t - merge) / images, 4),
        "first_trial_s": round(warm, 2),  # and the baselines (fine-tuned, zero-shot) on val
        "workspace_open_s": round(opened, 1),  # what each Ray worker pays once per sweep
        "pool_write_s": round(written, 1),
        "machine": f"{os.cpu_count()} cores, shared with other work (load average {os.getloadavg()[0]:.1f})",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _merge_seconds(ws, params: dict, device: str) -> float:
    """One task-arithmetic merge of every task at `params`, timed to its end on the device."""
    import torch

    started = time.perf_counter()
    ws.merge(ws.task_names, "task_arithmetic", params)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def lams_grid() -> tuple[float, ...]:
    return tuple(round(i / 20, 4) for i in range(21))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="timed trials per backend and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--search", type=int, default=48, help="TPE trials (0: leave the search out)")
    parser.add_argument("--vit-b32", action="store_true", help="only a search trial's time on a ViT-B/32 pool")
    parser.add_argument("--images", type=int, default=16, help="val images per task of the ViT-B/32 pool")
    parser.add_argument("--device", default="cpu", help="the ViT-B/32 trial's device (cpu, cuda)")
    parser.add_argument("--write-pool", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_pool:
        write_vit_b32_pool(args.write_pool, args.images)
    elif args.vit_b32:
        path = ROOT / "bench" / "results" / f"ray_trials_{'cpu' if args.device == 'cpu' else 'gpu'}.json"
        out = json.loads(path.read_text()) if path.is_file() else {}
        out["vit_b32"] = vit_b32(args.images, args.trials, args.device)
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(out["vit_b32"], indent=2))
    else:
        main(args.trials, args.rounds, args.search)
