"""Flat task-arithmetic merge vs the memory-bandwidth bound and vs a per-key loop (issue: engine core).

Random ViT-B-32 image tower (87.8M parameters), K = 8 task vectors. Every figure is measured in
the same run: the device's copy bandwidth gives the bound (K + 2)·P·4 bytes / bandwidth (read T
and θ₀, write θ), and the ratios compare the flat merge to it and to a per-key loop over the
state dict (what most repositories do). Writes bench/results/merge_bandwidth_<device>.json.

    python bench/merge_bandwidth.py [--device cuda] [--arch ViT-B-32] [--tasks 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.merge import apply  # noqa: E402
from engine.models import create_visual, pick_device  # noqa: E402
from engine.params import ParamSpec, flatten, unflatten  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, *, device: torch.device, repeats: int) -> list[float]:
    fn()  # warm-up
    return [run_once(fn, device) for _ in range(repeats)]


def run_once(fn, device: torch.device) -> float:
    """Seconds of one call of `fn`, the GPU's queue drained before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def per_key_merge(base: dict[str, torch.Tensor], vectors: list[dict[str, torch.Tensor]], lam: float):
    """The usual state-dict loop: one Python iteration per key and per task."""
    merged = {}
    for name, value in base.items():
        out = value.clone()
        for tv in vectors:
            out.add_(tv[name], alpha=lam)
        merged[name] = out
    return merged


def copy_bandwidth(theta0: torch.Tensor, *, device: torch.device, repeats: int) -> float:
    """Bytes/s of one device copy of θ₀ (read + write): the memory bandwidth a merge pass can reach."""
    scratch = torch.empty_like(theta0)
    return 2 * theta0.numel() * 4 / min(timed(lambda: scratch.copy_(theta0), device=device, repeats=repeats))


def bandwidth_figures(
    theta0: torch.Tensor, T: torch.Tensor, spec: ParamSpec, *, device: torch.device, repeats: int, lam: float = 0.3
) -> dict:
    """The flat merge (new output, reused buffer) against the bound (K + 2)·P·4 bytes / bandwidth and against
    the per-key loop, all measured now on θ₀ [P] and T [K, P]."""
    K, P = T.shape
    bandwidth = copy_bandwidth(theta0, device=device, repeats=repeats)
    bound = (K + 2) * P * 4 / bandwidth
    flat_times = timed(lambda: apply("task_arithmetic", theta0, T, {"lam": lam}), device=device, repeats=repeats)
    buffer = torch.empty_like(theta0)
    reuse_times = timed(
        lambda: apply("task_arithmetic", theta0, T, {"lam": lam}, out=buffer), device=device, repeats=repeats
    )
    base = unflatten(theta0, spec)
    vectors = [unflatten(T[k], spec) for k in range(K)]
    loop_times = timed(lambda: per_key_merge(base, vectors, lam), device=device, repeats=repeats)

    merged_flat = apply("task_arithmetic", theta0, T, {"lam": lam})
    merged_loop = flatten(per_key_merge(base, vectors, lam), spec)
    max_diff = float((merged_flat - merged_loop).abs().max())
    return {
        "P": P,
        "K": K,
        "copy_bandwidth_GBps": round(bandwidth / 1e9, 2),
        "bound_s": round(bound, 5),
        "flat_merge_s": {"min": round(min(flat_times), 5), "median": round(statistics.median(flat_times), 5)},
        "flat_merge_reused_buffer_s": {
            "min": round(min(reuse_times), 5),
            "median": round(statistics.median(reuse_times), 5),
        },
        "per_key_loop_s": {"min": round(min(loop_times), 5), "median": round(statistics.median(loop_times), 5)},
        "flat_over_bound": round(min(flat_times) / bound, 3),
        "flat_reused_buffer_over_bound": round(min(reuse_times) / bound, 3),
        "per_key_over_flat": round(min(loop_times) / min(flat_times), 3),
        "per_key_over_flat_reused_buffer": round(min(loop_times) / min(reuse_times), 3),
        "max_abs_diff_flat_vs_loop": max_diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device")
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    state = create_visual(args.arch).state_dict()
    spec = ParamSpec.from_state_dict(state)
    theta0 = flatten(state, spec, device=device)  # [P]
    T = torch.randn(args.tasks, spec.numel, device=device).mul_(1e-3)  # [K, P]
    figures = bandwidth_figures(theta0, T, spec, device=device, repeats=args.repeats)
    result = {
        "benchmark": "flat task-arithmetic merge vs bandwidth bound and per-key loop",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "architecture": args.arch,
        **figures,
        "goal_flat_over_bound_max": 1.5,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"merge_bandwidth_{device.type}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
