"""Every GPU figure of the project in one process on one GPU (issue 24): a random ViT-B/32 pool, K = 8.

A GPU is lent for minutes, so one command measures everything and writes one JSON,
bench/results/gpu_<device>.json (`--out` to override, `--copy-to DIR` for a second copy, e.g. the device's
$OUT). The parts run most important first, each timed; a part that would start after `--budget-s` is skipped
with a note, and the JSON is rewritten after each part, so a run cut off by the device's limit still returns
what it measured. A part that fails is recorded with its error and the run goes on (exit status 1 at the end).
The issue's goals stand beside their figures as `target_*`: targets to report against, not pass/fail.

The measuring functions are the benchmarks' own (merge_bandwidth, subspace_merge, taujp_speed, learn_speed,
zoo_speed, pool_load); what no benchmark measured before (evaluation with data feeding vs a bare forward,
peak memory of a merge) and the sparse figures (bench/sparse_merge.py keeps its own loop) are here.
Everything runs in fp32 at torch's default matmul precision, as the dashboard does. `--smoke` runs the same
code on the CPU with a tiny tower and a few images (tests/test_bench_gpu.py); docs/gpu.md has the wheels to
carry and the device command.

    python bench/gpu.py [--budget-s 300] [--out FILE] [--copy-to DIR]
    python bench/gpu.py --smoke --out /tmp/gpu_smoke.json
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import platform
import re
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.func import functional_call

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.learn_speed import measure as learn_figures  # noqa: E402
from bench.merge_bandwidth import bandwidth_figures, timed  # noqa: E402
from bench.pool_load import open_matrix, write_case  # noqa: E402
from bench.sparse_merge import PacedBound, lam_moves  # noqa: E402
from bench.subspace_merge import method_row, wudi_row  # noqa: E402
from bench.taujp_speed import throughput as taujp_figures  # noqa: E402
from bench.zoo_speed import slider_moves  # noqa: E402
from engine.data.tasks import DEFAULT_TEMPLATES, LabelledImages, TaskData, normalize_batch  # noqa: E402
from engine.eval.evaluate import evaluate  # noqa: E402
from engine.eval.suite import EvalSuite  # noqa: E402
from engine.io.atomic import write_text_atomic  # noqa: E402
from engine.merge import apply  # noqa: E402
from engine.merge.sparsify import kept_count, magnitude_mask  # noqa: E402
from engine.models import create_visual, preprocess_of  # noqa: E402
from engine.params import ParamSpec, flatten, unflatten  # noqa: E402

DEFAULT_BUDGET_S = 300.0  # of a 15-minute device allowance: the machine's start, this run and one rerun
SPARSE = {  # bench/sparse_merge.py's settings
    "task_arithmetic": {"lam": 0.3},
    "ties": {"density": 0.2, "lam": 1.0},
    "dare": {"drop": 0.9, "lam": 0.3},
    "magnitude": {"density": 0.2, "lam": 0.3},
    "sta": {"threshold": 0.05, "lam": 1.0},
}


@dataclass(frozen=True)
class Sizes:
    """How big each part is: the issue's sizes on a GPU, a tiny tower and a few images in the smoke run."""

    arch: str
    tasks: int  # K
    eval_images: int  # val images per task: the slider move's 8 × 2,000 and the evaluation's
    classes: int
    taujp_images: int  # per task, for the τJp matrix
    learn_images: int  # per task and learned-coefficient step
    learn_steps: int
    wudi_steps: int
    repeats: int  # timed calls after a warm-up
    large_arch: str  # the bfloat16 large pool's tower (issue 30)
    large_tasks: int


FULL = Sizes("ViT-B-32", 8, 2000, 10, 256, 16, 10, 3, 5, "ViT-L-14", 20)
SMOKE = Sizes("mergelab-test-tiny", 8, 16, 10, 4, 2, 1, 1, 1, "mergelab-test-tiny", 3)


@dataclass(frozen=True)
class Bench:
    """What every part measures on: one random tower, a pool around it and an evaluation suite, on one device."""

    device: torch.device
    sizes: Sizes
    spec: ParamSpec
    theta0: torch.Tensor  # [P]
    T: torch.Tensor  # [K, P] random task vectors, ~1e-3 per entry (bench/sparse_merge.py's)
    suite: EvalSuite  # K random tasks of `eval_images` uint8 val images at the tower's size, random heads


def build_bench(sizes: Sizes, device: torch.device) -> Bench:
    torch.manual_seed(0)
    visual = create_visual(sizes.arch).to(device).eval()
    spec = ParamSpec.from_state_dict(visual.state_dict())
    theta0 = flatten(visual.state_dict(), spec, device=device)  # [P]
    T = torch.randn(sizes.tasks, spec.numel, device=device).mul_(1e-3)  # [K, P]
    preprocess = preprocess_of(visual)
    size, n = preprocess.image_size, sizes.eval_images
    classes = tuple(f"class{c}" for c in range(sizes.classes))
    tasks, heads = {}, {}
    for k in range(sizes.tasks):
        name = f"t{k}"
        images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, device=device)  # [N, 3, S, S]
        labels = torch.randint(0, sizes.classes, (n,), device=device)  # [N]
        tasks[name] = TaskData(name, classes, DEFAULT_TEMPLATES, {"val": LabelledImages(images, labels)})
        heads[name] = torch.nn.functional.normalize(
            torch.randn(sizes.classes, visual.output_dim, device=device), dim=-1
        )
    return Bench(device, sizes, spec, theta0, T, EvalSuite(visual, spec, preprocess, tasks, heads))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def task_arithmetic_part(b: Bench) -> dict:
    """The flat merge against the bandwidth bound and against a per-key loop."""
    figures = bandwidth_figures(b.theta0, b.T, b.spec, device=b.device, repeats=max(b.sizes.repeats, 3))
    return figures | {"target_flat_over_bound_max": 1.3, "target_per_key_over_flat_min": 20}


def slider_move_part(b: Bench) -> dict:
    """A λ move to exact accuracies of every task on its val images, through apply() and evaluate()."""
    slider_moves(b.theta0, b.T, b.suite, split="val", repeats=1)  # warm-up: kernels chosen, caches filled
    times, result = slider_moves(b.theta0, b.T, b.suite, split="val", repeats=b.sizes.repeats)
    return {
        "tasks": len(result.total),
        "images_per_move": sum(result.total.values()),
        "move_s": {"min": round(min(times), 4), "median": round(statistics.median(times), 4)},
        "target_move_s_max": 1.0,
    }


def sparse_part(b: Bench) -> dict:
    """TIES / DARE / magnitude / STA against one pass of the bound (measured just before each, as
    bench/sparse_merge.py does), a λ move from their cached parts, and the exact per-task kthvalue threshold over
    the flat [K, P] (FusionBench's TIES), with the kept-count error of the engine's threshold."""
    K, P = b.T.shape
    scratch = torch.empty_like(b.theta0)
    paced = PacedBound(
        lambda: scratch.copy_(b.theta0), bytes_copied=2 * P * 4, bytes_bound=(K + 2) * P * 4, device=b.device
    )
    codes = torch.randint(0, 256, (K, P), dtype=torch.uint8, device=b.device)  # [K, P] STA importance codes
    measured = {
        m: paced.measure(
            lambda m=m, p=p: apply(m, b.theta0, b.T, p, importance=codes if m == "sta" else None), b.sizes.repeats
        )
        for m, p in SPARSE.items()
    }
    moves = lam_moves(b.theta0, b.T, codes, SPARSE, paced=paced, repeats=b.sizes.repeats)
    k = P - kept_count(P, 0.2) + 1
    exact_s = min(timed(lambda: torch.kthvalue(b.T.abs(), k, dim=1).values, device=b.device, repeats=1))
    kept = magnitude_mask(b.T, 0.2).sum(dim=1).double()  # [K]
    count_error = float(((kept - kept_count(P, 0.2)).abs() / kept_count(P, 0.2)).max())
    return {
        "merge_s": {m: round(t, 5) for m, (t, _) in measured.items()},
        "passes_of_bound": {m: round(r, 2) for m, (_, r) in measured.items()},
        "lam_move_passes": {m: round(r, 2) for m, (_, r) in moves["scale"].items()},
        "target_lam_move_passes_max": 2,
        "per_task_lam_move_passes": {m: round(r, 2) for m, (_, r) in moves["per_task"].items()},
        "exact_kthvalue_threshold_s": float(f"{exact_s:.3g}"),
        "ties_speedup_over_exact_kthvalue": float(f"{exact_s / measured['ties'][0]:.3g}"),  # 3 digits: < 0.01 tiny
        "target_ties_speedup_min": 50,
        "kept_count_max_rel_error": count_error,
        "target_kept_count_error_max": 0.001,
    }


def memory_part(b: Bench) -> dict:
    """Peak memory of each flat merge: the resident θ₀ and T (and STA's uint8 codes) plus what the merge
    allocates on top, against (K + 3)·P·4 bytes (θ₀, T, the output and one [P] temporary)."""
    K, P = b.T.shape
    codes = torch.randint(0, 256, (K, P), dtype=torch.uint8, device=b.device)
    resident = (K + 1) * P * 4
    goal = (K + 3) * P * 4
    rows = {}
    for method, params in SPARSE.items():
        importance = codes if method == "sta" else None
        extra = peak_extra_bytes(lambda m=method, p=params, i=importance: apply(m, b.theta0, b.T, p, importance=i), b)
        peak = resident + (K * P if method == "sta" else 0) + extra
        rows[method] = {"peak_bytes": peak, "merge_allocated_bytes": extra, "peak_over_target": round(peak / goal, 3)}
    return {
        "meter": "torch.cuda.max_memory_allocated" if b.device.type == "cuda" else "VmHWM (peak RSS, reset)",
        "target_bytes": goal,
        "methods": rows,
        "target_peak_over_target_max": 1.0,
    }


def large_bf16_part(b: Bench) -> dict:
    """Issue 30's GPU figure: a bfloat16 T of `large_tasks` random task vectors of `large_arch` (20 × ViT-L/14:
    12.2 GB, half of float32) generated on the device from a seeded generator, one float32 row at a time, and
    TIES and Iso-C on it (widened chunk by chunk or layer by layer, float32 arithmetic): seconds and peak device
    memory of each, T and θ₀ included."""
    visual = create_visual(b.sizes.large_arch).eval()
    spec = ParamSpec.from_state_dict(visual.state_dict())
    theta0 = flatten(visual.state_dict(), spec, device=b.device)  # [P] float32
    del visual
    K, P = b.sizes.large_tasks, spec.numel
    T = torch.empty(K, P, dtype=torch.bfloat16, device=b.device)  # [K, P]
    generator = torch.Generator(device=b.device)
    for k in range(K):  # over tasks: one float32 row alive at a time
        generator.manual_seed(1000 + k)
        T[k].copy_(torch.randn(P, generator=generator, device=b.device).mul_(1e-3))
    resident = theta0.numel() * 4 + T.numel() * 2
    rows = {}
    for method, params in (("ties", {"density": 0.2}), ("iso_c", {})):
        sync(b.device)
        start = time.perf_counter()
        extra = peak_extra_bytes(lambda m=method, p=params: apply(m, theta0, T, p, spec=spec), b)
        rows[method] = {"seconds": round(time.perf_counter() - start, 3), "peak_bytes": resident + extra}
    return {
        "architecture": b.sizes.large_arch,
        "K": K,
        "P": P,
        "T_dtype": "bfloat16",
        "resident_bytes": resident,
        "methods": rows,
    }


def peak_extra_bytes(fn: Callable[[], torch.Tensor], b: Bench) -> int:
    """Bytes allocated at the peak of `fn()` above what was allocated before (its result included)."""
    if b.device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = fn()
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - before
    else:  # Linux: writing 5 to clear_refs resets the peak RSS to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
        result = fn()
        extra = (_status_kib("VmHWM") - before) * 1024
    del result
    return max(extra, 0)


def _status_kib(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def evaluation_part(b: Bench) -> dict:
    """Images/s of evaluate() (uint8 images concatenated, normalised batch by batch, fed through the tower, scored
    by the heads) against a bare forward of one ready batch of the same size, no data handling."""
    total = sum(len(t.split("val")) for t in b.suite.tasks.values())
    batch = min(1024, total)  # evaluate()'s batch size
    first = next(iter(b.suite.tasks.values())).split("val").images[:batch]
    x = normalize_batch(first, b.suite.preprocess)  # [B, 3, S, S]
    weights = unflatten(b.theta0, b.spec)
    batches = max(total // batch, 1)

    @torch.no_grad()
    def bare() -> None:
        for _ in range(batches):
            functional_call(b.suite.visual, weights, (x,))

    bare_s = min(timed(bare, device=b.device, repeats=b.sizes.repeats))
    fed_s = min(timed(lambda: evaluate(b.theta0, b.suite, "val"), device=b.device, repeats=b.sizes.repeats))
    bare_rate, fed_rate = batches * batch / bare_s, total / fed_s
    return {
        "images": total,
        "batch_size": batch,
        "bare_forward_img_per_s": round(bare_rate, 1),
        "evaluate_img_per_s": round(fed_rate, 1),
        "ratio_to_bare": round(fed_rate / bare_rate, 3),
        "target_ratio_to_bare_min": 0.85,
    }


def taujp_part(b: Bench) -> dict:
    """The τJp matrix of the K task vectors on K tasks (`taujp_images` per task) and a bare JVP, same images."""
    images = {t: d.split("val").images[: b.sizes.taujp_images] for t, d in b.suite.tasks.items()}
    figures = taujp_figures(b.suite, b.theta0, b.T, images, device=b.device)
    return figures | {"images_per_task": b.sizes.taujp_images, "target_taujp_matrix_s_max": 6.0}


def learn_part(b: Bench) -> dict:
    """aTLAS and DV-BASI coefficient steps against a bare forward+backward of the same batch."""
    n = b.sizes.learn_images
    batch = {t: LabelledImages(d.split("val").images[:n], d.split("val").labels[:n]) for t, d in b.suite.tasks.items()}
    figures = learn_figures(b.suite, b.theta0, b.T, batch, steps=b.sizes.learn_steps, device=b.device)
    return figures | {"target_ratio_to_bare_min": 0.7}


def subspace_part(method: str, b: Bench) -> dict:
    """One subspace method's factorization stage (its first merge) and a cached move of its scale (the batched
    SVDs it needs are not timed here: bench/subspace_merge.py does that)."""
    ta = min(timed(lambda: apply("task_arithmetic", b.theta0, b.T, {"lam": 0.3}), device=b.device, repeats=3))
    return {"task_arithmetic_s": round(ta, 5)} | method_row(
        method, b.theta0, b.T, b.spec, device=b.device, task_arithmetic_s=ta, svds=False
    )


def wudi_part(b: Bench) -> dict:
    """WUDI's per-layer terms and a few Adam steps, extrapolated to the paper's 300."""
    return wudi_row(b.T, b.spec, b.device, b.sizes.wudi_steps)


def pool_load_part(b: Bench) -> dict:
    """Seconds to θ₀ and T on the device from a freshly written random pool of the same architecture: plain
    safetensors files (bench/pool_load.py's baseline) and mergelab's converted collection, whose first open
    hash-checks every file. In this process: the device is warm, and peak RSS is not measured."""
    tasks = tuple(f"task{k}" for k in range(b.sizes.tasks))
    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-bench-pool-") as tmp:
        for case in ("baseline", "converted"):
            folder = Path(tmp) / case
            write_case(case, folder, arch=b.sizes.arch, tasks=tasks)
            seconds[case] = [_load_seconds(case, folder, b.device, tasks) for _ in range(2)]
    base = min(seconds["baseline"])
    return {
        "tasks": len(tasks),
        "baseline_s": round(base, 3),
        "converted_first_open_s": round(seconds["converted"][0], 3),
        "converted_s": round(seconds["converted"][1], 3),
        "converted_over_baseline": round(seconds["converted"][1] / base, 3),
    }


def _load_seconds(case: str, folder: Path, device: torch.device, tasks: tuple[str, ...]) -> float:
    sync(device)
    start = time.perf_counter()
    matrix = open_matrix(case, folder, device=str(device), tasks=tasks)
    sync(device)
    seconds = time.perf_counter() - start
    del matrix
    return seconds


Part = Callable[[Bench], dict]
PARTS: tuple[tuple[str, Part], ...] = (  # most important first: merges, the interactive path, then the rest
    ("task_arithmetic", task_arithmetic_part),
    ("slider_move", slider_move_part),
    ("sparse_merges", sparse_part),
    ("merge_memory", memory_part),
    ("large_bf16", large_bf16_part),
    ("evaluation", evaluation_part),
    ("taujp", taujp_part),
    ("learned_coefficients", learn_part),
    *((f"subspace_{m}", functools.partial(subspace_part, m)) for m in ("tsv_m", "iso_c", "iso_cts", "cart")),
    ("wudi", wudi_part),
    ("pool_load", pool_load_part),
)


def run_part(part: Part, b: Bench) -> dict:
    """{seconds, figures}, or {seconds, error}: one failing part must not cost the figures of the others."""
    start = time.perf_counter()
    try:
        figures = part(b)
    except Exception as exc:  # noqa: BLE001 — any failure (an OOM, a missing API) is reported, the run goes on
        outcome = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=-4)}
    else:
        outcome = {"figures": figures}
    gc.collect()
    if b.device.type == "cuda":
        torch.cuda.empty_cache()
    return {"seconds": round(time.perf_counter() - start, 2), **outcome}


def device_slug(device: torch.device) -> str:
    """'nvidia-h200' for an NVIDIA H200, 'cpu' on the CPU: the results file's suffix."""
    if device.type != "cuda":
        return device.type
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def header(sizes: Sizes, b: Bench, *, smoke: bool, budget_s: float) -> dict:
    cuda = b.device.type == "cuda"
    return {
        "benchmark": "every GPU figure, one process, random pool (issue 24)",
        "device": str(b.device),
        "device_name": torch.cuda.get_device_name(b.device) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "smoke": smoke,
        "architecture": sizes.arch,
        "K": sizes.tasks,
        "P": b.spec.numel,
        "budget_s": budget_s,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": "target_* keys are the issue's goals, to report against, not pass/fail",
        "parts": {},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the same parts on the CPU at tiny size")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="no part starts after this")
    parser.add_argument("--out", type=Path, help="the JSON (default bench/results/gpu_<device>.json)")
    parser.add_argument("--copy-to", type=Path, help="a folder that gets a copy of the JSON after each part")
    args = parser.parse_args()
    clock = time.perf_counter()
    if args.smoke and args.out is None:
        parser.error("--smoke writes to a temporary file: give --out")
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device here: bench/gpu.py measures a GPU (--smoke runs its parts on the CPU)")
    device = torch.device("cpu" if args.smoke else "cuda")
    sizes = SMOKE if args.smoke else FULL
    b = build_bench(sizes, device)
    out = args.out or ROOT / "bench" / "results" / f"gpu_{device_slug(device)}.json"
    paths = [out] + ([args.copy_to / out.name] if args.copy_to else [])
    report = header(sizes, b, smoke=args.smoke, budget_s=args.budget_s)
    report["setup_s"] = round(time.perf_counter() - clock, 2)
    for name, part in PARTS:
        elapsed = time.perf_counter() - clock
        if elapsed >= args.budget_s:
            report["parts"][name] = {"skipped": f"the {args.budget_s:g} s budget was spent ({elapsed:.0f} s) first"}
        else:
            report["parts"][name] = run_part(part, b)
        report["elapsed_s"] = round(time.perf_counter() - clock, 2)
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(report, indent=2) + "\n")
        print(name, json.dumps(report["parts"][name]), flush=True)
    print(f"wrote {', '.join(map(str, paths))} in {report['elapsed_s']} s")
    if any("error" in p for p in report["parts"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
