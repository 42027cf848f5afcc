"""bench/gpu.py --smoke: the GPU command's parts on the CPU at tiny size, so the command never rots between
the rare sessions that are lent a GPU (issue 24)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Per part: figures that must be strictly positive (dotted paths), and the goals beside them.
KEY_FIGURES = {
    "task_arithmetic": ("copy_bandwidth_GBps", "flat_over_bound", "per_key_over_flat", "flat_merge_s.min"),
    "slider_move": ("images_per_move", "move_s.median"),
    "sparse_merges": (
        "merge_s.ties",
        "merge_s.dare",
        "merge_s.magnitude",
        "merge_s.sta",
        "passes_of_bound.ties",
        "lam_move_passes.ties",
        "per_task_lam_move_passes.magnitude",
        "exact_kthvalue_threshold_s",
        "ties_speedup_over_exact_kthvalue",
    ),
    "merge_memory": tuple(f"methods.{m}.peak_over_target" for m in ("task_arithmetic", "ties", "dare", "sta")),
    "large_bf16": ("resident_bytes", "methods.ties.seconds", "methods.ties.peak_bytes", "methods.iso_c.peak_bytes"),
    "evaluation": ("bare_forward_img_per_s", "evaluate_img_per_s", "ratio_to_bare"),
    "taujp": ("taujp_matrix_s", "bare_jvp_img_per_s", "taujp_products_per_s"),
    "learned_coefficients": ("bare_fwd_bwd_img_per_s", "atlas.ratio_to_bare", "dv_basi.ratio_to_bare"),
    **{
        f"subspace_{m}": ("factorization_s", "cached_move_over_task_arithmetic")
        for m in ("tsv_m", "iso_c", "iso_cts", "cart")
    },
    "wudi": ("terms_s", "step_s", "extrapolated_300_steps_s"),
    "pool_load": ("baseline_s", "converted_s", "converted_over_baseline"),
}
TARGETS = {
    "task_arithmetic": ("target_flat_over_bound_max", "target_per_key_over_flat_min"),
    "slider_move": ("target_move_s_max",),
    "sparse_merges": ("target_ties_speedup_min", "target_kept_count_error_max", "target_lam_move_passes_max"),
    "merge_memory": ("target_peak_over_target_max",),
    "evaluation": ("target_ratio_to_bare_min",),
    "taujp": ("target_taujp_matrix_s_max",),
    "learned_coefficients": ("target_ratio_to_bare_min",),
}


def run_smoke(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--smoke", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


def numbers(value, path: str = ""):
    """(dotted path, number) of every number in a nested JSON value."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from numbers(inner, f"{path}.{key}" if path else key)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


@pytest.mark.slow  # every part of the GPU command, tiny, in one process: minutes
def test_smoke_measures_every_part_with_sane_figures(tmp_path: Path) -> None:
    out = tmp_path / "gpu_smoke.json"
    run = run_smoke(out)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["device"] == "cpu" and report["K"] == 8
    assert list(report["parts"]) == list(KEY_FIGURES)  # every part, in the order of importance
    for name, part in report["parts"].items():
        assert "figures" in part, f"{name}: {part}"
        assert part["seconds"] > 0
        found = dict(numbers(part["figures"]))
        for path, number in found.items():
            assert math.isfinite(number) and number >= 0, f"{name}.{path} = {number}"
        for path in KEY_FIGURES[name]:
            assert found.get(path, 0) > 0, f"{name}.{path} missing or not positive: {found.get(path)}"
        for target in TARGETS.get(name, ()):
            assert found.get(target, 0) > 0, f"{name} lacks its goal {target}"
    assert report["parts"]["slider_move"]["figures"]["images_per_move"] == 8 * 16  # K tasks × the smoke's images


def test_parts_after_the_budget_are_skipped_with_a_note(tmp_path: Path) -> None:
    out = tmp_path / "gpu_smoke.json"
    copies = tmp_path / "copies"
    run = run_smoke(out, "--budget-s", "0", "--copy-to", str(copies))
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert list(report["parts"]) == list(KEY_FIGURES)
    assert all("budget" in part["skipped"] for part in report["parts"].values())
    assert json.loads((copies / out.name).read_text()) == report
