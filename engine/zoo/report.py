"""The demo zoo's quality bar, checked on report.json (issue "The offline demo zoo").

On test: zero-shot mean in [0.40, 0.75], every task ≥ chance + 0.05 and ≤ 0.95; fine-tuned mean
≥ 0.88 with every task ≥ 0.75; the 8-task task-arithmetic merge at its best λ on val at least 0.10
below the fine-tuned mean and at least 0.03 above the zero-shot mean. Change tasks or training to
meet them, never the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _mean(values: Mapping[str, float]) -> float:
    return sum(values.values()) / len(values)


def check_thresholds(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """name → {"value": measured, "ok": bool} for every threshold."""
    zs, ft = report["zero_shot"]["test"], report["finetuned"]["test"]
    ta = report["task_arithmetic"]["at_best"]["test"]
    chance = {t: info["chance"] for t, info in report["tasks"].items()}
    zs_mean, ft_mean, ta_mean = _mean(zs), _mean(ft), _mean(ta)
    margins = {t: zs[t] - chance[t] for t in zs}
    checks = {
        "zero_shot_mean_in_[0.40,0.75]": (zs_mean, 0.40 <= zs_mean <= 0.75),
        "zero_shot_min_margin_over_chance_>=0.05": (min(margins.values()), min(margins.values()) >= 0.05),
        "zero_shot_max_<=0.95": (max(zs.values()), max(zs.values()) <= 0.95),
        "finetuned_mean_>=0.88": (ft_mean, ft_mean >= 0.88),
        "finetuned_min_>=0.75": (min(ft.values()), min(ft.values()) >= 0.75),
        "ta_best_gap_below_finetuned_>=0.10": (ft_mean - ta_mean, ft_mean - ta_mean >= 0.10),
        "ta_best_gain_over_zero_shot_>=0.03": (ta_mean - zs_mean, ta_mean - zs_mean >= 0.03),
    }
    return {name: {"value": round(value, 4), "ok": bool(ok)} for name, (value, ok) in checks.items()}
