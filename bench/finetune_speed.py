"""Fine-tuning throughput per mode against bare forward+backward throughput of the same encoder, same run
(issue "τJp-regularised fine-tuning and the zoo's linearized variants").

For each mode of engine/train/finetune.py (standard, linearized, linearized + τJp penalty with the strict and
cyclic schedules) the task images per second of whole optimiser steps, and as a ratio to (1) bare
fwd+bwd: `functional_call` forward and backward on the same batch, no optimiser. Encoders: the demo zoo
(its real tasks) and random ViT-B-32 weights (random images; small batches on the CPU). The τJp modes
also push `penalty_batch` images of each penalised other task through the JVP, which is counted in
`penalty_images_per_step`, not in img/s. Writes bench/results/finetune_speed_<device>.json.

    python bench/finetune_speed.py [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.func import functional_call

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from engine.data.tasks import LabelledImages, normalize_batch  # noqa: E402
from engine.models import create_visual, pick_device, preprocess_of  # noqa: E402
from engine.params import ParamSpec, flatten, unflatten  # noqa: E402
from engine.train.finetune import FinetuneConfig, finetune  # noqa: E402

MODES = {
    "standard": {"mode": "standard"},
    "linearized": {"mode": "linearized"},
    "tau_jp_strict": {"mode": "tau_jp", "penalty": "strict"},
    "tau_jp_cyclic": {"mode": "tau_jp", "penalty": "cyclic"},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_fwd_bwd(
    visual, spec: ParamSpec, theta0: torch.Tensor, images: torch.Tensor, preprocess, *, steps: int, device: torch.device
) -> float:
    """img/s of forward + backward through functional_call on one batch (no optimiser)."""
    theta = theta0.clone().requires_grad_(True)
    x = normalize_batch(images, preprocess)  # [B, 3, S, S]

    def step() -> None:
        functional_call(visual, unflatten(theta, spec), (x,)).sum().backward()
        theta.grad = None

    step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return images.shape[0] * steps / (time.perf_counter() - start)


def mode_throughput(
    visual,
    spec,
    theta0,
    head,
    train: LabelledImages,
    others: dict,
    preprocess,
    config: FinetuneConfig,
    *,
    device: torch.device,
) -> float:
    """img/s (task images) of whole fine-tuning steps, after a 1-step warm-up."""
    finetune(visual, spec, theta0, head, train, preprocess, replace(config, steps=1), others=others)
    _sync(device)
    start = time.perf_counter()
    finetune(visual, spec, theta0, head, train, preprocess, config, others=others)
    _sync(device)
    return config.batch_size * config.steps / (time.perf_counter() - start)


def measure(visual, spec, theta0, head, train, others, preprocess, base: FinetuneConfig, *, device) -> dict:
    bare = bare_fwd_bwd(
        visual, spec, theta0, train.images[: base.batch_size], preprocess, steps=base.steps, device=device
    )
    out = {
        "batch_size": base.batch_size,
        "steps": base.steps,
        "penalty_batch": base.penalty_batch,
        "other_tasks": len(others),
        "bare_fwd_bwd_img_per_s": round(bare, 2),
    }
    for name, settings in MODES.items():
        config = replace(base, **settings)
        rate = mode_throughput(visual, spec, theta0, head, train, others, preprocess, config, device=device)
        penalty = (
            0 if config.mode != "tau_jp" else base.penalty_batch * (len(others) if config.penalty == "strict" else 1)
        )
        out[name] = {
            "img_per_s": round(rate, 2),
            "ratio_to_bare": round(rate / bare, 3),
            "penalty_images_per_step": penalty,
        }
    return out


def zoo(device: torch.device, base: FinetuneConfig) -> dict:
    import tempfile

    from engine.home import ASSETS_DIR
    from engine.pool.collection import load_collection, open_suite, pretrained_vector

    collection = load_collection(ASSETS_DIR / "zoo")
    with tempfile.TemporaryDirectory() as tmp:
        suite = open_suite(collection, cache_dir=Path(tmp), device=device)
    theta0 = pretrained_vector(collection, suite.spec, device=device)  # [P]
    task = "digits"
    others = {t: suite.tasks[t].split("train").images for t in suite.task_names if t != task}
    return measure(
        suite.visual,
        suite.spec,
        theta0,
        suite.heads[task],
        suite.tasks[task].split("train"),
        others,
        suite.preprocess,
        base,
        device=device,
    )


def vit_b_32(device: torch.device, base: FinetuneConfig) -> dict:
    torch.manual_seed(0)
    visual = create_visual("ViT-B-32").to(device).eval()
    spec = ParamSpec.from_state_dict(visual.state_dict())
    theta0 = flatten(visual.state_dict(), spec, device=device)  # [P]
    preprocess = preprocess_of(visual)
    size, n = preprocess.image_size, base.batch_size * 2

    def images(count: int) -> torch.Tensor:
        return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, device=device)  # [N, 3, S, S]

    train = LabelledImages(images(n), torch.randint(0, 10, (n,), device=device))
    head = torch.nn.functional.normalize(torch.randn(10, 512, device=device), dim=-1)  # [C, E]
    others = {f"other{i}": images(base.penalty_batch * 2) for i in range(7)}
    return measure(visual, spec, theta0, head, train, others, preprocess, base, device=device)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device")
    args = parser.parse_args()
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    out = {
        "benchmark": "fine-tuning img/s per mode vs bare fwd+bwd, same run",
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    out["zoo"] = zoo(device, FinetuneConfig(steps=20 if cuda else 5, batch_size=128, penalty_batch=8, beta=1.0))
    out["vit_b_32"] = vit_b_32(
        device,
        FinetuneConfig(
            steps=10 if cuda else 2, batch_size=128 if cuda else 8, penalty_batch=16 if cuda else 1, beta=0.1
        ),
    )
    out["measured"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (ROOT / "bench" / "results" / f"finetune_speed_{device.type}.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
