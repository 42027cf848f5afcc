"""The command line: `python -m engine eval|merge|methods ...` on a collection (default: the demo zoo).

Long work shows a tqdm bar on stderr (hidden when stderr is not a terminal); errors print one
line naming the file and the fix, and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from engine.checkpoints import load_checkpoint
from engine.collection import load_collection, open_suite, pretrained_vector, task_matrix
from engine.errors import MergelabError, ParameterError
from engine.evaluate import EvalResult, EvalSuite, evaluate
from engine.export import export_merged
from engine.home import ASSETS_DIR, DataHome
from engine.merge import METHODS, apply
from engine.models import pick_device
from engine.params import flatten
from engine.recipes import MergeRecipe

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
    ev = sub.add_parser("eval", help="accuracy of the pretrained model or a checkpoint")
    _common(ev)
    ev.add_argument("--checkpoint", type=Path, help="image-tower checkpoint (default: the pretrained model)")
    ev.add_argument("--normalized", action="store_true", help="also normalized accuracy (runs fine-tuned models)")
    ev.set_defaults(run=_run_eval)
    mg = sub.add_parser("merge", help="merge task vectors and write safetensors + sidecar + recipe")
    _common(mg)
    mg.add_argument("--method", default="task_arithmetic", help=f"one of {', '.join(METHODS)}")
    mg.add_argument("--param", action="append", default=[], metavar="NAME=V[,V...]",
                    help="method parameter; comma-separated values give one per task")
    mg.add_argument("--variant", default="standard", help="fine-tuned variant to merge")
    mg.add_argument("--out", required=True, help="output .safetensors (a bare name goes to <data home>/exports)")
    mg.add_argument("--eval", dest="eval_split", help="also evaluate the merge on this split")
    mg.set_defaults(run=_run_merge)
    ls = sub.add_parser("methods", help="list merge methods and their parameters")
    ls.set_defaults(run=_run_methods)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", type=Path, default=DEFAULT_COLLECTION, help="collection folder or manifest")
    p.add_argument("--tasks", nargs="+", help="subset of the collection's tasks")
    p.add_argument("--split", default="test", help="train, val, test or interactive")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present)")


def _run_eval(args: argparse.Namespace) -> int:
    home = DataHome.from_env().ensure()
    collection = load_collection(home.resolve_user_path(args.collection))
    device = pick_device(args.device)
    pretrained = collection.pretrained()
    suite = open_suite(collection, cache_dir=home.cache, tasks=args.tasks, device=device, pretrained=pretrained)
    if args.checkpoint:
        checkpoint = load_checkpoint(home.resolve_user_path(args.checkpoint))
        params = flatten(checkpoint.state, suite.spec, source=str(checkpoint.path), device=device)
    else:
        params = pretrained_vector(collection, suite.spec, device=device, pretrained=pretrained)
    reference = _finetuned_reference(collection, suite, args.split, device) if args.normalized else None
    _print_result(_eval_with_bar(params, suite, args.split, reference))
    return 0


def _run_merge(args: argparse.Namespace) -> int:
    home = DataHome.from_env().ensure()
    collection = load_collection(home.resolve_user_path(args.collection))
    device = pick_device(args.device)
    params = _parse_params(args.param)
    out = _output_path(home, args.out)
    pretrained = collection.pretrained()
    tm = task_matrix(collection, tasks=args.tasks, variant=args.variant, device=device, pretrained=pretrained)
    merged = apply(args.method, tm.theta0, tm.T, params)  # [P]
    recipe = MergeRecipe(collection=str(collection.root), pretrained_sha256=pretrained.sha256,
                         tasks=tm.task_names, variant=args.variant, method=args.method, params=params)
    checkpoint = export_merged(out, merged, tm.spec, pretrained=pretrained, recipe=recipe)
    print(f"wrote {checkpoint.path} (sha256 {checkpoint.sha256[:12]})")
    if args.eval_split:
        suite = open_suite(collection, cache_dir=home.cache, tasks=tm.task_names, device=device,
                           pretrained=pretrained)
        _print_result(_eval_with_bar(merged, suite, args.eval_split, None))
    return 0


def _run_methods(args: argparse.Namespace) -> int:
    for method in METHODS.values():
        print(f"{method.name}: {method.display_name} ({method.paper_url})")
        for p in method.params:
            scope = "per task or global" if p.per_task else "global"
            print(f"  {p.name} = {p.default} in [{p.low}, {p.high}], {scope}: {p.help}")
    return 0


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


def _output_path(home: DataHome, raw: str) -> Path:
    path = Path(raw)
    if path.parent == Path("."):
        path = home.exports / path
    path = home.resolve_user_path(path)
    return path if path.suffix == ".safetensors" else path.with_suffix(".safetensors")


def _finetuned_reference(collection, suite: EvalSuite, split: str, device: torch.device) -> dict[str, float]:
    """Each task's own fine-tuned accuracy: the denominator of normalized accuracy."""
    reference = {}
    for task in tqdm(suite.task_names, desc="fine-tuned references", disable=None, file=sys.stderr):
        state = collection.finetuned(task).state
        params = flatten(state, suite.spec, source=task, device=device)
        reference[task] = evaluate(params, suite, split, tasks=[task]).accuracy[task]
    return reference


def _eval_with_bar(params: torch.Tensor, suite: EvalSuite, split: str, reference) -> EvalResult:
    with tqdm(total=100, desc=f"evaluate ({split})", disable=None, file=sys.stderr) as bar:
        def progress(frac: float, _msg: str) -> None:
            bar.update(round(frac * 100) - bar.n)
        return evaluate(params, suite, split, reference=reference, progress=progress)


def _print_result(result: EvalResult) -> None:
    rows = {t: {"accuracy": round(a, 4), "correct": result.correct[t], "total": result.total[t]}
            for t, a in result.accuracy.items()}
    if result.normalized is not None:
        for t, n in result.normalized.items():
            rows[t]["normalized"] = round(n, 4)
    summary = {"split": result.split, "mean_accuracy": round(result.mean_accuracy, 4),
               "mean_normalized": None if result.mean_normalized is None else round(result.mean_normalized, 4)}
    print(json.dumps({"tasks": rows, **summary}, indent=2))
