"""τJp matrix throughput against the bare JVP throughput of the same encoder, and preview latency
(issue "τJp interference map and the instant tangent-space preview").

Same run, same encoder: (1) bare JVP: one tangent, images/s of `torch.func.jvp`; (2) the τJp matrix of
8 task vectors × 8 tasks through `engine.taujp.matrix.taujp_matrix`, expressed as image-vector products/s.
Goal: (2) ≥ 80% of (1). Random ViT-B-32 weights (16 images per task on the CPU, 256 on a GPU) and the
demo zoo. Then the tangent preview's latency per slider move on the zoo (goal ≤ 150 ms on the CPU).
Writes bench/results/taujp_speed_<device>.json.

    python bench/taujp_speed.py [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.merge_bandwidth import timed  # noqa: E402
from engine.eval.suite import EvalSuite  # noqa: E402
from engine.eval.tangent import jvp_features  # noqa: E402
from engine.models import create_visual, pick_device, preprocess_of  # noqa: E402
from engine.params import ParamSpec, flatten  # noqa: E402
from engine.taujp.matrix import taujp_on_images  # noqa: E402


def throughput(suite: EvalSuite, theta0: torch.Tensor, T: torch.Tensor, images: dict, *, device) -> dict:
    """Bare single-tangent JVP img/s and τJp image-vector products/s on the same images."""
    every = torch.cat(list(images.values()))  # [8N, 3, S, S]
    one = T[:1]
    bare = min(timed(lambda: jvp_features(suite, theta0, one, every), device=device, repeats=1))
    names = [f"τ{k}" for k in range(T.shape[0])]
    full = min(
        timed(
            lambda: taujp_on_images(suite, theta0, T, names=names, inputs=images, split="bench"),
            device=device,
            repeats=1,
        )
    )
    products = T.shape[0] * every.shape[0]
    return {
        "images": every.shape[0],
        "bare_jvp_img_per_s": round(every.shape[0] / bare, 2),
        "taujp_products_per_s": round(products / full, 2),
        "taujp_matrix_s": round(full, 3),
        "ratio_to_bare": round((products / full) / (every.shape[0] / bare), 3),
    }


def random_vitb32(device, per_task: int) -> tuple:
    torch.manual_seed(0)
    visual = create_visual("ViT-B-32").to(device).eval()
    spec = ParamSpec.from_state_dict(visual.state_dict())
    theta0 = flatten(visual.state_dict(), spec, device=device)  # [P]
    T = torch.randn(8, spec.numel, device=device) * 1e-3  # [8, P]
    size = preprocess_of(visual).image_size
    images = {
        f"t{i}": torch.randint(0, 256, (per_task, 3, size, size), dtype=torch.uint8, device=device) for i in range(8)
    }
    return EvalSuite(visual, spec, preprocess_of(visual), {}, {}), theta0, T, images


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device")
    args = parser.parse_args()
    device = pick_device(args.device)
    per_task = 256 if device.type == "cuda" else 16
    out = {
        "benchmark": "τJp matrix vs bare JVP, same run",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "goal_ratio_min": 0.8,
        "goal_preview_ms_max": 150,
    }
    out["vit_b_32"] = throughput(*random_vitb32(device, per_task), device=device)

    from engine.home import ASSETS_DIR
    from engine.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(ASSETS_DIR / "zoo", cache_dir=Path(tmp), device=device)
        m = ws.matrix
        images = {t: ws.suite.tasks[t].split("val").images[:128] for t in ws.task_names}
        out["zoo"] = throughput(ws.suite, m.theta0, m.T, images, device=device)
        start = time.perf_counter()
        ws.taujp.tangent_preview()
        out["zoo"]["preview_build_s"] = round(time.perf_counter() - start, 2)
        moves = [{"lam": [0.05 * ((i + k) % 20) for k in range(8)]} for i in range(20)]
        times = []
        for params in moves:
            start = time.perf_counter()
            ws.taujp.preview(ws.task_names, params)
            times.append(time.perf_counter() - start)
        exact = min(timed(lambda: ws.compare(ws.task_names, "task_arithmetic", moves[0]), device=device, repeats=3))
        out["zoo"].update(
            preview_ms_median=round(1000 * sorted(times)[len(times) // 2], 2), exact_eval_ms=round(1000 * exact, 1)
        )
    out["measured"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (ROOT / "bench" / "results" / f"taujp_speed_{device.type}.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
