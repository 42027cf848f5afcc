"""`python -m engine warm`: before a class, compute what the dashboard's pages compute on their first open
(engine/jobs/warm.py) into the data home, where a server started later reads it.

The pool opens as the dashboard opens it (`open_for_user`, the data home's fine-tunes included), on the device
the dashboard would pick. Each step is named on stderr as it starts; stdout gets the JSON report (seconds per
step: a second run only reads).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.home import ASSETS_DIR, DataHome
from engine.jobs.warm import warm_workspace
from engine.models import pick_device
from engine.pool.access import open_for_user
from engine.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    help_text = "compute the pages' first-open caches of a pool into the data home (before a class)"
    parser = sub.add_parser("warm", help=help_text, description=help_text)
    parser.add_argument(
        "--collection", type=Path, default=ASSETS_DIR / "zoo", help="pool folder, manifest or hub cache"
    )
    parser.add_argument("--tasks", nargs="+", help="subset of the pool's tasks (default: all, as the pages open)")
    parser.add_argument("--variant", default="standard", help="the checkpoint of every task (default: standard)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present, as the dashboard)")
    parser.set_defaults(run=run_warm)


def run_warm(args: argparse.Namespace) -> int:
    home, policy = DataHome.from_env().ensure(), DataHome.shell_policy()
    collection = open_for_user(args.collection, home=home, policy=policy)
    ws = Workspace.from_collection(
        collection,
        cache_dir=home.cache,
        device=pick_device(args.device),
        variant=args.variant,
        tasks=args.tasks,
        store=home.store_choice(),
    )
    report = warm_workspace(ws, progress=lambda step: print(f"warming: {step}", file=sys.stderr, flush=True))
    print(json.dumps(report.to_json(), indent=2))
    return 0
