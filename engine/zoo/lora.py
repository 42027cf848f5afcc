"""The zoo's LoRA stage: one LoRA adapter per task and its own table of merges, shipped as lora.json.

Each task gets a rank-8 LoRA (Hu et al., ICLR 2022, Eq. 3: W = W₀ + (α/r)·B·A) on the q, k, v and out
projections of every attention block, trained by mergelab's own trainer (engine/train/lora.py) from the stored
θ₀ and saved as a PEFT adapter folder, finetuned/<task>.lora/, named in collection.json as variant "lora".
The table (zero-shot, each adapter alone, then the merges the LoRA-merging papers report: task arithmetic,
TIES, KnOTS-TIES, TSV-M, Iso-C, Iso-CTS, and Core Space's TSV, TIES and Iso-C) chooses each method's setting on
val by mean normalized accuracy (merged / adapter alone) and reports it on test, as the Compare page does for the
standard checkpoints.

Settings chosen on the digits val split of the CPU prototype (200 steps of 128 images, α = r):
zero-shot 39.3 %, standard fine-tuning 91.1 %; LoRA r 8 at lr 1e-3 / 3e-3 / 1e-2: 83.6 / 85.2 / 88.2 %,
r 4 at 3e-3 / 1e-2: 85.6 / 87.5 %. LoRA's update is rank-limited, so it wants a larger step than full
fine-tuning (the LoRA paper's ViT recipes use 10–100× full fine-tuning's rate); r 8 at 1e-2 was the best.
Training is about 20 s per task on two cores; each adapter is under 100 KB.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from engine.eval.evaluate import evaluate
from engine.io.formats.peft_export import export_lora_adapter
from engine.jobs.compare import DEFAULT_GRIDS, compare_job
from engine.jobs.runner import JobContext
from engine.pool.collection import load_collection
from engine.train.finetune import FinetuneConfig
from engine.workspace import Workspace
from engine.zoo.variants import zoo_finetunes

Progress = Callable[[str, float, str], None]
VARIANT = "lora"
TABLE_FILE = "lora.json"
LORA = FinetuneConfig(mode="lora", steps=200, lr=1e-2, lora_rank=8, lora_alpha=8.0)
LORA_METHODS = (
    "task_arithmetic",
    "ties",
    "knots_ties",
    "tsv_m",
    "iso_c",
    "iso_cts",
    "core_tsv",
    "core_ties",
    "core_iso_c",
)
SPLITS = ("val", "test")


def lora_stage(
    work: Path,
    *,
    config: FinetuneConfig = LORA,
    methods: Sequence[str] = LORA_METHODS,
    grids: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    progress: Progress | None = None,
) -> dict:
    """Train and store every task's adapter (unless every task has one already: then only the table is made
    again, from the stored adapters), then compute and store the table; returns what report.json records (the
    table's averages and the adapters' sizes)."""
    progress = progress or (lambda stage, fraction, message: None)
    collection = load_collection(work)
    if not all(VARIANT in collection.variants(t) for t in collection.task_names):
        train_adapters(work, config, progress=progress)
    table = lora_table(work, methods=methods, grids=grids)
    table["training"] = dict(load_collection(work).checkpoint_meta(collection.task_names[0], VARIANT).training)
    (work / TABLE_FILE).write_text(json.dumps(table, indent=2) + "\n")
    manifest = json.loads((work / "collection.json").read_text())
    manifest.setdefault("variant_tables", {})[VARIANT] = TABLE_FILE
    (work / "collection.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return {"lora": {"averages": table["averages"], "adapter_bytes": table["adapter_bytes"]}}


def train_adapters(work: Path, config: FinetuneConfig, *, progress: Progress) -> None:
    """Train one adapter per task from the stored θ₀ (seed = the task's index) and name its folder in
    collection.json; the adapter's notes carry the recipe and class names, as a Fine-tune job's do."""
    manifest = json.loads((work / "collection.json").read_text())
    for tuned in zoo_finetunes(work, config, label=VARIANT, progress=progress):
        relative = f"finetuned/{tuned.task}.{VARIANT}"
        notes = {
            "source": "mergelab zoo build",
            "class_names": list(tuned.suite.tasks[tuned.task].class_names),
            "training": {"kind": "lora fine-tuning", **asdict(tuned.config)},
        }
        architecture = tuned.pretrained.meta.architecture
        export_lora_adapter(tuned.result.lora, work / relative, base_model=architecture, notes=notes)
        manifest["tasks"][tuned.task]["checkpoints"][VARIANT] = relative
    (work / "collection.json").write_text(json.dumps(manifest, indent=2) + "\n")


def lora_table(
    work: Path,
    *,
    methods: Sequence[str] = LORA_METHODS,
    grids: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> dict:
    """Zero-shot, each adapter alone and every method of `methods` (its setting chosen on val over `grids`, else
    its declared grid), on the zoo's stored adapters read back as a task matrix."""
    ws = Workspace.open(work, cache_dir=work / ".cache", variant=VARIANT)
    zero_shot = {s: evaluate(ws.matrix.theta0, ws.suite, s).accuracy for s in SPLITS}
    adapters = {s: dict(ws.finetuned(s)) for s in SPLITS}
    chosen = {m: {**DEFAULT_GRIDS, **(grids or {})}[m] for m in methods}
    ctx = JobContext(lambda **_: None, threading.Event())
    comparison = compare_job(ctx, workspace=ws, methods=tuple(methods), grids=chosen)
    folders = [work / f"finetuned/{t}.{VARIANT}" for t in ws.task_names]
    return {
        "variant": VARIANT,
        "selection": "best mean normalized accuracy (merged / adapter alone) on val; reported on test",
        "zero_shot": zero_shot,
        "adapters": adapters,
        "methods": comparison.to_json(),
        "grids": {m: {k: list(v) for k, v in g.items()} for m, g in chosen.items()},
        "adapter_bytes": {f.name: sum(p.stat().st_size for p in f.iterdir()) for f in folders},
        "averages": {
            "zero_shot_test": _mean(zero_shot["test"]),
            "adapters_test": _mean(adapters["test"]),
            **{r.method: round(r.test_mean_accuracy, 4) for r in comparison.results},
        },
    }


def _mean(values: Mapping[str, float]) -> float:
    return round(sum(values.values()) / len(values), 4)
