"""Where a job's time goes (issue "A lecture that works, behind the screen"): the zoo's default fine-tune (the
Fine-tune page's defaults: τJp, 200 steps of 128 images, β 0.1, strict, val every 20 steps) and WUDI's parts
(300 Adam steps), each submitted as the dashboard submits it (a JobSpec on an open workspace, a run log) and
profiled in its worker thread. Reported per job: wall time, and the seconds of its set-up, steps, validation
passes, progress writes and checkpoint; the threads the runner gave it and the 1-minute load average.

Timings on a shared machine move with its load, so the fine-tune is also put as a ratio: its wall time over
the time of its 200 bare τJp steps measured in the same run (`finetune()` without the job around it); times
that ratio by bench/results/finetune_speed_cpu.json's quiet step for the quiet-machine estimate.

    python bench/job_profile.py
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PARTS = {  # name → (file suffix, function) whose cumulative time is reported
    "validation_passes": ("jobs/finetune.py", "_val_accuracy"),
    "training_steps": ("train/finetune.py", "finetune"),
    "forward_and_loss": ("train/finetune.py", "_loss"),
    "backward": ("torch/_tensor.py", "backward"),
    "progress_writes": ("runs/log.py", "update_job"),
    "checkpoint": ("io/checkpoints.py", "save_checkpoint"),
    "wudi_terms": ("merge/wudi.py", "_terms"),
    "wudi_steps": ("merge/wudi.py", "wudi_run"),
}


def _profiled(kind: str, profile: cProfile.Profile):
    from engine.jobs import spec

    job = spec.JOB_KINDS[kind]

    def run(ctx, **kwargs):
        profile.enable()
        try:
            return job.fn(ctx, **kwargs)
        finally:
            profile.disable()

    run.__name__ = job.fn.__name__
    return replace(job, fn=run)


def _run_job(runner, ws, ref, kind: str, args: dict) -> dict:
    from engine.jobs import spec

    profile = cProfile.Profile()
    original = spec.JOB_KINDS
    spec.JOB_KINDS = {**original, kind: _profiled(kind, profile)}
    try:
        began = time.perf_counter()
        job = spec.submit(runner, spec.JobSpec(kind, ref, args, name=kind), owner="bench", resolve=lambda _r: ws)
        status = runner.wait(job, timeout=3600)
    finally:
        spec.JOB_KINDS = original
    assert status.state.value == "done", status.error
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    seconds = {
        name: round(sum(v[3] for k, v in stats.items() if k[0].endswith(f) and k[2] == fn), 2)
        for name, (f, fn) in PARTS.items()
    }
    wall = time.perf_counter() - began
    first_step = status.stepping_from == 1 and status.stepping_since - status.started_at  # one total throughout
    return {
        "wall_s": round(wall, 2),
        **({"set_up_to_first_step_s": round(first_step, 2)} if first_step else {}),
        "seconds": {k: v for k, v in seconds.items() if v},
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def _bare_steps_s(ws, config) -> float:
    """Seconds of `config.steps` τJp steps through `finetune()` alone (5 timed steps, scaled)."""
    from engine.train.finetune import finetune

    suite, task = ws.suite, "digits"
    others = {t: suite.tasks[t].split("train").images for t in suite.task_names if t != task}
    short = replace(config, steps=5, eval_every=0)
    began = time.perf_counter()
    finetune(suite.visual, suite.spec, ws.matrix.theta0, suite.heads[task], suite.tasks[task].split("train"),
             suite.preprocess, short, others=others)  # fmt: skip
    return (time.perf_counter() - began) / short.steps * config.steps


def main() -> None:
    from engine.home import ASSETS_DIR
    from engine.jobs.runner import LocalRunner, job_threads
    from engine.runs.log import RunLog
    from engine.search.ref import WorkspaceRef
    from engine.train.finetune import FinetuneConfig
    from engine.workspace import Workspace

    config = FinetuneConfig(mode="tau_jp", steps=200, batch_size=128, lr=1e-3, beta=0.1, eval_every=20)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(ASSETS_DIR / "zoo", cache_dir=Path(tmp) / "cache")
        ref = WorkspaceRef.of(ws, collection=str(ASSETS_DIR / "zoo"), device="cpu")
        runner = LocalRunner(run_log=RunLog(Path(tmp) / "runs.sqlite3"))
        finetune_args = {"task": "digits", "config": asdict(config), "out_root": str(Path(tmp) / "ft")}
        finetune = _run_job(runner, ws, ref, "finetune", finetune_args)
        threads = job_threads(running=1, cores=os.cpu_count() or 1, load=os.getloadavg()[0], in_use=0)
        torch.set_num_threads(threads)  # as the runner would give a job now
        bare = _bare_steps_s(ws, config)
        finetune |= {"bare_steps_s": round(bare, 2), "bare_threads": threads}
        finetune["wall_over_bare_steps"] = round(finetune["wall_s"] / bare, 3)
        wudi = _run_job(runner, ws, ref, "merge_parts", {"method": "wudi", "params": {"steps": 300}})
    quiet = json.loads((ROOT / "bench" / "results" / "finetune_speed_cpu.json").read_text())["zoo"]
    quiet_steps_s = config.steps * config.batch_size / quiet["tau_jp_strict"]["img_per_s"]
    report = {
        "benchmark": "where the zoo's default fine-tune and WUDI jobs spend their time, demo zoo, CPU",
        "cores": os.cpu_count(),
        "finetune_config": asdict(config),
        "finetune": finetune,
        "finetune_quiet_estimate_s": round(quiet_steps_s * finetune["wall_over_bare_steps"], 1),
        "wudi_300_steps": wudi,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = ROOT / "bench" / "results" / "job_profile_cpu.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
