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
    args = parser.parse_args()
    document = json.loads(OUT.read_text()) if OUT.exists() else {"parts": {}}
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
