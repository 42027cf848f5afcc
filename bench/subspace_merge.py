"""Subspace merges on a random ViT-B/32 tower (K = 8): the factorization stage of each method against the
batched SVDs it needs, a cached re-compose after an α move, and a task-arithmetic merge, in the same run.

Goals (the subspace-methods issue): a cached α move ≤ 3× a task-arithmetic merge; each method's
factorization stage within 2× the time of the batched SVDs it needs (no per-layer Python overhead beyond
that). The "SVDs needed" reference is `torch.linalg.svd` of the same stacks the method factors, timed alone.
Random task vectors are full-rank, unlike fine-tuned ones, which makes no difference to SVD time.
WUDI (iterative): its per-layer terms, then `--wudi-steps` Adam steps timed and extrapolated to the
paper's 300. A rank change (CART's ρ) re-truncates cached factors: timed against its first factorization.
The demo zoo: per method, the first merge and evaluation as the Merge page does it, then an α/λ move.
Writes bench/results/subspace_merge_<device>.json.

    python bench/subspace_merge.py [--device cuda] [--arch ViT-B-32] [--tasks 8] [--methods tsv_m iso_c ...]
                                   [--wudi-steps 3] [--no-zoo]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.merge_bandwidth import timed  # noqa: E402
from engine.merge import apply  # noqa: E402
from engine.merge.registry import scale_parts  # noqa: E402
from engine.merge.subspace import Memo, attention_and_mlp, every_matrix  # noqa: E402
from engine.merge.wudi import WUDI_STEPS, wudi_run  # noqa: E402
from engine.models import create_visual, pick_device  # noqa: E402
from engine.params import ParamSpec, flatten  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SCALE = {"tsv_m": "alpha", "iso_c": "alpha", "iso_cts": "alpha", "cart": "lam", "wudi": "alpha"}
ZOO = Path(__file__).resolve().parent.parent / "assets" / "zoo"


def svd_reference(method: str, T: torch.Tensor, spec: ParamSpec, device: torch.device) -> float:
    """Seconds of the batched SVDs the method needs, on the same stacks, nothing else."""
    names = attention_and_mlp(spec) if method == "cart" else every_matrix(spec)
    groups = [torch.stack([spec.matrix_view(T, n) for n in g]) for g in spec.by_shape(names).values()]  # [L, K, m, n]

    def run() -> None:
        for tau in groups:
            if method in ("tsv_m", "cart"):
                torch.linalg.svd(tau, full_matrices=False)  # one per task matrix
            else:
                torch.linalg.svd(tau.sum(dim=1), full_matrices=False)  # of the summed matrix
            if method == "iso_cts":
                torch.linalg.svd(tau, full_matrices=False)  # each task's part outside the common subspace
            if method in ("tsv_m", "iso_cts"):  # the two polar factors of the stacked bases (same sizes)
                torch.linalg.svd(tau[:, 0], full_matrices=False)
                torch.linalg.svd(tau[:, 0].transpose(-1, -2), full_matrices=False)

    return min(timed(run, device=device, repeats=1))


def method_row(
    method: str,
    theta0: torch.Tensor,
    T: torch.Tensor,
    spec: ParamSpec,
    *,
    device: torch.device,
    task_arithmetic_s: float,
    svds: bool = True,
) -> dict:
    """The factorization stage (one `scale_parts` call), a cached move of the scale, and with `svds` the
    batched SVDs the method needs timed alone."""
    _sync(device)
    start = time.perf_counter()
    base, direction = scale_parts(method, theta0, T, {}, spec=spec)  # the factorization stage
    _sync(device)
    factor = time.perf_counter() - start
    move = min(timed(lambda: torch.add(base, direction, alpha=1.3), device=device, repeats=5))
    row = {"factorization_s": round(factor, 3)}
    if svds:
        reference = svd_reference(method, T, spec, device)
        row |= {"svds_needed_s": round(reference, 3), "factorization_over_svds": round(factor / reference, 3)}
    return row | {
        "cached_move_s": round(move, 4),
        "cached_move_over_task_arithmetic": round(move / task_arithmetic_s, 3),
        "scale": SCALE[method],
    }


def _sync(device: torch.device) -> None:
    """Wait for the device's queued kernels, so a wall-clock interval covers them."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def dict_memo() -> Memo:
    """A memo that keeps everything (the bench's second call must read what the first computed)."""
    kept: dict = {}

    def memo(key, compute):
        if key not in kept:
            kept[key] = compute()
        return kept[key]

    return memo


def wudi_row(T: torch.Tensor, spec: ParamSpec, device: torch.device, steps: int) -> dict:
    """WUDI's terms (A, B per layer group) and `steps` Adam steps, extrapolated to the paper's 300."""
    memo = dict_memo()
    _sync(device)
    start = time.perf_counter()
    wudi_run(T, spec, steps=0, memo=memo)  # the terms only
    _sync(device)
    terms = time.perf_counter() - start
    start = time.perf_counter()
    wudi_run(T, spec, steps=steps, memo=memo)  # the same terms, read: only the steps
    _sync(device)
    per_step = (time.perf_counter() - start) / steps
    flop = sum(  # per step and layer: τ_m A, [out, in] @ [in, in]
        2 * len(names) * shape[0] * shape[1] ** 2 for shape, names in spec.by_shape(spec.matrices()).items()
    )
    return {
        "terms_s": round(terms, 3),
        "step_s": round(per_step, 4),
        "steps_timed": steps,
        "extrapolated_300_steps_s": round(terms + WUDI_STEPS * per_step, 1),
        "flop_per_step": flop,
        "autograd_flop_per_step": 3
        * sum(  # the written loss: K products [out, in] @ [in, out], and back
            2 * len(names) * T.shape[0] * shape[0] ** 2 * shape[1]
            for shape, names in spec.by_shape(spec.matrices()).items()
        ),
    }


def rank_change_row(T: torch.Tensor, spec: ParamSpec, theta0: torch.Tensor) -> dict:
    """CART at ρ = 0.12 (factoring), then at ρ = 0.3 from the cached factors."""
    memo = dict_memo()
    start = time.perf_counter()
    scale_parts("cart", theta0, T, {"rank_share": 0.12}, spec=spec, memo=memo)
    first = time.perf_counter() - start
    start = time.perf_counter()
    scale_parts("cart", theta0, T, {"rank_share": 0.3}, spec=spec, memo=memo)
    change = time.perf_counter() - start
    return {
        "first_s": round(first, 2),
        "rank_change_s": round(change, 2),
        "change_over_first": round(change / first, 3),
    }


def zoo_rows(methods: list[str]) -> dict:
    """On the demo zoo, as the Merge page: the first merge + evaluation of each method, then a scale move."""
    import tempfile

    from engine.workspace import Workspace

    ws = Workspace.open(ZOO, cache_dir=Path(tempfile.mkdtemp(prefix="mergelab-bench-")))
    tasks = ws.task_names
    ws.compare(tasks, "task_arithmetic", {"lam": 0.3}, split="interactive")  # heads, baselines: once for all
    rows = {}
    for method in methods:
        scale = SCALE[method]
        start = time.perf_counter()
        ws.compare(tasks, method, {scale: 1.0}, split="interactive")
        first = time.perf_counter() - start
        start = time.perf_counter()
        ws.compare(tasks, method, {scale: 0.7}, split="interactive")
        rows[method] = {"first_s": round(first, 3), "slider_move_s": round(time.perf_counter() - start, 3)}
        print("zoo", method, rows[method], flush=True)
    return {"params": ws.matrix.spec.numel, "tasks": len(tasks), "methods": rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device")
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=list(SCALE))
    parser.add_argument("--wudi-steps", type=int, default=3)
    parser.add_argument("--no-zoo", action="store_true")
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    visual = create_visual(args.arch)
    spec = ParamSpec.from_state_dict(visual.state_dict())
    theta0 = flatten(visual.state_dict(), spec, device=device)  # [P]
    T = torch.randn(args.tasks, spec.numel, device=device) * 1e-3  # [K, P]
    ta = min(timed(lambda: apply("task_arithmetic", theta0, T, {"lam": 0.3}), device=device, repeats=5))
    results = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "arch": args.arch,
        "tasks": args.tasks,
        "params": spec.numel,
        "task_arithmetic_s": round(ta, 4),
        "methods": {},
    }
    for method in [m for m in args.methods if m != "wudi"]:
        results["methods"][method] = method_row(method, theta0, T, spec, device=device, task_arithmetic_s=ta)
        print(method, results["methods"][method], flush=True)
    if "wudi" in args.methods:
        results["wudi"] = wudi_row(T, spec, device, args.wudi_steps)
        print("wudi", results["wudi"], flush=True)
    if "cart" in args.methods:
        results["rank_change"] = rank_change_row(T, spec, theta0)
        print("rank change", results["rank_change"], flush=True)
    if not args.no_zoo:
        del T
        results["zoo"] = zoo_rows(args.methods)
    suffix = "" if args.arch == "ViT-B-32" else f"_{args.arch}"  # a smoke run on a small tower writes its own file
    write_results(RESULTS / f"subspace_merge_{device.type}{suffix}.json", results)


def write_results(out: Path, results: dict) -> None:
    """Write `results` to `out`, keeping the rows of an earlier run on the same setup (arch, tasks) that this
    run did not measure: a run of some methods updates their rows only."""
    out.parent.mkdir(exist_ok=True)
    if out.exists():
        earlier = json.loads(out.read_text())
        if (earlier.get("arch"), earlier.get("tasks")) == (results["arch"], results["tasks"]):
            results["methods"] = {**earlier.get("methods", {}), **results["methods"]}
            for kept in ("wudi", "rank_change", "zoo"):  # rows this run did not measure
                if kept not in results and kept in earlier:
                    results[kept] = earlier[kept]
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
