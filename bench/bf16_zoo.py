"""What a bfloat16 task store changes on the demo zoo (issue 30); writes bench/results/bf16_zoo.json.

For every registered method at its default parameters: the test split's mean accuracy (and mean normalized
accuracy) of the merge of T as float32 and of T rounded once to bfloat16 and read back as float32 (what a
bf16 store's block reads give: bfloat16 storage, float32 accumulation), and how far the merged vectors move
(max |Δθ|, relative L2). For the exact-count magnitude cut (TIES, magnitude at d = 0.2 and 0.05): how many
entries per task tie at the cut's magnitude in each dtype; the cut keeps exactly round(d·P) entries, the
tied ones in index order (engine/merge/sparsify.py), so under bf16 that order decides more of the kept set.

    python bench/bf16_zoo.py
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results" / "bf16_zoo.json"


def method_row(ws, method: str, T32: torch.Tensor, T16: torch.Tensor, reference) -> dict:
    from engine.eval.evaluate import evaluate
    from engine.merge import apply

    m = ws.matrix
    importance = ws.merges.method_importance(method, ws.task_names)
    row = {}
    merged = {}
    for name, T in (("float32", T32), ("bfloat16", T16)):
        merged[name] = apply(method, m.theta0, T, {}, importance=importance, spec=m.spec)  # [P]
        result = evaluate(merged[name], ws.suite, "test", reference=reference)
        row[name] = {"mean_accuracy": result.mean_accuracy, "mean_normalized": result.mean_normalized}
    delta = merged["bfloat16"] - merged["float32"]
    moved = merged["float32"] - m.theta0
    row["delta_mean_accuracy"] = row["bfloat16"]["mean_accuracy"] - row["float32"]["mean_accuracy"]
    row["max_abs_delta_theta"] = float(delta.abs().max())
    row["relative_l2_of_merged_task_vector"] = float(delta.norm() / moved.norm())
    return row


def cut_ties(T: torch.Tensor, density: float) -> list[dict]:
    """Per task: the cut's magnitude and how many entries share it, in this dtype's values."""
    from engine.merge.sparsify import kept_count

    rows = []
    n_keep = kept_count(T.shape[1], density)
    for k in range(T.shape[0]):
        magnitudes = T[k].abs()
        cut = torch.topk(magnitudes, n_keep).values[-1]
        rows.append(
            {
                "cut": float(cut),
                "tied_at_cut": int((magnitudes == cut).sum()),
                "above_cut": int((magnitudes > cut).sum()),
                "kept": n_keep,
            }
        )
    return rows


def main() -> None:
    from engine.home import ASSETS_DIR
    from engine.merge import METHODS
    from engine.pool.collection import load_collection
    from engine.workspace import Workspace

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        ws = Workspace.from_collection(load_collection(ASSETS_DIR / "zoo"), cache_dir=Path(cache), store="memory")
        T32 = ws.matrix.T
        T16 = T32.to(torch.bfloat16).float()  # [K, P] what a bf16 store's reads give
        reference = ws.finetuned("test")
        methods = {name: method_row(ws, name, T32, T16, reference) for name in sorted(METHODS)}
    ties = {
        f"d={d}": {dtype: cut_ties(T, d) for dtype, T in (("float32", T32), ("bfloat16", T16))} for d in (0.2, 0.05)
    }
    deltas = [abs(r["delta_mean_accuracy"]) for r in methods.values()]
    document = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()},
        "zoo": {"tasks": list(ws.task_names), "P": ws.matrix.spec.numel},
        "T_relative_rounding_l2": float((T16 - T32).norm() / T32.norm()),
        "methods": methods,
        "max_abs_delta_mean_accuracy": max(deltas),
        "magnitude_cut_ties": ties,
        "seconds": time.perf_counter() - start,
    }
    OUT.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    for name, row in methods.items():
        print(f"{name:16s} f32 {row['float32']['mean_accuracy']:.4f} bf16 {row['bfloat16']['mean_accuracy']:.4f}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
