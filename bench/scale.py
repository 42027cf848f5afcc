"""Out of core against in memory on a random ViT-B/32 pool (issue 30); writes bench/results/scale_cpu.json.

The skeleton of the issue's scale benchmark, on its first question: read the task vectors lazily from the
checkpoints (engine/store/lazy.py, mergekit's way) or from a store built once in the data home
(engine/store/built.py, float32 and bfloat16)? A random ViT-B-32 pool of K = 8 fine-tunes is written once as
mergelab safetensors + sidecars (bench/pool_load.py's `converted` case) in `--work`; then each part runs in a
fresh process that opens the pool one way and walks every column block of every task row (1 Mi columns a
block), computing task arithmetic θ₀ + 0.3·Σₜ τₜ through `store.block`: the flat kernels' access pattern.
Each part's files (checkpoints, store) are dropped from the page cache first (posix_fadvise DONTNEED on our
own files only), so every part reads from disk.

Per part: open seconds (open_clip imported before the clock, as bench/pool_load.py does), walk seconds,
VmHWM and RssAnon at the end (peak resident size and the anonymous part of it), the merged vector's float64
sum (equal across the exact backings). Ratios are taken within one run.
Resumable by part: parts already in the JSON are kept unless `--redo`; the pool stays in `--work` until
`--clean`.

    python bench/scale.py [--work /tmp/mergelab-scale] [--parts pool memory lazy built_first built ...] [--clean]

`--merge-rss K [K ...]` measures the issue's goal instead (key `merge_rss`): `python -m engine merge --eval val` of
task arithmetic, TIES, TSV-M and Iso-C on random ViT-B/32 pools of K tasks (written one checkpoint at a time, two
32-px images per class), in memory and from a built float32 store, each in a fresh process whose VmHWM and peak
RssAnon (sampled every 20 ms) are recorded, in MiB and in model sizes (P·4 bytes), with a least-squares slope
and intercept over K per method and store.

    python bench/scale.py --merge-rss 4 8 [--work /tmp/mergelab-scale]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "scale_cpu.json"
PARTS = ("pool", "memory", "lazy", "built_first", "built", "built_bf16_first", "built_bf16")
BLOCK = 1 << 20  # columns per block

PART = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
import torch
from engine.pool.collection import built_task_store, lazy_task_store, load_collection, task_matrix
from engine.store import column_blocks
from bench.scale import status, walk
import open_clip  # imported by any process that evaluates (the shape check builds a model): not open time
folder, stores, part = Path({folder!r}), Path({stores!r}), {part!r}
collection = load_collection(folder).with_verified(folder.parent / "verified")
start = time.perf_counter()
if part == "memory":
    store = task_matrix(collection)
elif part == "lazy":
    store = lazy_task_store(collection)
else:
    store = built_task_store(collection, stores, dtype="bfloat16" if "bf16" in part else "float32")
opened = time.perf_counter() - start
start = time.perf_counter()
merged = walk(store, {block})
walked = time.perf_counter() - start
print(json.dumps({{"open_s": opened, "walk_s": walked, "sum": float(merged.double().sum()), **status()}}))
"""


def status() -> dict:
    """VmHWM (peak resident) and RssAnon / RssFile now, in MiB, from /proc/self/status."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "RssFile"):
            fields[f"{key}_mib"] = int(value.split()[0]) / 1024
    return fields


def walk(store, block: int):
    """θ₀ + 0.3·Σₜ τₜ [P], read one column block of every task row at a time through `store.block`."""
    import torch

    from engine.store import column_blocks

    rows = tuple(range(len(store.task_names)))
    merged = torch.empty_like(store.theta0)  # [P]
    buffer = torch.empty(len(rows), block)  # [K, c] reused
    for cols in column_blocks(store.spec.numel, block):
        part = store.block(rows, cols, out=buffer[:, : cols.stop - cols.start])  # [K, c]
        torch.add(store.theta0[cols], part.sum(dim=0), alpha=0.3, out=merged[cols])
    return merged


def drop_cache(folder: Path) -> None:
    """Drop our own files under `folder` from the page cache, so the next part reads them from disk."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run_part(part: str, work: Path) -> dict:
    folder, stores = work / "pool", work / "stores"
    if part == "pool":
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "pool_load.py"), "--write", "converted", str(folder)], check=True
        )
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        return {"write_s": time.perf_counter() - start, "bytes": size}
    if part in ("built_first", "built_bf16_first"):
        for old in stores.glob(f"*.{'bfloat16' if 'bf16' in part else 'float32'}.taskstore"):
            old.unlink()
    drop_cache(work)
    code = PART.format(root=str(ROOT), folder=str(folder), stores=str(stores), part=part, block=BLOCK)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


MERGE_METHODS = {"task_arithmetic": [], "ties": ["--param", "density=0.2"], "tsv_m": [], "iso_c": []}
MERGE_STORES = ("memory", "built")
MERGE_RUN = r"""
import json, sys, threading, time
sys.path.insert(0, {root!r})
from bench.scale import status
peak = {{"RssAnon_mib": 0.0, "RssFile_mib": 0.0}}
def sample():
    while True:
        now = status()
        for key in peak:
            peak[key] = max(peak[key], now[key])
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
from engine.cli import main
start = time.perf_counter()
code = main({argv!r})
seconds = time.perf_counter() - start
now = status()
peaks = {{f"peak_{{key}}": max(value, now[key]) for key, value in peak.items()}}
print(json.dumps({{"code": code, "seconds": seconds, **peaks, **now}}))
"""


def write_merge_pool(folder: Path, num_tasks: int) -> None:
    """A random ViT-B/32 pool of `num_tasks` fine-tunes, written one checkpoint at a time (seeded per task), with
    two 32-px images per class per split: what `merge --eval val` opens."""
    import torch

    sys.path.insert(0, str(ROOT))
    from tests.foreign import random_pool, write_image_folders, write_pool

    pretrained, _, _ = random_pool("ViT-B-32", ())
    visual = {k.removeprefix("visual."): v for k, v in pretrained.items() if k.startswith("visual.")}
    tasks = tuple(f"task{i}" for i in range(num_tasks))
    for i, task in enumerate(tasks):
        generator = torch.Generator().manual_seed(1000 + i)
        state = {k: v + 1e-3 * torch.randn(v.shape, generator=generator) for k, v in visual.items()}
        write_pool(
            folder, "open_clip", architecture="ViT-B-32", pretrained=pretrained, finetuned={task: state}, heads={}
        )
    write_image_folders(folder, dict.fromkeys(tasks, ("cat", "dog")), per_class=2, size=32)


def merge_rss(work: Path, num_tasks: int, store: str, method: str) -> dict:
    """One `python -m engine merge --eval val` in a fresh process: its seconds, VmHWM and peak RssAnon."""
    folder, home = work / f"merge-pool-{num_tasks}", work / f"merge-home-{num_tasks}"
    if not folder.exists():
        write_merge_pool(folder, num_tasks)
    argv = ["merge", "--collection", str(folder), "--method", method, *MERGE_METHODS[method], "--eval", "val"]
    argv += ["--store", store, "--out", f"{method}-{store}"]
    code = MERGE_RUN.format(root=str(ROOT), argv=argv)
    shutil.rmtree(home / "cache" / "merge_parts", ignore_errors=True)  # each run computes its SVDs (the store stays)
    env = {**os.environ, "MERGELAB_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def merge_fits(runs: dict, model_mib: float) -> dict:
    """Per store and method: the least-squares line of VmHWM and of peak RssAnon over K, in model sizes."""
    fits: dict = {}
    for store in MERGE_STORES:
        for method in MERGE_METHODS:
            points = [(int(k[1:]), r) for k, by in runs.items() if (r := by.get(store, {}).get(method))]
            if len(points) < 2:
                continue
            fits.setdefault(store, {})[method] = {
                key: _line([k for k, _ in points], [r[key] / model_mib for _, r in points])
                for key in ("VmHWM_mib", "peak_RssAnon_mib")
            }
    return fits


def _line(xs: list[int], ys: list[float]) -> dict:
    n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return {"slope_per_task": round(slope, 3), "intercept": round(my - slope * mx, 3), "points": n}


def run_merge_rss(work: Path, counts: list[int], document: dict, *, redo: bool) -> None:
    runs = document.setdefault("merge_rss", {}).setdefault("runs", {})
    model_mib = 87_849_216 * 4 / 2**20  # ViT-B/32's image tower, float32
    for num_tasks in counts:
        for store in MERGE_STORES:
            for method in MERGE_METHODS:
                by_store = runs.setdefault(f"K{num_tasks}", {}).setdefault(store, {})
                if method in by_store and not redo:
                    continue
                by_store[method] = {**merge_rss(work, num_tasks, store, method), "load_at_start": os.getloadavg()[0]}
                document["merge_rss"]["model_size_mib"] = round(model_mib, 1)
                document["merge_rss"]["fits_in_model_sizes"] = merge_fits(runs, model_mib)
                OUT.write_text(json.dumps(document, indent=1) + "\n")
                print(num_tasks, store, method, by_store[method], flush=True)


def ratios(parts: dict) -> dict:
    def ratio(a: str, b: str, key: str) -> float | None:
        return parts[a][key] / parts[b][key] if a in parts and b in parts else None

    return {
        "lazy_walk_over_built_walk": ratio("lazy", "built", "walk_s"),
        "lazy_walk_over_memory_walk": ratio("lazy", "memory", "walk_s"),
        "built_walk_over_memory_walk": ratio("built", "memory", "walk_s"),
        "built_bf16_walk_over_built_walk": ratio("built_bf16", "built", "walk_s"),
        "built_first_open_over_memory_open": ratio("built_first", "memory", "open_s"),
        "built_open_over_memory_open": ratio("built", "memory", "open_s"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "mergelab-scale")
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=PARTS)
    parser.add_argument("--redo", action="store_true", help="measure the parts again even if recorded")
    parser.add_argument("--clean", action="store_true", help="delete the pool and stores afterwards")
    parser.add_argument("--merge-rss", nargs="+", type=int, metavar="K", help="the merge command's memory at these K")
    args = parser.parse_args()
    document = json.loads(OUT.read_text()) if OUT.exists() else {"parts": {}}
    if args.merge_rss:
        run_merge_rss(args.work, args.merge_rss, document, redo=args.redo)
        return
    document["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "arch": "ViT-B-32", "K": 8}
    for part in args.parts:
        if part in document["parts"] and not args.redo and part != "pool":
            continue
        if part == "pool" and (args.work / "pool").exists():
            continue
        document["parts"][part] = {**run_part(part, args.work), "load_at_start": os.getloadavg()[0]}
        document["ratios"] = ratios(document["parts"])
        OUT.write_text(json.dumps(document, indent=1) + "\n")  # after each part: a killed run resumes
        print(part, document["parts"][part], flush=True)
    if args.clean:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
