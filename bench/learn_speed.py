"""Learned-coefficient steps (aTLAS: K task vectors × blocks; DV-BASI: one δ × blocks) against bare
forward+backward throughput of the same encoder on the same batch, same run (issue "Learned coefficients").

One step = build θ(C) (engine.learn.coefficients.combine) + the supervised objective through every
task's head + backward to C + AdamW on C. Goal: img/s ≥ 70% of bare fwd+bwd (the merge inside the step
must not dominate). Demo zoo (its val images) and random ViT-B-32 weights with 8 random task vectors.
Writes bench/results/learn_speed_<device>.json.

    python bench/learn_speed.py [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.finetune_speed import _sync, bare_fwd_bwd  # noqa: E402
from engine.data.tasks import LabelledImages  # noqa: E402
from engine.eval.suite import EvalSuite  # noqa: E402
from engine.learn.coefficients import block_sizes, combine, objective_loss  # noqa: E402
from engine.models import create_visual, pick_device, preprocess_of  # noqa: E402
from engine.params import ParamSpec, flatten  # noqa: E402


def step_rate(
    suite: EvalSuite, base: torch.Tensor, directions: torch.Tensor, batch: dict, *, steps: int, device: torch.device
) -> float:
    """img/s of whole coefficient steps (after one warm-up step)."""
    sizes = block_sizes(suite.spec)
    coefficients = torch.zeros(directions.shape[0], sizes.numel(), device=device, requires_grad=True)
    optimizer = torch.optim.AdamW([coefficients], lr=1e-2)

    def step() -> None:
        loss = objective_loss(suite, combine(base, directions, coefficients, sizes), batch, "supervised")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return sum(len(b) for b in batch.values()) * steps / (time.perf_counter() - start)


def measure(
    suite: EvalSuite, theta0: torch.Tensor, T: torch.Tensor, batch: dict, *, steps: int, device: torch.device
) -> dict:
    images = torch.cat([b.images for b in batch.values()])
    bare = bare_fwd_bwd(suite.visual, suite.spec, theta0, images, suite.preprocess, steps=steps, device=device)
    atlas = step_rate(suite, theta0, T, batch, steps=steps, device=device)
    delta = 0.3 * T.sum(dim=0)  # [P] a merged point's difference vector
    dvbasi = step_rate(suite, theta0 + delta, delta[None], batch, steps=steps, device=device)
    return {
        "images_per_step": images.shape[0],
        "steps": steps,
        "tasks": T.shape[0],
        "blocks": len(suite.spec.names),
        "bare_fwd_bwd_img_per_s": round(bare, 2),
        "atlas": {"img_per_s": round(atlas, 2), "ratio_to_bare": round(atlas / bare, 3)},
        "dv_basi": {"img_per_s": round(dvbasi, 2), "ratio_to_bare": round(dvbasi / bare, 3)},
    }


def zoo(device: torch.device, steps: int) -> dict:
    import tempfile

    from engine.home import ASSETS_DIR
    from engine.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(ASSETS_DIR / "zoo", cache_dir=Path(tmp), device=device)
    vals = {t: ws.suite.tasks[t].split("val") for t in ws.task_names}
    batch = {t: LabelledImages(v.images[:16], v.labels[:16]) for t, v in vals.items()}
    return measure(ws.suite, ws.matrix.theta0, ws.matrix.T, batch, steps=steps, device=device)


def vit_b_32(device: torch.device, steps: int, per_task: int) -> dict:
    torch.manual_seed(0)
    visual = create_visual("ViT-B-32").to(device).eval()
    spec = ParamSpec.from_state_dict(visual.state_dict())
    theta0 = flatten(visual.state_dict(), spec, device=device)  # [P]
    T = torch.randn(8, spec.numel, device=device) * 1e-3  # [8, P]
    preprocess = preprocess_of(visual)
    size = preprocess.image_size
    tasks = [f"t{i}" for i in range(8)]
    heads = {t: torch.nn.functional.normalize(torch.randn(10, 512, device=device), dim=-1) for t in tasks}
    batch = {
        t: LabelledImages(
            torch.randint(0, 256, (per_task, 3, size, size), dtype=torch.uint8, device=device),
            torch.randint(0, 10, (per_task,), device=device),
        )
        for t in tasks
    }
    suite = EvalSuite(visual, spec, preprocess, {}, heads)
    return measure(suite, theta0, T, batch, steps=steps, device=device)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device")
    args = parser.parse_args()
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    out = {
        "benchmark": "aTLAS / DV-BASI coefficient steps vs bare fwd+bwd, same run",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "goal_ratio_min": 0.7,
    }
    out["zoo"] = zoo(device, steps=20 if cuda else 10)
    out["vit_b_32"] = vit_b_32(device, steps=10 if cuda else 2, per_task=16 if cuda else 1)
    out["measured"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (ROOT / "bench" / "results" / f"learn_speed_{device.type}.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
