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
task arithmetic, TIES, TSV-M, Iso-C and DARE on random ViT-B/32 pools of K tasks (written one checkpoint at a time, two
32-px images per class), in memory and from a built float32 store, each in a fresh process whose VmHWM and peak
RssAnon and RssFile (sampled every 20 ms) are recorded, in MiB and in model sizes (P·4 bytes), with a
least-squares slope and intercept over K per method and store, held to the issue's goal: a slope ≤ 0.05 model
sizes per task and an intercept ≤ 4 model sizes + what a fresh process opening a K = 1 pool holds (`open_K1`).
Each K's pool and data home are deleted once its runs are done.

    python bench/scale.py --merge-rss 4 8 16 20 [--work /tmp/mergelab-scale] [--redo] [--stores built]
        [--methods tsv_m iso_c]

`--large ViT-L-14 20` (key `large`): the same four merges from a float32 store of 20 random ViT-L/14 fine-tunes
(each written as its image tower in bfloat16, so pool and store fit ~40 GB of disk), peak resident size against
12 GiB, each merge's time against one cold read of the store; the first run builds the store.

    python bench/scale.py --large ViT-L-14 20 [--work /tmp/mergelab-scale]
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


MERGE_METHODS = {
    "task_arithmetic": [],
    "ties": ["--param", "density=0.2"],
    "tsv_m": [],
    "iso_c": [],
    "dare": ["--param", "drop=0.9"],  # its mask drawn block by block out of core (engine/merge/sparsify.py)
}
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


OPEN_RUN = r"""
import json, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from bench.scale import status
from engine.cli import _home_and_policy, _open
from engine.workspace import Workspace
home, policy = _home_and_policy()
collection = _open(Path({folder!r}), home=home, policy=policy)
workspace = Workspace.from_collection(collection, cache_dir=home.cache)
print(json.dumps({{"tasks": len(workspace.task_names), **status()}}))
"""


def open_rss(work: Path) -> dict:
    """The baseline of the goal's intercept: VmHWM and RssAnon of a fresh process that opens a K = 1 pool as
    the merge command does (the CLI's imports, the collection, its Workspace in memory), merging nothing."""
    folder, home = work / "merge-pool-1", work / "merge-home-1"
    if not folder.exists():
        write_merge_pool(folder, 1)
    code = OPEN_RUN.format(root=str(ROOT), folder=str(folder))
    env = {**os.environ, "MERGELAB_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


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


def write_large_pool(folder: Path, num_tasks: int, architecture: str) -> None:
    """A random pool of `num_tasks` fine-tunes of `architecture` that fits the disk beside its float32 store:
    a full CLIP pretrained (float32, its text tower builds the heads) and each fine-tune as its image tower
    alone in bfloat16 (half the bytes; the store widens it to float32), one checkpoint at a time."""
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT))
    from tests.foreign import random_pool, write_image_folders

    pretrained, _, _ = random_pool(architecture, ())
    (folder / "finetuned").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in pretrained.items()}, str(folder / "pretrained.safetensors"))
    visual = {k: v for k, v in pretrained.items() if k.startswith("visual.")}
    tasks = tuple(f"task{i}" for i in range(num_tasks))
    for i, task in enumerate(tasks):
        generator = torch.Generator().manual_seed(1000 + i)
        state = {k: (v + 1e-3 * torch.randn(v.shape, generator=generator)).bfloat16() for k, v in visual.items()}
        save_file(state, str(folder / "finetuned" / f"{task}.safetensors"))
    write_image_folders(folder, dict.fromkeys(tasks, ("cat", "dog")), per_class=2, size=32)


def merge_rss(work: Path, num_tasks: int, store: str, method: str, *, architecture: str = "ViT-B-32") -> dict:
    """One `python -m engine merge --eval val` in a fresh process: its seconds, VmHWM and peak RssAnon."""
    name = f"{num_tasks}" if architecture == "ViT-B-32" else f"{architecture}-{num_tasks}"
    folder, home = work / f"merge-pool-{name}", work / f"merge-home-{name}"
    if not folder.exists():
        start = time.perf_counter()
        write_merge_pool(folder, num_tasks) if architecture == "ViT-B-32" else write_large_pool(
            folder, num_tasks, architecture
        )
        print(f"wrote {folder} in {time.perf_counter() - start:.0f} s", flush=True)
    argv = ["merge", "--collection", str(folder), "--method", method, *MERGE_METHODS[method], "--eval", "val"]
    argv += ["--store", store, "--out", f"{method}-{store}"]
    code = MERGE_RUN.format(root=str(ROOT), argv=argv)
    shutil.rmtree(home / "cache" / "merge_parts", ignore_errors=True)  # each run computes its SVDs (the store stays)
    env = {**os.environ, "MERGELAB_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def merge_fits(runs: dict, model_mib: float, opened: dict | None) -> dict:
    """Per store and method: the least-squares line of VmHWM and of peak RssAnon over K, in model sizes, and
    whether it meets the issue's goal: a slope ≤ 0.05 and an intercept ≤ 4 + the K = 1 open (`opened`)."""
    fits: dict = {}
    for store in MERGE_STORES:
        for method in MERGE_METHODS:
            points = [(int(k[1:]), r) for k, by in runs.items() if (r := by.get(store, {}).get(method))]
            if len(points) < 2:
                continue
            fits.setdefault(store, {})[method] = {
                key: _goal(
                    _line([k for k, _ in points], [r[key] / model_mib for _, r in points]),
                    None if opened is None else opened[base] / model_mib,
                )
                for key, base in (("VmHWM_mib", "VmHWM_mib"), ("peak_RssAnon_mib", "RssAnon_mib"))
            }
    return fits


def _goal(line: dict, base: float | None) -> dict:
    if base is None:
        return line
    allowed = round(4 + base, 3)
    met = line["slope_per_task"] <= 0.05 and line["intercept"] <= allowed
    return {**line, "intercept_allowed": allowed, "meets_goal": met}


def _line(xs: list[int], ys: list[float]) -> dict:
    n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return {"slope_per_task": round(slope, 3), "intercept": round(my - slope * mx, 3), "points": n}


def run_merge_rss(
    work: Path, counts: list[int], document: dict, *, redo: bool, stores=MERGE_STORES, methods=tuple(MERGE_METHODS)
) -> None:
    """Each K's runs, then that K's pool and data home deleted (K = 20 alone is ~20 GB), unless a run failed."""
    section = document.setdefault("merge_rss", {})
    runs = section.setdefault("runs", {})
    model_mib = 87_849_216 * 4 / 2**20  # ViT-B/32's image tower, float32
    if redo or "open_K1" not in section:
        section["open_K1"] = open_rss(work)
        print("open K = 1", section["open_K1"], flush=True)
    for num_tasks in counts:
        for store in stores:
            for method in methods:
                by_store = runs.setdefault(f"K{num_tasks}", {}).setdefault(store, {})
                if method in by_store and not redo:
                    continue
                by_store[method] = {**merge_rss(work, num_tasks, store, method), "load_at_start": os.getloadavg()[0]}
                section["model_size_mib"] = round(model_mib, 1)
                section["fits_in_model_sizes"] = merge_fits(runs, model_mib, section.get("open_K1"))
                OUT.write_text(json.dumps(document, indent=1) + "\n")
                print(num_tasks, store, method, by_store[method], flush=True)
        for folder in (work / f"merge-pool-{num_tasks}", work / f"merge-home-{num_tasks}"):
            shutil.rmtree(folder, ignore_errors=True)


def run_large(work: Path, document: dict, *, architecture: str, num_tasks: int, redo: bool) -> None:
    """The issue's large case (key `large`): each method's merge from a float32 store of `num_tasks` fine-tunes
    of `architecture`, the first run paying the store's build (`first_open`: the same merge, timed whole), its
    peak resident size against the goal (12 GiB for 20 × ViT-L/14), and its time against reading its inputs
    once (`read_bound_s`: the store file read cold once, after the runs: reported, not bound)."""
    section = document.setdefault("large", {}).setdefault(f"{architecture}x{num_tasks}", {"runs": {}})
    for method in MERGE_METHODS:
        if method in section["runs"] and not redo:
            continue
        row = merge_rss(work, num_tasks, "built", method, architecture=architecture)
        section["runs"][method] = {**row, "load_at_start": os.getloadavg()[0], "first_open": not section["runs"]}
        section["peak_goal_gib"] = 12.0
        section["meets_goal"] = {m: r["VmHWM_mib"] / 1024 <= 12.0 for m, r in section["runs"].items()}
        OUT.write_text(json.dumps(document, indent=1) + "\n")
        print(architecture, num_tasks, method, section["runs"][method], flush=True)
    stores = list((work / f"merge-home-{architecture}-{num_tasks}").rglob("*.float32.taskstore"))
    if stores and "read_bound_s" not in section:
        section["store_bytes"], section["read_bound_s"] = stores[0].stat().st_size, cold_read_seconds(stores[0])
        for row in section["runs"].values():
            row["over_read_bound"] = round(row["seconds"] / section["read_bound_s"], 2)
        OUT.write_text(json.dumps(document, indent=1) + "\n")


def cold_read_seconds(path: Path) -> float:
    """Seconds to read `path` once from disk (dropped from the page cache first), in 64 MiB reads."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        start = time.perf_counter()
        while os.read(fd, 64 << 20):
            pass
        return round(time.perf_counter() - start, 2)
    finally:
        os.close(fd)


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
    parser.add_argument("--large", nargs=2, metavar=("ARCH", "K"), help="e.g. ViT-L-14 20: the large case")
    parser.add_argument("--stores", nargs="+", default=list(MERGE_STORES), choices=MERGE_STORES)
    parser.add_argument("--methods", nargs="+", default=list(MERGE_METHODS), choices=list(MERGE_METHODS))
    args = parser.parse_args()
    document = json.loads(OUT.read_text()) if OUT.exists() else {"parts": {}}
    if args.large:
        run_large(args.work, document, architecture=args.large[0], num_tasks=int(args.large[1]), redo=args.redo)
        return
    if args.merge_rss:
        run_merge_rss(args.work, args.merge_rss, document, redo=args.redo, stores=args.stores, methods=args.methods)
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
