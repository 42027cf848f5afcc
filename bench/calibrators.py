"""Calibrators after a base merge on a random ViT-B/32 tower (K = 8): each step against its base merge, and a
λ or α move after a calibrated merge against a plain cached move, in the same run.

Rows per base method: its first merge through a merge session (parts computed), a plain cached λ move (one pass
over [P]), LiNeS after it (first, then a β move), SVC after it (first: the SVDs of its update and every task's
responses; then a λ move and an SVC α move, which rebuild U diag(γ s S) Vᵀ from cached factors, no SVD).
Goal (issue 35): a move after a calibrated merge ≤ 3× a plain cached move. On the CPU the rebuild is a matmul per
layer (≈ 2·m·n·r flops), far above one pass over [P]: the JSON records the ratio as measured. Measured quiet
(load 0.2-2, 2 cores, ViT-B/32 × 8, P = 88M): a plain cached move 0.16-0.26 s; LiNeS moves 1.7-2.4× it; an SVC
move (λ or α) 1.1-1.3 s, 5.1× the plain move after task arithmetic and 7.1× after TSV-M, the rebuild's matmuls
running near the cores' peak; no move computes an SVD (SVC's first merge: 42-46 s of SVDs).
Writes bench/results/calibrators_<device>.json.

    python bench/calibrators.py [--device cuda] [--tasks 8] [--arch ViT-B-32] [--bases task_arithmetic ties]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.merge_bandwidth import run_once  # noqa: E402
from engine.cache.memory import ComputeCache  # noqa: E402
from engine.io.tensor_store import TensorStore  # noqa: E402
from engine.merge import get_method  # noqa: E402
from engine.merge.session import MergeSession  # noqa: E402
from engine.models import create_visual, pick_device  # noqa: E402
from engine.params import ParamSpec, TaskMatrix, flatten  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def base_row(session: MergeSession, method: str, device: torch.device) -> dict:
    tasks, scale = session.matrix.task_names, get_method(method).scale.name

    def merge(params: dict, calibrate: tuple[str, ...] = (), *, repeats: int = 1) -> float:
        """Seconds of one merge (the best of `repeats`: a move recomputes the same on each, parts cached)."""
        runs = [
            run_once(lambda: session.merge(tasks, method, params, calibrate=calibrate), device) for _ in range(repeats)
        ]
        return round(min(runs), 4)

    row = {"first_s": merge({scale: 0.3}), "cached_move_s": merge({scale: 0.4}, repeats=3)}
    row["lines_first_s"] = merge({scale: 0.4, "lines.beta": 0.5}, ("lines",))
    row["lines_move_s"] = merge({scale: 0.4, "lines.beta": 0.7}, ("lines",), repeats=3)
    row["svc_first_s"] = merge({scale: 0.4}, ("svc",))
    row["svc_scale_move_s"] = merge({scale: 0.5}, ("svc",), repeats=3)
    row["svc_alpha_move_s"] = merge({scale: 0.5, "svc.alpha": 0.8}, ("svc",), repeats=3)
    row["svc_first_over_base_first"] = round(row["svc_first_s"] / row["first_s"], 2)
    row["svc_move_over_cached_move"] = round(row["svc_scale_move_s"] / row["cached_move_s"], 2)
    row["lines_move_over_cached_move"] = round(row["lines_move_s"] / row["cached_move_s"], 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip image tower (ViT-S-32 if ViT-B-32 is too heavy)")
    parser.add_argument("--bases", nargs="+", default=["task_arithmetic", "ties"])
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    visual = create_visual(args.arch)
    spec = ParamSpec.from_state_dict(visual.state_dict())
    theta0 = flatten(visual.state_dict(), spec, device=device)  # [P]
    T = torch.randn(args.tasks, spec.numel, device=device) * 1e-3  # [K, P]
    matrix = TaskMatrix(theta0, T, spec, tuple(f"task{k}" for k in range(args.tasks)))
    results = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "arch": args.arch,
        "tasks": args.tasks,
        "params": spec.numel,
        "goal": "a move after a calibrated merge <= 3x a plain cached move",
        "load_average_at_start": round(os.getloadavg()[0], 1),  # the machine is shared: ratios, same run
    }
    for method in args.bases:
        cache = ComputeCache(16 << 30)
        store = TensorStore(Path("/tmp") / "mergelab-bench-calibrators")
        session = MergeSession(matrix, cache, f"bench-{method}", store, lambda kind: None)
        results[method] = base_row(session, method, device)
        print(method, results[method], flush=True)
    RESULTS.mkdir(exist_ok=True)
    results["load_average_at_end"] = round(os.getloadavg()[0], 1)
    out = RESULTS / f"calibrators_{device.type}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(out)


if __name__ == "__main__":
    main()
