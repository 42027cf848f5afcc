"""`python -m engine benchmark`: the papers' table on a pool (engine/jobs/benchmark.py) from the command line.

The command is the Benchmark page's job (`JobSpec("benchmark", ...)`), run on a `LocalRunner` that records it
in the data home's run log, with a tqdm bar on stderr showing the trials done and the time left. The JSON and
its Markdown table (`.md` beside it) are rewritten after every trial, so Ctrl-C (exit 130) keeps what was
reached and the same command resumes from it. stdout gets the Markdown table and the two paths.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from engine.data.splits import PROFILES
from engine.eval.benchmark import markdown
from engine.home import ASSETS_DIR, DataHome
from engine.jobs.benchmark import DEFAULT_METHODS, GPU_NOTE, benchmark_tasks
from engine.jobs.runner import FINISHED, JobState, LocalRunner
from engine.jobs.spec import JobSpec, open_workspace, submit
from engine.models import pick_device
from engine.pool.access import open_for_user
from engine.runs.log import RunLog
from engine.search.ray_trials import RAY_ENV
from engine.search.ref import WorkspaceRef

CANCELLED_EXIT = 130
POLL_S = 0.2


def register(sub: argparse._SubParsersAction) -> None:
    help_text = "every method's grid on val, its best setting once on test: the papers' table, published numbers beside"
    parser = sub.add_parser("benchmark", help=help_text, description=f"{help_text}. {GPU_NOTE}.")
    parser.add_argument(
        "--collection", type=Path, default=ASSETS_DIR / "zoo", help="pool folder, manifest or hub cache"
    )
    parser.add_argument("--suite", help="TA8, TALL14 or TALL20: its tasks, each required (default: every task)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--val-profile", choices=list(PROFILES), help="draw every task's val split this way")
    parser.add_argument("--limit-per-task", type=int, help="at most N val and N test images per task (stratified)")
    parser.add_argument("--seed", type=int, default=0, help="the subsample's seed (default: 0)")
    parser.add_argument("--published-architecture", help="compare with this architecture's published numbers")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    parser.add_argument("--ray", metavar="ADDRESS", help=f"local, auto or a cluster address (default: ${RAY_ENV})")
    parser.add_argument("--workers", type=int, help="Ray workers (default: one per GPU, else per CPU)")
    parser.add_argument("--out", type=Path, help="the JSON (and .md beside it); default: <data home>/benchmarks/")
    parser.set_defaults(run=run_benchmark)


def run_benchmark(args: argparse.Namespace) -> int:
    home, policy = DataHome.from_env().ensure(), DataHome.shell_policy()
    collection = open_for_user(args.collection, home=home, policy=policy)
    tasks = benchmark_tasks(collection, None, args.suite)
    device = str(pick_device(args.device))
    ref = WorkspaceRef.of_selection(collection, tasks=tasks, variants={}, device=device)
    ref = replace(ref, collection=str(policy.resolve(args.collection)))
    name = f"{collection.root.name}-{args.suite or 'all'}" + (f"-n{args.limit_per_task}" if args.limit_per_task else "")
    out = policy.resolve(args.out) if args.out else home.root / "benchmarks" / f"{name}.json"
    job_args = {
        "tasks": list(tasks),
        "methods": [m.strip() for m in args.methods.split(",") if m.strip()],
        "suite": args.suite,
        "val_profile": args.val_profile,
        "limit_per_task": args.limit_per_task,
        "seed": args.seed,
        "published_architecture": args.published_architecture,
        "ray": args.ray,
        "workers": args.workers,
        "out": str(out),
    }
    if device == "cpu" and not args.limit_per_task:
        print(f"note: {GPU_NOTE}; --limit-per-task N subsamples", file=sys.stderr)
    spec = JobSpec("benchmark", ref, job_args, name=f"benchmark {name}")
    return _run(spec, home=home, policy=policy, out=out)


def _run(spec: JobSpec, *, home: DataHome, policy, out: Path) -> int:
    runner = LocalRunner(run_log=RunLog(home.runs / "runs.sqlite3"), threads=home.job_threads())
    job = submit(runner, spec, owner="cli", resolve=lambda ref: open_workspace(ref, home=home, policy=policy))
    with tqdm(desc="benchmark", unit="trial", disable=None, file=sys.stderr) as bar:
        try:
            while (status := runner.status(job)).state not in FINISHED:
                bar.total = status.total or None
                bar.set_postfix_str(status.message[-60:], refresh=False)
                bar.update(status.step - bar.n)
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            runner.cancel(job)
            status = runner.wait(job)
    if status.state is JobState.FAILED:
        print(f"error: {status.error.strip().splitlines()[-1]}", file=sys.stderr)
        return 1
    if status.state is JobState.DONE:
        print(markdown(status.result), end="")
    else:
        print(f"interrupted: what was reached is in {out}; the same command resumes it", file=sys.stderr)
    print(f"\nJSON: {out}\nMarkdown: {out.with_suffix('.md')}")
    return 0 if status.state is JobState.DONE else CANCELLED_EXIT
