"""LoRA adapters kept as factors against the same pool densified (issue 36): bench/results/lora_cpu.json.

A random ViT-B/32 CLIP is the base; each of `--tasks` (default 8) tasks is a rank-16 PEFT adapter (α = 16, the KnOTS
benchmark's setting) on q, k, v and out of every block, written by mergelab's PEFT exporter with random factors
(B ~ 0.01·N(0, 1), A ~ N(0, 1)/√in). Each run is `python -m engine merge` of the pool in a fresh process, by task
arithmetic (λ = 0.3) and KnOTS-TIES (d = 0.2, λ = 0.6, its public configuration), with `--store memory` (every
adapter densified into T [K, P] as it is read) or `--store factored` (engine/store/factored.py: the factors kept,
densified a block or a layer at a time); its seconds (open, merge and export of the merged checkpoint), VmHWM and
peak RssAnon (sampled every 20 ms) are recorded, and the factored run's against the memory run's as ratios taken
in the same run. Also: the adapters' bytes on disk against T's float32 bytes. The merged checkpoints of the two
stores are compared (largest absolute difference).

    python bench/lora.py [--work /tmp/mergelab-lora] [--tasks 8] [--redo] [--clean]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.scale import MERGE_RUN  # noqa: E402

OUT = ROOT / "bench" / "results" / "lora_cpu.json"
RANK = 16
METHODS = {"task_arithmetic": ["--param", "lam=0.3"], "knots_ties": ["--param", "density=0.2", "--param", "lam=0.6"]}
STORES = ("memory", "factored")


def write_pool(folder: Path, num_tasks: int) -> None:
    """The base CLIP as pretrained.safetensors and one PEFT adapter folder per task under finetuned/."""
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT))
    from engine.io.formats.peft_export import export_lora_adapter
    from tests.foreign import random_pool, write_image_folders

    pretrained, _, _ = random_pool("ViT-B-32", ())
    (folder / "finetuned").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in pretrained.items()}, str(folder / "pretrained.safetensors"))
    visual = {k.removeprefix("visual."): v for k, v in pretrained.items() if k.startswith("visual.")}
    tasks = tuple(f"task{i}" for i in range(num_tasks))
    for i, task in enumerate(tasks):
        generator = torch.Generator().manual_seed(2000 + i)
        factors = {}
        for name, weight in visual.items():
            if ".attn.in_proj_weight" in name or ".attn.out_proj.weight" in name:
                width = weight.shape[1]
                for row in range(0, weight.shape[0], width):  # q, k, v: one pair each; out_proj: one
                    up = 0.01 * torch.randn(width, RANK, generator=generator)  # [out, r]
                    down = torch.randn(RANK, width, generator=generator) / width**0.5  # [r, in]
                    factors[(name, row, width)] = (up, down)
        export_lora_adapter(factors, folder / "finetuned" / task, base_model="ViT-B-32")
    write_image_folders(folder, dict.fromkeys(tasks, ("cat", "dog")), per_class=2, size=32)


def merge_run(folder: Path, home: Path, method: str, store: str) -> dict:
    """One `merge` in a fresh process: its seconds, VmHWM and peak RssAnon (MiB)."""
    argv = ["merge", "--collection", str(folder), "--method", method, *METHODS[method], "--store", store]
    argv += ["--out", f"{method}-{store}"]
    env = {**os.environ, "MERGELAB_HOME": str(home)}
    shutil.rmtree(home / "cache" / "merge_parts", ignore_errors=True)  # each run computes its parts (KnOTS' SVDs)
    code = MERGE_RUN.format(root=str(ROOT), argv=argv)  # bench/scale.py's: seconds, VmHWM, peak Rss sampled
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"merge {method} --store {store} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def largest_difference(home: Path, method: str) -> float:
    """max |θ_memory − θ_factored| over the merged checkpoints of `method`."""
    sys.path.insert(0, str(ROOT))
    from engine.io.checkpoints import load_checkpoint

    a, b = (load_checkpoint(home / "exports" / f"{method}-{s}.safetensors").state for s in STORES)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/mergelab-lora"))
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--redo", action="store_true")
    parser.add_argument("--clean", action="store_true")
    args = parser.parse_args()
    folder, home = args.work / f"pool-{args.tasks}", args.work / f"home-{args.tasks}"
    if not folder.exists():
        start = time.perf_counter()
        write_pool(folder, args.tasks)
        print(f"wrote {folder} in {time.perf_counter() - start:.0f} s", flush=True)
    document = json.loads(OUT.read_text()) if OUT.exists() and not args.redo else {}
    adapters = sum(p.stat().st_size for p in (folder / "finetuned").rglob("adapter_model.safetensors"))
    numel = 87_849_216  # ViT-B/32's image tower
    document.update(
        {
            "machine": f"{platform.node()} {os.cpu_count()} CPUs (2-core CI machine)",
            "pool": f"{args.tasks} rank-{RANK} adapters (q, k, v, out) of a random ViT-B/32",
            "adapter_bytes": adapters,
            "dense_T_bytes": 4 * numel * args.tasks,
        }
    )
    runs = document.setdefault("runs", {})
    for method in METHODS:
        for store in STORES:
            if store in runs.get(method, {}):
                continue
            runs.setdefault(method, {})[store] = {**merge_run(folder, home, method, store), "load": os.getloadavg()[0]}
            print(method, store, runs[method][store], flush=True)
            OUT.write_text(json.dumps(document, indent=1) + "\n")
        pair = runs[method]
        pair["factored_over_memory"] = {
            key: round(pair["factored"][key] / pair["memory"][key], 3)
            for key in ("seconds", "VmHWM_mib", "peak_RssAnon_mib")
        }
        pair["largest_difference"] = largest_difference(home, method)
        OUT.write_text(json.dumps(document, indent=1) + "\n")
    if args.clean:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
