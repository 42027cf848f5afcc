"""The command line: `python -m engine eval|merge|methods ...` on a collection (default: the demo zoo),
`python -m engine pool show|convert|export-hf` on the pools researchers bring, and `python -m engine home`
for the data home's size (and `--clear-caches`); `python -m engine sweep|search RECIPE` for grids over a
method's parameters and searches over per-task λ, in process or on Ray workers (`--ray`, or `MERGELAB_RAY`).

Long work shows a tqdm bar on stderr (hidden when stderr is not a terminal); errors print one
line naming the file and the fix, and exit with status 2. A discovered pool with entries it cannot read is
refused naming them; `--skip-unreadable` goes on without them, each printed as a warning and listed under
"skipped" in the printed JSON and the run log. Paths are the shell user's own: relative ones
resolve against the current directory and none is confined to the dashboard's allowed roots
(`DataHome.shell_policy`); collections open through the same `open_for_user` as the dashboard's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from engine import cli_benchmark, cli_jobs, cli_warm
from engine.data.splits import PROFILES
from engine.data.suites import require_suite, suite_named, suite_tasks, suites
from engine.errors import MergelabError, OutputExistsError, ParameterError
from engine.eval.evaluate import EvalResult, evaluate
from engine.eval.suite import EvalSuite
from engine.home import ASSETS_DIR, STORE_CHOICES, DataHome, PathPolicy
from engine.io.checkpoints import load_checkpoint
from engine.jobs.runner import FINISHED, JobState, JobStatus, LocalRunner
from engine.jobs.search import grid_sweep_job, search_job
from engine.merge import METHODS, MergeMethod
from engine.merge.pipeline import pipeline_name
from engine.models import pick_device
from engine.params import flatten
from engine.pool.access import open_for_user
from engine.pool.collection import Collection, open_suite, pretrained_vector
from engine.pool.convert import convert_pool
from engine.pool.info import CheckpointInfo, checkpoint_family, pool_checkpoints, pool_suite
from engine.runs.log import RunLog
from engine.runs.recipe_runner import RecipeSelection, run_recipe, select
from engine.runs.recipes import MergeRecipe, load_recipe, parse_recipe
from engine.search.axes import parse_axes
from engine.search.backend import ray_setting
from engine.search.coefficients import STRATEGIES, SearchSpace
from engine.search.grid import checked_axes
from engine.search.ray_trials import RAY_ENV
from engine.search.ref import WorkspaceRef
from engine.workspace import Workspace

DEFAULT_COLLECTION = ASSETS_DIR / "zoo"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except MergelabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="mergelab engine")
    sub = parser.add_subparsers(required=True)
    _add_eval_and_merge(sub)
    _add_recipes_and_trials(sub)
    _add_listings(sub)
    _add_pool(sub)
    _add_zoo(sub)
    cli_jobs.register(sub)  # finetune, learn, taujp, importance, compare, landscape, job SPEC.json
    cli_benchmark.register(sub)  # benchmark: the papers' table on a pool
    cli_warm.register(sub)  # warm: the pages' first-open caches, before a class
    return parser


Subparsers = argparse._SubParsersAction  # what add_subparsers returns


def _add_eval_and_merge(sub: Subparsers) -> None:
    """eval (a checkpoint's accuracy) and merge (task vectors into a checkpoint)."""
    ev = sub.add_parser("eval", help="accuracy of the pretrained model or a checkpoint")
    _common(ev)
    ev.add_argument("--checkpoint", type=Path, help="image-tower checkpoint (default: the pretrained model)")
    ev.add_argument("--normalized", action="store_true", help="also normalized accuracy (runs fine-tuned models)")
    ev.set_defaults(run=_run_eval)
    mg = sub.add_parser("merge", help="merge task vectors and write safetensors + sidecar + recipe")
    _common(mg)
    mg.add_argument("--method", default="task_arithmetic", help=f"one of {', '.join(METHODS)}")
    mg.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=V[,V...]",
        help="method parameter; comma-separated values give one per task; a calibrator's as svc.alpha=V",
    )
    mg.add_argument("--calibrate", action="append", default=[], help="calibrator after the merge: lines, svc")
    mg.add_argument("--transform", action="append", default=[], help="transform of the task vectors (none yet)")
    mg.add_argument("--variant", default="standard", help="fine-tuned variant to merge")
    mg.add_argument("--out", required=True, help="output .safetensors (a bare name goes to <data home>/exports)")
    mg.add_argument("--eval", dest="eval_split", help="also evaluate the merge on this split")
    mg.add_argument(
        "--store", choices=STORE_CHOICES, help="how the task vectors open (default: config.json's, else auto)"
    )
    mg.set_defaults(run=_run_merge)


def _add_recipes_and_trials(sub: Subparsers) -> None:
    """run (a recipe), sweep (a grid) and search (TPE / CMA-ES)."""
    rc = sub.add_parser("run", help="run a merge recipe (JSON or YAML): merge, export, evaluate, log")
    rc.add_argument("recipe", type=Path)
    rc.add_argument("--device", help="cpu, cuda, ... (default: CUDA when present)")
    rc.add_argument(
        "--store", choices=STORE_CHOICES, help="how the task vectors open (default: config.json's, else auto)"
    )
    _skip_flag(rc)
    rc.set_defaults(run=_run_recipe)
    sweep = sub.add_parser("sweep", help="a grid over the recipe method's parameters (in process, or on Ray)")
    _trials_common(sweep)
    sweep.add_argument(
        "--grid",
        nargs="+",
        required=True,
        metavar="NAME=LOW:HIGH:COUNT|NAME=V1,V2",
        help="grid axes, e.g. lam=0:1:21 density=0.1,0.2,0.5 (the last varies fastest)",
    )
    sweep.set_defaults(run=_run_sweep)
    search = sub.add_parser("search", help="a TPE or CMA-ES search over per-task λ (in process, or on Ray)")
    _trials_common(search)
    search.add_argument("--trials", type=int, default=200)
    search.add_argument("--strategy", choices=STRATEGIES, default="tpe")
    search.add_argument("--batch", type=int, default=8, help="trials asked and told together (fixes the trials)")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--param", default="lam", help="the per-task parameter searched")
    search.add_argument("--low", type=float, default=0.0)
    search.add_argument("--high", type=float, default=1.0)
    search.set_defaults(run=_run_search)


def _add_listings(sub: Subparsers) -> None:
    """methods, suites and the data home."""
    ls = sub.add_parser("methods", help="list merge methods and their parameters")
    ls.set_defaults(run=_run_methods)
    su = sub.add_parser("suites", help="the field's task suites (TA8, TALL14, TALL20) and validation split profiles")
    su.add_argument("suite", nargs="?", help="one suite's tasks: class and template counts, dataset ids, aliases")
    su.add_argument("--pool", type=Path, help="check that this pool holds every task of SUITE (default TA8)")
    su.set_defaults(run=_run_suites)
    home = sub.add_parser("home", help="the data home's size per folder; --clear-caches frees the caches")
    home.add_argument("--clear-caches", action="store_true", help="remove cache/ (exports, checkpoints, runs kept)")
    home.set_defaults(run=_run_home)


def _add_pool(sub: Subparsers) -> None:
    """pool show / convert / export-hf."""
    pool = sub.add_parser("pool", help="inspect, convert and export model pools").add_subparsers(required=True)
    show = pool.add_parser("show", help="format, architecture, towers and variant of every checkpoint (no tensor read)")
    show.add_argument("path", type=Path, help="pool folder, pool manifest (YAML/JSON) or collection")
    show.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    show.set_defaults(run=_run_pool_show)
    convert = pool.add_parser("convert", help="write a pool once as fp32 safetensors + sidecars (weights-only loads)")
    convert.add_argument("path", type=Path, help="pool folder, pool manifest (YAML/JSON) or collection")
    convert.add_argument("out", type=Path, help="the new collection folder (must not exist)")
    _skip_flag(convert)
    convert.set_defaults(run=_run_pool_convert)
    export_hf = pool.add_parser("export-hf", help="write any readable checkpoint as a Hugging Face model folder")
    export_hf.add_argument("checkpoint", type=Path, help="checkpoint file or Hugging Face folder, any format")
    export_hf.add_argument("out", type=Path, help="output folder (config.json + model.safetensors; new or empty)")
    export_hf.set_defaults(run=_run_pool_export_hf)


def _add_zoo(sub: Subparsers) -> None:
    """zoo build, its later stages (add-*) and extract-real."""
    zoo = sub.add_parser("zoo", help="build the offline demo zoo").add_subparsers(required=True)
    build = zoo.add_parser("build", help="pretrain, fine-tune, evaluate; writes report.json and manifest.json")
    build.add_argument("--out", type=Path, default=DEFAULT_COLLECTION)
    build.add_argument("--smoke", action="store_true", help="a few steps only: checks the whole path quickly")
    build.add_argument("--real-images", type=Path, help="default: <out>/real_images.npz, else extracted afresh")
    build.set_defaults(run=_run_zoo_build)
    for name, help_text, run in (
        ("add-sta", "add STA importance maps and forgetting sweeps to an existing zoo", _run_zoo_add_sta),
        ("add-taujp", "add the τJp matrix (interference) to an existing zoo", _run_zoo_add_taujp),
        ("add-methods", "add every merge method at its best val setting (report.json → methods)", _run_zoo_add_methods),
        ("add-variants", "add linearized and τJp-regularised fine-tunes of every task", _run_zoo_add_variants),
        ("add-lora", "add a LoRA adapter per task and its table of merges (lora.json)", _run_zoo_add_lora),
        ("add-benchmark", "add the benchmark's table of the zoo (benchmark.json)", _run_zoo_add_benchmark),
        ("add-learned", "add aTLAS / DV-BASI results (report.json → learned)", _run_zoo_add_learned),
        (
            "add-warm",
            "add the pages' first-open caches (warm/: opening numbers, JVPs, WUDI's parts)",
            _run_zoo_add_warm,
        ),
        (
            "add-learned-taujp",
            "add only DV-BASI from the τJp-regularised merge (report.json → learned)",
            _run_zoo_add_learned_taujp,
        ),
    ):
        stage = zoo.add_parser(name, help=help_text)
        stage.add_argument(
            "--zoo", type=Path, default=DEFAULT_COLLECTION, help="the zoo folder (default: the shipped one)"
        )
        stage.set_defaults(run=run)
    extract = zoo.add_parser("extract-real", help="extract the real source images from scikit-learn/-image")
    extract.add_argument("--out", type=Path, default=DEFAULT_COLLECTION / "real_images.npz")
    extract.set_defaults(run=_run_zoo_extract)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", type=Path, default=DEFAULT_COLLECTION, help="collection folder or manifest")
    p.add_argument("--tasks", nargs="+", help="subset of the collection's tasks")
    p.add_argument("--split", default="test", help="train, val, test or interactive")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    _skip_flag(p)


def _skip_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="go on without the pool entries that cannot be read (an empty checkpoint, a task folder without one), "
        "listed as skipped in the output and the run log; default: refuse the pool, naming them",
    )


def _trials_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", type=Path, help="merge recipe: collection, tasks, checkpoints, method, base params")
    p.add_argument("--split", default="val", help="the split trials are scored on (default val)")
    p.add_argument("--device", help="cpu, cuda, ... for trials in process (default: CUDA when present)")
    p.add_argument("--ray", metavar="ADDRESS", help=f"local, auto or a cluster address (default: ${RAY_ENV})")
    p.add_argument("--workers", type=int, help="Ray workers (default: one per GPU, else per CPU of the cluster)")
    _skip_flag(p)


def _run_sweep(args: argparse.Namespace) -> int:
    home, recipe, collection, chosen = _recipe_selection(args)
    grid = {name: list(values) for name, values in parse_axes(args.grid)}
    method = pipeline_name(recipe.method, recipe.calibrate)  # a calibrated recipe sweeps its pipeline
    checked_axes(method, grid, recipe.params, len(chosen.tasks))  # before any checkpoint is read
    workspace = _trials_source(home, collection, chosen, args)
    fields = dict(tasks=chosen.tasks, method=method, grid=grid, params=recipe.params, split=args.split)
    skipped = [str(s) for s in collection.skipped]
    return _run_trials(home, "sweep", grid_sweep_job, args, workspace=workspace, skipped=skipped, **fields)


def _run_search(args: argparse.Namespace) -> int:
    home, recipe, collection, chosen = _recipe_selection(args)
    SearchSpace(recipe.method, chosen.tasks, args.param, args.low, args.high)  # before any checkpoint is read
    workspace = _trials_source(home, collection, chosen, args)
    fields = dict(
        tasks=chosen.tasks,
        method=recipe.method,
        strategy=args.strategy,
        trials=args.trials,
        batch=args.batch,
        seed=args.seed,
        param=args.param,
        low=args.low,
        high=args.high,
        params={k: v for k, v in recipe.params.items() if k != args.param},
        split=args.split,
    )
    skipped = [str(s) for s in collection.skipped]
    return _run_trials(home, "search", search_job, args, workspace=workspace, skipped=skipped, **fields)


def _recipe_selection(args: argparse.Namespace) -> tuple[DataHome, MergeRecipe, Collection, RecipeSelection]:
    """The recipe, its collection and what it picks there, checked before anything is read."""
    home, policy = _home_and_policy()
    recipe = load_recipe(policy.resolve(args.recipe))
    collection = _open(recipe.collection, home=home, policy=policy, skip_unreadable=args.skip_unreadable)
    return home, recipe, collection, select(recipe, collection)


def _trials_source(
    home: DataHome, collection: Collection, chosen: RecipeSelection, args: argparse.Namespace
) -> Workspace | WorkspaceRef:
    """In process, the recipe's checkpoints opened for the trials; on Ray, only their reference (read from
    the sidecars): the workers open the checkpoints and check their sha256, this process reads no tensor."""
    if ray_setting(args.ray):
        return WorkspaceRef.of_selection(collection, tasks=chosen.tasks, variants=chosen.variants)
    return Workspace.from_collection(
        collection,
        cache_dir=home.cache,
        device=pick_device(args.device),
        variants=chosen.variants,
        tasks=chosen.tasks,
        store=home.store_choice(),
    )


def _run_trials(home: DataHome, name: str, job, args: argparse.Namespace, **kwargs) -> int:
    """Run a sweep or search job with a tqdm bar; Ctrl-C cancels it (logged partial) and exits 130."""
    log = RunLog(home.runs / "runs.sqlite3")
    runner = LocalRunner(run_log=log)
    job_id = runner.submit(name, job, owner="cli", run_log=log, ray=args.ray, workers=args.workers, **kwargs)
    with tqdm(desc=name, unit="trial", disable=None, file=sys.stderr) as bar:
        try:
            status = _follow(runner, job_id, bar)
        except KeyboardInterrupt:
            runner.cancel(job_id)
            status = runner.wait(job_id)
    if status.state is JobState.FAILED:
        print(status.error.strip().splitlines()[-1], file=sys.stderr)
        return 1
    (sweep,) = [r for r in log.runs(job_id=job_id) if r.parent_id is None]
    summary = {
        "run": sweep.id,
        "status": sweep.status_shown,
        **_summary(sweep.outputs),
        "skipped": sweep.inputs.get("skipped", []),  # as the run log has them
    }
    print(json.dumps(summary, indent=2))
    return 0 if status.state is JobState.DONE else 130


def _follow(runner: LocalRunner, job_id: int, bar: tqdm) -> JobStatus:
    while (status := runner.status(job_id)).state not in FINISHED:
        bar.total = status.total or None
        bar.set_postfix_str(status.message[-60:], refresh=False)
        bar.update(status.step - bar.n)
        time.sleep(0.2)
    bar.update(status.step - bar.n)
    return status


def _summary(outputs: dict) -> dict:
    best, test = outputs.get("best") or {}, outputs.get("test") or {}
    return {
        "trials": outputs.get("trials"),
        "planned": outputs.get("planned"),
        "best_params": outputs.get("best_params"),
        "val_mean_normalized": best.get("mean_normalized"),
        "test_mean_normalized": test.get("mean_normalized"),
        "test_accuracy": test.get("accuracy"),
    }


def _run_eval(args: argparse.Namespace) -> int:
    home, policy = _home_and_policy()
    collection = _open(args.collection, home=home, policy=policy, skip_unreadable=args.skip_unreadable)
    device = pick_device(args.device)
    pretrained = collection.pretrained()
    suite = open_suite(collection, cache_dir=home.cache, tasks=args.tasks, device=device, pretrained=pretrained)
    if args.checkpoint:
        checkpoint = load_checkpoint(policy.resolve(args.checkpoint))
        theta = flatten(checkpoint.state, suite.spec, source=str(checkpoint.path), device=device)
    else:
        theta = pretrained_vector(collection, suite.spec, device=device, pretrained=pretrained)
    reference = _finetuned_reference(collection, suite, args.split, device) if args.normalized else None
    _print_result(_eval_with_bar(theta, suite, args.split, reference), skipped=collection.skipped)
    return 0


def _run_merge(args: argparse.Namespace) -> int:
    """A recipe made of the flags, run like `python -m engine run`: one merge-export-evaluate-log path."""
    home, policy = _home_and_policy()
    out = _output_path(home, policy, args.out)
    fields = {
        "collection": str(policy.resolve(args.collection)),
        "tasks": list(args.tasks or ()),
        "variant": args.variant,
        "method": args.method,
        "params": _parse_params(args.param),
        "calibrate": args.calibrate,
        "transform": args.transform,
        "evaluate": args.eval_split,
        "output": out.stem,
    }
    recipe = parse_recipe(json.dumps(fields), source="the command line's flags")
    return _run(recipe, home=home, policy=policy, args=args, out=out)


def _run_recipe(args: argparse.Namespace) -> int:
    home, policy = _home_and_policy()
    return _run(load_recipe(policy.resolve(args.recipe)), home=home, policy=policy, args=args)


def _run(
    recipe: MergeRecipe, *, home: DataHome, policy: PathPolicy, args: argparse.Namespace, out: Path | None = None
) -> int:
    with tqdm(total=100, desc="recipe", disable=None, file=sys.stderr) as bar:
        outcome = run_recipe(
            recipe,
            home=home,
            device=pick_device(args.device),
            policy=policy,
            out=out,
            progress=lambda f, _m: bar.update(round(f * 100) - bar.n),
            skip_unreadable=args.skip_unreadable,
            store=args.store,
            on_plan=lambda plan: tqdm.write(f"store: {plan.summary()}", file=sys.stderr),
        )
    _warn(outcome.skipped)
    print(f"wrote {outcome.checkpoint.path} (sha256 {outcome.checkpoint.sha256[:12]}); run {outcome.run_id}")
    if outcome.result is not None:
        _print_result(outcome.result, skipped=outcome.skipped)
    return 0


def _open(
    raw: Path, *, home: DataHome, policy: PathPolicy, finetunes: bool = True, skip_unreadable: bool = False
) -> Collection:
    """The collection as the dashboard opens it; with `skip_unreadable`, each entry a discovered pool left out
    printed as a warning on stderr, so stdout stays the command's output."""
    collection = open_for_user(raw, home=home, policy=policy, finetunes=finetunes, skip_unreadable=skip_unreadable)
    _warn(collection.skipped)
    return collection


def _warn(skipped: Sequence) -> None:
    for entry in skipped:
        print(f"warning: {entry}", file=sys.stderr)


def _home_and_policy() -> tuple[DataHome, PathPolicy]:
    return DataHome.from_env().ensure(), DataHome.shell_policy()


def _run_methods(args: argparse.Namespace) -> int:
    print("\n".join(method_lines(METHODS)))
    return 0


def method_lines(methods: Mapping[str, MergeMethod]) -> list[str]:
    """What `methods` prints: each method, its paper and its parameters, in the registry's order."""
    lines = []
    for method in methods.values():
        note = " [provisional definition]" if method.provisional else ""
        note += " [streams: reads bfloat16 and LoRA stores]" if method.streams else ""
        lines.append(f"{method.name}: {method.display_name} ({method.paper_url}){note}")
        for p in method.params:
            scope = "per task or global" if p.per_task else "global"
            lines.append(f"  {p.name} = {p.default} in [{p.low}, {p.high}], {scope}: {p.help}")
    return lines


def _run_suites(args: argparse.Namespace) -> int:
    if args.pool is not None:
        home, policy = _home_and_policy()
        collection = _open(args.pool, home=home, policy=policy, finetunes=False)
        match = require_suite(collection.root, collection.task_names, args.suite or "TA8")
        print(f"pool {collection.manifest.name!r} holds {match.describe()}")
        for task, known in match.tasks.items():
            print(f"  {task:<16} = {known}")
        return 0
    chosen = [suite_named(args.suite)] if args.suite else []
    for suite in chosen or suites().values():
        print(f"{suite.name:<7} {len(suite.tasks):>2} tasks: {', '.join(suite.tasks)}")
    for task in (suite_tasks()[name] for suite in chosen for name in suite.tasks):
        hub = ", ".join(task.hub_ids)
        print(f"  {task.name:<14} {len(task.class_names):>3} classes {len(task.templates):>2} templates  {hub}")
        print(f"  {'':<14} also named {', '.join(task.aliases)}")
    print("validation split profiles:")
    for profile in PROFILES.values():
        print(f"  {profile.name:<13} {profile.description}")
    return 0


def _run_home(args: argparse.Namespace) -> int:
    home = DataHome.from_env().ensure()
    if args.clear_caches:
        freed = home.clear_caches()
        print(f"cleared {freed.files} cached files ({freed.bytes / 2**20:.1f} MB) from {home.cache}")
    print(f"data home {home.root}")
    for folder in home.usage():
        print(f"  {folder.name:<12} {folder.files:>7} files {folder.bytes / 2**20:>10.1f} MB")
    return 0


def _run_pool_show(args: argparse.Namespace) -> int:
    home, policy = _home_and_policy()
    collection = _open(args.path, home=home, policy=policy, finetunes=False, skip_unreadable=True)  # shows them
    rows = pool_checkpoints(collection)
    suite = pool_suite(collection)
    if args.json:
        print(
            json.dumps(
                {
                    "name": collection.manifest.name,
                    "root": str(collection.root),
                    "checkpoints": [_info_fields(r, collection.root) for r in rows],
                    "skipped": [str(s) for s in collection.skipped],
                    "suite": None if suite is None else suite.describe(),
                    "family": checkpoint_family(rows),
                },
                indent=2,
            )
        )
        return 0
    print(
        f"pool {collection.manifest.name!r} at {collection.root}: {len(collection.task_names)} tasks, "
        f"{len(rows) - 1} fine-tuned checkpoints"
    )
    print(f"suite: {'none' if suite is None else suite.describe()}; checkpoints: {checkpoint_family(rows)}")
    table = [["checkpoint", "format", "architecture", "quick_gelu", "tower", "variant", "file", "lora"]]
    table += [
        [str(v).lower() if isinstance(v, bool) else str(v) for v in _info_fields(r, collection.root).values()]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _info_fields(info: CheckpointInfo, root: Path) -> dict[str, str | bool]:
    file = info.path.relative_to(root) if info.path.is_relative_to(root) else info.path
    return {
        "checkpoint": info.label,
        "format": info.format,
        "architecture": info.architecture,
        "quick_gelu": info.quick_gelu,
        "tower": info.tower,
        "variant": info.variant,
        "file": str(file),
        "lora": f"rank {info.lora_rank}" if info.lora_rank is not None else "",
    }


def _run_pool_convert(args: argparse.Namespace) -> int:
    home, policy = _home_and_policy()
    collection = _open(args.path, home=home, policy=policy, finetunes=False, skip_unreadable=args.skip_unreadable)
    out = policy.resolve(args.out)
    with tqdm(total=None, desc="convert", unit="checkpoint", disable=None, file=sys.stderr) as bar:

        def progress(done: int, total: int, label: str) -> None:
            bar.total = total
            bar.set_postfix_str(label, refresh=False)
            bar.update(done - bar.n)

        convert_pool(collection, out, on_checkpoint=progress)
    count = sum(len(collection.variants(t)) for t in collection.task_names)
    print(f"wrote {out} (pretrained + {count} fine-tuned checkpoints of {len(collection.task_names)} tasks)")
    return 0


def _run_pool_export_hf(args: argparse.Namespace) -> int:
    from engine.io.formats.hf_export import export_hf_folder

    _, policy = _home_and_policy()
    checkpoint = load_checkpoint(policy.resolve(args.checkpoint), projection_optional=True)
    out = policy.resolve(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(
            out, "already exists and is not an empty folder", fix="choose a new output folder, or remove this one first"
        )
    if checkpoint.meta.linearized:
        print(
            f"note: {checkpoint.path} is a {checkpoint.meta.variant} checkpoint; the Hugging Face folder holds "
            "its parameters θ, run as a plain network, not the linearized model",
            file=sys.stderr,
        )
    projected = "proj" in checkpoint.state or "visual.proj" in checkpoint.state
    if not projected:
        print(
            f"note: {checkpoint.path} has no image projection (a Hugging Face CLIPVisionModel); the folder is a "
            "CLIPVisionModel of the image tower alone. For the projection too, convert the pool it belongs to "
            "(`pool convert`: its pretrained model lends the projection) and export the converted checkpoint",
            file=sys.stderr,
        )
    folder = export_hf_folder(checkpoint, out)
    tower = checkpoint.meta.tower if projected else "visual, without projection"
    print(f"wrote {folder} (config.json + model.safetensors, {checkpoint.meta.architecture}, tower {tower})")
    return 0


def _run_zoo_build(args: argparse.Namespace) -> int:
    import tempfile

    from engine.data.real_images import extract_real_images
    from engine.zoo.build import ZooConfig, build_zoo

    real = args.real_images or args.out / "real_images.npz"
    with tempfile.TemporaryDirectory() as tmp:
        if not real.is_file():
            real = Path(tmp) / "real_images.npz"
            extract_real_images(real)
        config = ZooConfig.smoke() if args.smoke else ZooConfig()
        with _StageBars() as bars:
            report = build_zoo(args.out, real_images=real, config=config, progress=bars.update)
    print(
        json.dumps(
            {
                "averages": report["averages"],
                "thresholds": report["thresholds"],
                "timings_s": report["timings_s"],
                "total_bytes": report["sizes_bytes"]["total"],
            },
            indent=2,
        )
    )
    return 0


def _run_zoo_add_sta(args: argparse.Namespace) -> int:
    from engine.zoo.build import update_zoo
    from engine.zoo.sta import selective_stage

    with _StageBars() as bars:
        recorded = update_zoo(args.zoo, lambda work: selective_stage(work, progress=bars.update), name="selective")
    print(json.dumps(recorded, indent=2))
    return 0


def _run_zoo_add_taujp(args: argparse.Namespace) -> int:
    from engine.zoo.build import update_zoo
    from engine.zoo.taujp import interference_stage

    print(json.dumps(update_zoo(args.zoo, interference_stage, name="interference"), indent=2))
    return 0


def _run_zoo_add_methods(args: argparse.Namespace) -> int:
    from engine.zoo.build import update_zoo
    from engine.zoo.methods import methods_stage

    recorded = update_zoo(args.zoo, methods_stage, name="methods")
    rows = [(r["method"], r["test_mean_accuracy"], r["test_mean_normalized"]) for r in recorded["methods"]["results"]]
    print("\n".join(f"{m:16s} test mean {a:.4f}  normalized {n:.4f}" for m, a, n in rows))
    return 0


def _run_zoo_add_benchmark(args: argparse.Namespace) -> int:
    from engine.eval.benchmark import markdown
    from engine.zoo.benchmark import benchmark_stage

    print(markdown(benchmark_stage(args.zoo)), end="")
    return 0


def _run_zoo_add_variants(args: argparse.Namespace) -> int:
    from engine.zoo.build import update_zoo
    from engine.zoo.variants import variants_stage

    with _StageBars() as bars:
        recorded = update_zoo(args.zoo, lambda work: variants_stage(work, progress=bars.update), name="variants")
    print(
        json.dumps(
            {
                v: {"averages": r["averages"], "taujp": r["taujp"]["mean_off_diagonal"]}
                for v, r in recorded["variants"].items()
            },
            indent=2,
        )
    )
    return 0


def _run_zoo_add_lora(args: argparse.Namespace) -> int:
    from engine.zoo.build import update_zoo
    from engine.zoo.lora import lora_stage

    with _StageBars() as bars:
        recorded = update_zoo(args.zoo, lambda work: lora_stage(work, progress=bars.update), name="lora")
    print(json.dumps(recorded["lora"]["averages"], indent=2))
    return 0


def _run_zoo_add_learned(args: argparse.Namespace) -> int:
    from engine.zoo.build import update_zoo
    from engine.zoo.learned import learned_stage

    recorded = update_zoo(args.zoo, learned_stage, name="learned")["learned"]
    print(
        json.dumps(
            {o: {k: v["test_mean"] for k, v in recorded[o].items()} for o in ("supervised", "unsupervised")}, indent=2
        )
    )
    return 0


def _run_zoo_add_learned_taujp(args: argparse.Namespace) -> int:
    from engine.zoo.build import update_zoo
    from engine.zoo.learned import tau_jp_stage

    recorded = update_zoo(args.zoo, tau_jp_stage, name="learned_taujp")["learned"]
    print(json.dumps({o: recorded[o]["dv_basi_from_tau_jp"] for o in ("supervised", "unsupervised")}, indent=2))
    return 0


def _run_zoo_add_warm(args: argparse.Namespace) -> int:
    from engine.zoo.build import update_zoo
    from engine.zoo.warm import warm_stage

    print(json.dumps(update_zoo(args.zoo, warm_stage, name="warm")["warm"], indent=2))
    return 0


def _run_zoo_extract(args: argparse.Namespace) -> int:
    from engine.data.real_images import extract_real_images

    extract_real_images(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


class _StageBars:
    """One tqdm bar per build stage, advanced by (stage, fraction, message) callbacks."""

    def __enter__(self) -> _StageBars:
        self.stage, self.bar = None, None
        return self

    def update(self, stage: str, fraction: float, message: str) -> None:
        if stage != self.stage:
            self._close()
            self.stage = stage
            self.bar = tqdm(total=1000, desc=stage, disable=None, file=sys.stderr)
        self.bar.set_postfix_str(message, refresh=False)
        self.bar.update(round(fraction * 1000) - self.bar.n)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __exit__(self, *exc) -> None:
        self._close()


def _parse_params(raw: Sequence[str]) -> dict[str, float | list[float]]:
    params: dict[str, float | list[float]] = {}
    for item in raw:
        name, sep, value = item.partition("=")
        try:
            values = [float(v) for v in value.split(",")]
        except ValueError:
            values = []
        if not sep or not values:
            raise ParameterError(item, "is not NAME=NUMBER or NAME=N1,N2,...", fix="e.g. --param lam=0.3")
        params[name] = values[0] if len(values) == 1 else values
    return params


def _output_path(home: DataHome, policy: PathPolicy, raw: str) -> Path:
    """A bare name goes to <data home>/exports; a path is the user's own."""
    path = Path(raw)
    path = home.exports / path if path.parent == Path(".") else policy.resolve(path)
    return path if path.suffix == ".safetensors" else path.with_suffix(".safetensors")


def _finetuned_reference(collection, suite: EvalSuite, split: str, device: torch.device) -> dict[str, float]:
    """Each task's own fine-tuned accuracy: the denominator of normalized accuracy."""
    reference = {}
    for task in tqdm(suite.task_names, desc="fine-tuned references", disable=None, file=sys.stderr):
        state = collection.finetuned(task).state
        theta = flatten(state, suite.spec, source=task, device=device)
        reference[task] = evaluate(theta, suite, split, tasks=[task]).accuracy[task]
    return reference


def _eval_with_bar(theta: torch.Tensor, suite: EvalSuite, split: str, reference) -> EvalResult:
    with tqdm(total=100, desc=f"evaluate ({split})", disable=None, file=sys.stderr) as bar:

        def progress(frac: float, _msg: str) -> None:
            bar.update(round(frac * 100) - bar.n)

        return evaluate(theta, suite, split, reference=reference, progress=progress)


def _print_result(result: EvalResult, *, skipped: Sequence = ()) -> None:
    rows = {
        t: {"accuracy": round(a, 4), "correct": result.correct[t], "total": result.total[t]}
        for t, a in result.accuracy.items()
    }
    if result.normalized is not None:
        for t, n in result.normalized.items():
            rows[t]["normalized"] = round(n, 4)
    summary = {
        "split": result.split,
        "mean_accuracy": round(result.mean_accuracy, 4),
        "mean_normalized": None if result.mean_normalized is None else round(result.mean_normalized, 4),
    }
    print(json.dumps({"tasks": rows, **summary, "skipped": [str(s) for s in skipped]}, indent=2))
