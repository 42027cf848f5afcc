"""Throughput of mergelab's evaluation against a bare open_clip forward of the same batches, float32 and bfloat16
(issue 38, "Evaluation at benchmark scale"); writes bench/results/benchmark_eval_<cpu|gpu>.json.

On a random ViT-B/32 image tower (open_clip's own initialisation; the speed of a forward does not depend on the
weights' values) and random 224 × 224 uint8 images, in the same run, interleaved in rounds (the shared machine's
load drifts; medians are reported, and the load average before and after):
- mergelab: `engine.eval.evaluate.encode_images` (normalisation, `functional_call` on the flat vector's views,
  L2 normalisation), `precision` float32 and bfloat16;
- bare: `visual(normalize(x))` on a module with the weights loaded, float32, the module converted to bfloat16, and
  float32 under `torch.autocast` bfloat16 (autocast alone, for comparison).
Ratios (mergelab / bare, bf16 / fp32) are the numbers to read; images/s only hold for this run's load. The cosine
of bf16 against fp32 features is the lowest over the images. `preprocess_s_per_image` is what normalisation with a
resize from 32 × 32 (MNIST-, CIFAR-sized tasks) costs per image on the main thread, beside a forward's cost.

    python bench/benchmark_eval.py [--images 128] [--batch 64] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.data.tasks import LabelledImages, TaskData, normalize_batch  # noqa: E402
from engine.eval.evaluate import encode_images  # noqa: E402
from engine.eval.suite import EvalSuite  # noqa: E402
from engine.models import create_visual, preprocess_of  # noqa: E402
from engine.params import ParamSpec, flatten  # noqa: E402

ARCHITECTURE = "ViT-B-32"


def build(images: int, device: str) -> tuple[EvalSuite, torch.Tensor, torch.Tensor, torch.nn.Module]:
    """The suite mergelab evaluates with, its flat vector θ [P], the images [N, 3, 224, 224] and a bare module."""
    torch.manual_seed(0)
    visual = create_visual(ARCHITECTURE, device=device).eval()
    spec = ParamSpec.from_state_dict(visual.state_dict())
    theta = flatten(visual.state_dict(), spec)  # [P]
    pre = preprocess_of(visual)
    x = torch.randint(0, 256, (images, 3, pre.image_size, pre.image_size), dtype=torch.uint8, device=device)
    labels = torch.zeros(images, dtype=torch.int64, device=device)
    task = TaskData("random", ("a", "b"), ("{}",), {"test": LabelledImages(x, labels)})
    head = F.normalize(torch.randn(2, visual.output_dim, device=device), dim=-1)  # [2, E]
    suite = EvalSuite(
        visual=create_visual(ARCHITECTURE, device=device),
        spec=spec,
        preprocess=pre,
        tasks={"random": task},
        heads={"random": head},
    )
    return suite, theta, x, visual


@torch.no_grad()
def bare(
    visual: torch.nn.Module, suite: EvalSuite, images: torch.Tensor, batch: int, *, dtype, autocast: bool
) -> torch.Tensor:
    """A plain open_clip forward of the same batches: features [N, E], L2-normalised, float32."""
    out = []
    for start in range(0, images.shape[0], batch):
        x = normalize_batch(images[start : start + batch], suite.preprocess).to(dtype)  # [B, 3, S, S]
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
            out.append(F.normalize(visual(x).float(), dim=-1))
    return torch.cat(out)  # [N, E]


def timed(run, device: str) -> tuple[float, torch.Tensor]:
    started = time.perf_counter()
    feats = run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started, feats


def main(images: int, batch: int, rounds: int, device: str) -> dict:
    load_before = os.getloadavg()
    suite, theta, x, visual = build(images, device)
    bf16_visual = create_visual(ARCHITECTURE, device=device).eval()
    bf16_visual.load_state_dict(visual.state_dict())
    bf16_visual = bf16_visual.to(torch.bfloat16)
    runs = {
        "mergelab_float32": lambda: encode_images(theta, suite, x, batch_size=batch, precision="float32"),
        "mergelab_bfloat16": lambda: encode_images(theta, suite, x, batch_size=batch, precision="bfloat16"),
        "bare_float32": lambda: bare(visual, suite, x, batch, dtype=torch.float32, autocast=False),
        "bare_bfloat16": lambda: bare(bf16_visual, suite, x, batch, dtype=torch.bfloat16, autocast=False),
        "bare_autocast_bfloat16": lambda: bare(visual, suite, x, batch, dtype=torch.float32, autocast=True),
    }
    seconds, feats = interleaved(runs, rounds, device)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    per_s = {name: round(images / s, 2) for name, s in median.items()}
    cosine = lambda a, b: round(float((feats[a] * feats[b]).sum(dim=-1).min()), 6)
    return {
        "benchmark": "image-tower evaluation: mergelab (encode_images) vs a bare open_clip forward of the same batches",
        "architecture": f"{ARCHITECTURE} image tower, random weights, 224 x 224 uint8 images",
        "device": device,
        "images": images,
        "batch": batch,
        "rounds": rounds,
        "images_per_s": per_s,
        "seconds_per_round": {name: [round(v, 3) for v in s] for name, s in seconds.items()},
        "ratios": {
            "mergelab_over_bare_float32": round(per_s["mergelab_float32"] / per_s["bare_float32"], 3),
            "mergelab_over_bare_bfloat16": round(per_s["mergelab_bfloat16"] / per_s["bare_bfloat16"], 3),
            "mergelab_bf16_speedup": round(per_s["mergelab_bfloat16"] / per_s["mergelab_float32"], 3),
            "bare_bf16_speedup": round(per_s["bare_bfloat16"] / per_s["bare_float32"], 3),
            "bare_autocast_speedup": round(per_s["bare_autocast_bfloat16"] / per_s["bare_float32"], 3),
        },
        "min_cosine_bf16_vs_fp32": {
            "mergelab": cosine("mergelab_bfloat16", "mergelab_float32"),
            "bare": cosine("bare_bfloat16", "bare_float32"),
            "mergelab_fp32_vs_bare_fp32": cosine("mergelab_float32", "bare_float32"),
        },
        "preprocess_s_per_image": preprocess_cost(suite, batch, device),
        "cpu_bf16_units": _cpu_flags(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{os.cpu_count()} cores, shared with other work",
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def interleaved(runs: dict, rounds: int, device: str) -> tuple[dict[str, list[float]], dict[str, torch.Tensor]]:
    """Each run's seconds per round, the runs interleaved within a round (the machine's load drifts over
    minutes), after one warm-up pass each (oneDNN's kernel choice, the allocator); and each run's features."""
    for run in runs.values():
        timed(lambda run=run: run(), device)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    feats = {}
    for _ in range(rounds):
        for name, run in runs.items():
            s, feats[name] = timed(run, device)
            seconds[name].append(s)
    return seconds, feats


def preprocess_cost(suite: EvalSuite, batch: int, device: str) -> dict:
    """Seconds per image of `normalize_batch` for 32 × 32 images (bicubic antialiased resize to 224) and 224 ones."""
    out = {}
    for side in (32, 224):
        x = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8, device=device)
        normalize_batch(x, suite.preprocess)
        started = time.perf_counter()
        for _ in range(3):
            normalize_batch(x, suite.preprocess)
        out[f"from_{side}"] = round((time.perf_counter() - started) / (3 * batch), 6)
    return out


def _cpu_flags() -> list[str]:
    from engine.eval.evaluate import CPU_BF16_FLAGS

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split() for line in text.splitlines() if line.startswith("flags")), [])
    return [f for f in CPU_BF16_FLAGS if f in flags]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    result = main(args.images, args.batch, args.rounds, args.device)
    path = ROOT / "bench" / "results" / f"benchmark_eval_{'cpu' if args.device == 'cpu' else 'gpu'}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
