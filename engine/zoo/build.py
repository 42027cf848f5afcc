"""Build the offline demo zoo: pretrain a tiny CLIP, fine-tune one image tower per task, report.

Stages (timed in report.json): real images → tasks → pretraining pool → contrastive pretraining
(engine/zoo/pretrain.py) → standard fine-tunes (engine/train/finetune.py) → evaluation of the files as
stored (fp16 read back as fp32, on the CPU) → STA importance maps and forgetting sweeps
(engine/zoo/sta.py) → the τJp matrix (engine/zoo/taujp.py) → linearized and
τJp-regularised fine-tunes with their merges and matrices (engine/zoo/variants.py) → LoRA adapters and their
table of merges (engine/zoo/lora.py) → aTLAS and
DV-BASI (engine/zoo/learned.py) → every method compared (engine/zoo/methods.py) → the pages' first-open
caches (engine/zoo/warm.py) → report.json and manifest.json (sha256 of every file). `update_zoo` runs one later
stage on an existing zoo.
Everything is written into a temporary sibling folder and swapped in at the end, so a failed or
interrupted build never leaves a half-written zoo. Variants (linearized, τJp) are new keys of each
task's "checkpoints", added without rewriting what exists.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.data.generated import file_sha256, generated_task
from engine.data.tasks import TaskData, normalize_batch
from engine.eval.evaluate import evaluate
from engine.eval.heads import build_head
from engine.eval.results import best_index
from engine.eval.suite import EvalSuite
from engine.io.checkpoints import save_checkpoint
from engine.jobs.compare import DEFAULT_GRIDS
from engine.learn.coefficients import LearnConfig
from engine.merge import apply
from engine.merge.forgetting import ALPHAS
from engine.models import create_clip, preprocess_of, tokenizer
from engine.pool.collection import load_collection, open_suite, task_matrix
from engine.processes import process_alive, process_start
from engine.train.finetune import FinetuneConfig, finetune_standard
from engine.zoo.learned import LEARN, learned_stage
from engine.zoo.lora import LORA, lora_stage
from engine.zoo.methods import methods_stage
from engine.zoo.pretrain import PretrainConfig, Snapshot, pick_checkpoint, pretrain_clip
from engine.zoo.report import check_thresholds
from engine.zoo.sta import selective_stage
from engine.zoo.taujp import interference_stage
from engine.zoo.variants import VARIANTS, variants_stage
from engine.zoo.warm import warm_stage

ARCH = "mergelab-zoo"
REAL_IMAGES = "real_images.npz"
TASK_SEED_BASE = 1000
Progress = Callable[[str, float, str], None]  # (stage, fraction, message)


@dataclass(frozen=True)
class ZooConfig:
    pool_size: int = 300_000
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    lambdas: tuple[float, ...] = tuple(round(i / 20, 2) for i in range(21))
    forgetting_alphas: tuple[float, ...] = ALPHAS
    taujp_images: int | None = None  # per task for the shipped τJp matrix (None: the whole val split)
    variants: Mapping[str, FinetuneConfig] = field(default_factory=lambda: dict(VARIANTS))
    lora: FinetuneConfig = LORA
    learned: LearnConfig = LEARN
    learned_iterations: int = 4
    method_grids: Mapping[str, Mapping[str, tuple[float, ...]]] = field(default_factory=dict)  # over the defaults
    images_per_split: int | None = None  # val and test of each task cut to this many (None: the whole splits)
    seed: int = 0
    threads: int = 2

    @classmethod
    def smoke(cls) -> ZooConfig:
        """Few steps, small pool, 64 val and test images per task: every stage in about a minute on two cores."""
        return cls(
            pool_size=4096,
            pretrain=replace(PretrainConfig(), steps=24, batch_size=128, warmup_steps=4, eval_every=12),
            finetune=replace(FinetuneConfig(), steps=6, batch_size=64, warmup_steps=2),
            lambdas=(0.0, 0.5, 1.0),
            forgetting_alphas=(0.0, 1.0),
            taujp_images=16,
            variants={k: replace(v, steps=3, batch_size=32, warmup_steps=1) for k, v in VARIANTS.items()},
            lora=replace(LORA, steps=3, batch_size=32, warmup_steps=1),
            learned=replace(LEARN, epochs=1, patience=1),
            learned_iterations=1,
            method_grids={m: {k: v[:1] for k, v in grid.items()} for m, grid in DEFAULT_GRIDS.items()},
            images_per_split=64,
        )


@dataclass
class StageClock:
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, fn: Callable, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.timings[name] = round(time.perf_counter() - start, 2)
        return result


def build_zoo(
    out_dir: Path, *, real_images: Path, config: ZooConfig = ZooConfig(), progress: Progress | None = None
) -> dict:
    """Build the zoo into `out_dir` (replaced only when the whole build succeeded); returns the report."""
    torch.set_num_threads(config.threads)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = _work_dir(out_dir, "build")
    work.chmod(0o755)
    try:
        report = _build_into(work, real_images=real_images, config=config, progress=progress or _silent)
        _swap_in(work, out_dir)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build_into(work: Path, *, real_images: Path, config: ZooConfig, progress: Progress) -> dict:
    clock = StageClock()
    shutil.copyfile(real_images, work / REAL_IMAGES)
    snapshots, picked = _pretrain_and_finetune(work, config, progress, clock)
    report = clock.run("evaluation", _evaluate_zoo, work, config, progress)
    for name, stage in _later_stages(config, progress):
        report.update(clock.run(name, stage, work))
        _write_interim_report(work, report)  # read by later stages: variants (the standard numbers), warm (methods)
    report.update(pretraining=_history(snapshots, picked), config=_config_dict(config), timings_s=clock.timings)
    shutil.rmtree(work / ".cache", ignore_errors=True)
    report["sizes_bytes"] = _sizes(work)
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _write_sha_manifest(work)
    return report


def _pretrain_and_finetune(work: Path, config: ZooConfig, progress: Progress, clock: StageClock) -> tuple:
    """The tasks, the pretraining pool, the pretrained model (the step picked) and every task's fine-tune in
    `work`, with collection.json; returns (pretraining snapshots, the picked one)."""
    from engine.data.generators import TASK_NAMES, pretrain_pool
    from engine.data.real_images import load_real_images

    seeds = {name: TASK_SEED_BASE + i for i, name in enumerate(TASK_NAMES)}
    real, per_split = work / REAL_IMAGES, config.images_per_split
    tasks = clock.run(
        "tasks",
        lambda: {
            t: generated_task(t, seed=seeds[t], real_images=real, cache_dir=None, images_per_split=per_split)
            for t in TASK_NAMES
        },
    )
    pool = clock.run("pretraining_pool", pretrain_pool, config.pool_size, real=load_real_images(real), seed=config.seed)
    snapshots, picked = clock.run("pretraining", _pretrain, pool, tasks, config, progress)
    training = {"kind": "contrastive pretraining", "step": picked.step, "pool_size": config.pool_size}
    pretrained = save_checkpoint(
        work / "pretrained.safetensors",
        picked.state,
        dtype=torch.float16,
        architecture=ARCH,
        tower="clip",
        variant="pretrained",
        training={**training, **asdict(config.pretrain)},
        source="mergelab zoo build",
    )
    clock.run("finetuning", _finetune_all, work, pretrained, tasks, config, progress)
    _write_manifest_json(work, seeds, images_per_split=per_split)
    return snapshots, picked


def _later_stages(config: ZooConfig, progress: Progress) -> list[tuple[str, Callable[[Path], dict]]]:
    """The stages after the evaluation, in order, each (name, work folder → its report.json entries); `update_zoo`
    runs any one of them again on an existing zoo."""
    return [
        ("selective", functools.partial(selective_stage, alphas=config.forgetting_alphas, progress=progress)),
        ("interference", functools.partial(interference_stage, max_images=config.taujp_images)),
        (
            "variants",
            functools.partial(
                variants_stage,
                configs=config.variants,
                lambdas=config.lambdas,
                taujp_images=config.taujp_images,
                progress=progress,
            ),
        ),
        (
            "lora",
            functools.partial(lora_stage, config=config.lora, grids=config.method_grids or None, progress=progress),
        ),
        ("learned", functools.partial(learned_stage, config=config.learned, iterations=config.learned_iterations)),
        ("methods", functools.partial(methods_stage, grids=config.method_grids)),
        ("warm", warm_stage),  # opens WUDI at the setting the methods stage chose
    ]


def _write_interim_report(work: Path, report: dict) -> None:
    """report.json so far: the variants stage reads the standard checkpoints' numbers from it."""
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def _pretrain(pool, tasks: Mapping[str, TaskData], config: ZooConfig, progress: Progress):
    torch.manual_seed(config.seed)
    clip = create_clip(ARCH)
    tokens = tokenizer(ARCH)(list(pool.captions))  # [U, L]
    chance = {t: 1.0 / len(d.class_names) for t, d in tasks.items()}
    snapshots = pretrain_clip(
        clip,
        pool.images,
        pool.caption_ids,
        tokens,
        config.pretrain,
        probe=lambda model: _zero_shot_val(model, tasks),
        progress=lambda f, m: progress("pretraining", f, m),
    )
    return snapshots, pick_checkpoint(snapshots, chance=chance)


def _zero_shot_val(clip: torch.nn.Module, tasks: Mapping[str, TaskData]) -> dict[str, float]:
    """Zero-shot val accuracy per task, with heads from the model's current text tower."""
    preprocess = preprocess_of(clip.visual)
    result = {}
    for name, task in tasks.items():
        val = task.split("val")
        head = build_head(clip, ARCH, task.class_names, task.templates)  # [C, E]
        feats = F.normalize(clip.encode_image(normalize_batch(val.images, preprocess)), dim=-1)  # [N, E]
        result[name] = float(((feats @ head.T).argmax(-1) == val.labels).float().mean())
    return result


def _finetune_all(work: Path, pretrained, tasks: Mapping[str, TaskData], config: ZooConfig, progress: Progress) -> None:
    """One standard fine-tune per task, starting from the pretrained weights *as stored* (fp16)."""
    from engine.eval.heads import load_clip

    clip = load_clip(pretrained)  # fp32 copy of the fp16 weights: τ then carries no rounding of θ₀
    preprocess = preprocess_of(clip.visual)
    for i, (name, task) in enumerate(tasks.items()):
        head = build_head(clip, ARCH, task.class_names, task.templates)
        cfg = replace(config.finetune, seed=config.seed + i)
        state = finetune_standard(
            clip.visual,
            head,
            task.split("train"),
            preprocess,
            cfg,
            progress=lambda f, m, n=name: progress(f"finetune {n}", f, m),
        )
        save_checkpoint(
            work / "finetuned" / f"{name}.standard.safetensors",
            state,
            dtype=torch.float16,
            architecture=ARCH,
            task=name,
            variant="standard",
            class_names=task.class_names,
            training={"kind": "standard fine-tuning", **asdict(cfg)},
            source="mergelab zoo build",
            parent_sha256=pretrained.sha256,
        )


def _write_manifest_json(work: Path, seeds: Mapping[str, int], *, images_per_split: int | None) -> None:
    cut = {} if images_per_split is None else {"images_per_split": images_per_split}  # the shipped zoo: no key
    tasks = {
        t: {
            "data": {"task": t, "seed": s, "real_images": REAL_IMAGES, **cut},
            "checkpoints": {"standard": f"finetuned/{t}.standard.safetensors"},
        }
        for t, s in seeds.items()
    }
    manifest = {
        "schema_version": 1,
        "name": "mergelab demo zoo",
        "description": "A tiny CLIP pretrained from scratch on generated images, with one fine-tuned "
        "image tower per task: 3 tasks from real images bundled with scikit-learn and "
        "scikit-image (digits, faces, textures) and 5 generated ones.",
        "pretrained": "pretrained.safetensors",
        "tasks": tasks,
    }
    (work / "collection.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _evaluate_zoo(work: Path, config: ZooConfig, progress: Progress) -> dict:
    """Zero-shot, fine-tuned and task-arithmetic accuracies of the stored files, in fp32 on the CPU."""
    collection = load_collection(work)
    suite = open_suite(collection, cache_dir=work / ".cache", device="cpu")
    tm = task_matrix(collection, device="cpu")
    splits = ("val", "test", "interactive")
    zero_shot = {s: evaluate(tm.theta0, suite, s).accuracy for s in splits}
    finetuned = {s: _finetuned_accuracy(suite, tm, s) for s in splits}
    curve = []
    for i, lam in enumerate(config.lambdas):
        result = evaluate(
            apply("task_arithmetic", tm.theta0, tm.T, {"lam": lam}), suite, "val", reference=finetuned["val"]
        )
        curve.append(
            {
                "lam": lam,
                "mean_accuracy": round(result.mean_accuracy, 4),
                "mean_normalized": round(result.mean_normalized, 4),
            }
        )
        progress("task arithmetic sweep", (i + 1) / len(config.lambdas), f"λ={lam}")
    best = curve[best_index([c["mean_normalized"] for c in curve])]["lam"]  # λ ascending: the smaller on ties
    merged = apply("task_arithmetic", tm.theta0, tm.T, {"lam": best})
    at_best = {s: evaluate(merged, suite, s).accuracy for s in splits}
    report = {
        "schema_version": 1,
        "architecture": ARCH,
        "tasks": _task_info(suite),
        "zero_shot": zero_shot,
        "finetuned": finetuned,
        "task_arithmetic": {
            "selection": "best mean normalized accuracy on val",
            "val_curve": curve,
            "best_lambda": best,
            "at_best": at_best,
        },
    }
    report["averages"] = {
        f"{kind}_{s}": round(sum(v[s].values()) / len(v[s]), 4)
        for kind, v in (("zero_shot", zero_shot), ("finetuned", finetuned), ("ta_best", at_best))
        for s in splits
    }
    report["thresholds"] = check_thresholds(report)
    return report


def _finetuned_accuracy(suite: EvalSuite, tm, split: str) -> dict[str, float]:
    return {t: evaluate(tm.theta0 + tm.T[k], suite, split, tasks=[t]).accuracy[t] for k, t in enumerate(tm.task_names)}


def _task_info(suite: EvalSuite) -> dict:
    return {
        t: {
            "classes": list(d.class_names),
            "chance": round(1 / len(d.class_names), 4),
            "sizes": {s: len(d.split(s)) for s in ("train", "val", "test", "interactive")},
        }
        for t, d in suite.tasks.items()
    }


def _history(snapshots: list[Snapshot], picked: Snapshot) -> dict:
    return {
        "picked_step": picked.step,
        "history": [
            {
                "step": s.step,
                "loss": round(s.loss, 4),
                "zero_shot_val_mean": round(sum(s.zero_shot.values()) / len(s.zero_shot), 4),
                "zero_shot_val": {t: round(a, 4) for t, a in s.zero_shot.items()},
            }
            for s in snapshots
        ],
    }


def _config_dict(config: ZooConfig) -> dict:
    return json.loads(json.dumps(asdict(config)))


def _sizes(work: Path) -> dict[str, int]:
    files = {str(p.relative_to(work)): p.stat().st_size for p in sorted(work.rglob("*")) if p.is_file()}
    return {**files, "total": sum(files.values())}


def _write_sha_manifest(work: Path) -> None:
    files = {
        str(p.relative_to(work)): file_sha256(p)
        for p in sorted(work.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    (work / "manifest.json").write_text(json.dumps(files, indent=2) + "\n")


def update_zoo(zoo: Path, stage: Callable[[Path], dict], *, name: str, threads: int = 2) -> dict:
    """Run one later stage on a copy of an existing zoo, record it in report.json, swap the copy in."""
    zoo = Path(zoo)
    torch.set_num_threads(threads)
    work = _work_dir(zoo, "update")
    try:
        shutil.copytree(zoo, work, dirs_exist_ok=True)
        work.chmod(0o755)
        clock = StageClock()
        recorded = clock.run(name, stage, work)
        shutil.rmtree(work / ".cache", ignore_errors=True)
        report = json.loads((work / "report.json").read_text())
        report.update(recorded)
        report["timings_s"] = {**report.get("timings_s", {}), **clock.timings}
        report["sizes_bytes"] = _sizes(work)
        (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        _write_sha_manifest(work)
        _swap_in(work, zoo)
        return recorded
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _work_dir(target: Path, kind: str) -> Path:
    """A fresh sibling `.<name>-<kind>-<pid>-<start>-<random>` of `target` to build in, after removing the ones
    whose process is gone (a build or update killed before its `finally` ran leaves its copy behind)."""
    prefix = f".{target.name}-{kind}-"
    for stale in target.parent.glob(f"{prefix}*"):
        pid, started, *_ = stale.name.removeprefix(prefix).split("-") + ["", ""]
        if stale.is_dir() and pid.isdigit() and not process_alive(int(pid), started):
            shutil.rmtree(stale, ignore_errors=True)
    tag = f"{prefix}{os.getpid()}-{process_start(os.getpid())}-"
    return Path(tempfile.mkdtemp(prefix=tag, dir=target.parent))


def _swap_in(work: Path, out_dir: Path) -> None:
    """Replace `out_dir` by the finished build in two renames (old copy removed afterwards)."""
    old = out_dir.with_name(f".{out_dir.name}-old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    work.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _silent(stage: str, fraction: float, message: str) -> None:
    return None
