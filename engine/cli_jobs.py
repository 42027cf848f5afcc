"""The jobs behind the pages from the command line: `python -m engine finetune|learn|taujp|importance|compare|
landscape|parts ...` and `python -m engine job SPEC.json`, for a headless machine or a cluster node.

Each subcommand's flags are made from the page's own declaration (engine/jobs/forms.py), turned into a
`JobSpec` by the same `JobForm.arguments` the page calls, and run like the dashboard runs it: on a
`LocalRunner` that records the job in the data home's run log, the workspace opened in the job and checked
against the spec's sha256. `job SPEC.json` runs any serialised spec (the JSON the run log's jobs table keeps),
so a job seen in the dashboard can be rerun elsewhere. `compare` and `landscape`, sets of independent trials,
take `--ray ADDRESS` (and `--workers`) to run them on the search engine's Ray backend.

A tqdm bar on stderr shows the job's own progress line (loss, penalty, val accuracy; ‖δ‖ per DV-BASI
iteration); Ctrl-C cancels the job, which logs what it reached as the dashboard's Cancel does, and exits 130.
The outcome (curves included) is printed as JSON and written to <data home>/runs/outcomes/run-<id>.json,
named by the run log's row. New checkpoints (fine-tune) and learned merges land in the data home, where the
dashboard lists them.

A module of its own rather than more of engine/cli.py (or an engine/cli/ package, which would move the file
others are editing): the parser there stays as it is but for one `register` call, and these commands share
one path (form → spec → runner → outcome) that reads best in one place.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from engine.errors import MergelabError, ParameterError, SchemaError
from engine.home import ASSETS_DIR, DataHome, PathPolicy
from engine.io.atomic import write_text_atomic
from engine.jobs.forms import FORMS, Field, JobForm
from engine.jobs.runner import FINISHED, JobState, JobStatus, LocalRunner
from engine.jobs.spec import JOB_KINDS, JobSpec, open_workspace, submit
from engine.models import pick_device
from engine.pool.access import open_for_user
from engine.runs.log import RunLog
from engine.search.ray_trials import RAY_ENV
from engine.search.ref import WorkspaceRef

CANCELLED_EXIT = 130  # the shell's code for a command stopped by Ctrl-C
POLL_S = 0.2


def register(sub: argparse._SubParsersAction) -> None:
    """Add one subcommand per job form, and `job`, to the engine's command line."""
    for form in FORMS.values():
        parser = sub.add_parser(form.command, help=form.help, description=form.help, allow_abbrev=False)
        _workspace_flags(parser)
        for field in form.fields:
            _add_flag(parser, field)
        if "ray" in inspect.signature(JOB_KINDS[form.kind].fn).parameters:  # a job of independent trials
            parser.add_argument(
                "--ray", metavar="ADDRESS", help=f"local, auto or a cluster address (default: ${RAY_ENV})"
            )
            parser.add_argument("--workers", type=int, help="Ray workers (default: one per GPU, else per CPU)")
        parser.add_argument("--print-spec", action="store_true", help="print the job's spec (JSON) and run nothing")
        parser.set_defaults(run=lambda args, form=form: _run_form(form, args))
    job = sub.add_parser("job", help="run a serialised job spec (the JSON the run log's jobs table keeps)")
    job.add_argument("spec", type=Path, nargs="?", help="the spec's JSON file")
    job.add_argument("--job-id", type=int, help="instead of a file: the spec of job #ID of this data home's run log")
    job.add_argument("--collection", type=Path, help="the collection here, if not at the spec's path (sha256 checked)")
    job.add_argument("--device", help="run on this device instead of the spec's")
    job.add_argument("--print-spec", action="store_true", help="print the spec (JSON) and run nothing")
    job.set_defaults(run=_run_spec_file)


def _workspace_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--collection", type=Path, default=ASSETS_DIR / "zoo", help="collection folder or manifest")
    parser.add_argument("--tasks", nargs="+", help="subset of the collection's tasks (default: all)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME|TASK=NAME",
        help="fine-tuned checkpoint of every task, or of one task (repeat it); default standard",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present)")


def _add_flag(parser: argparse.ArgumentParser, field: Field) -> None:
    """The flag of a declared field: its type, choices and default are the page's."""
    shown = "the first task" if field.tasks and field.default == 0 else field.default
    if field.tasks and field.default:
        shown = f"task {field.default + 1} of the collection"
    help_text = f"{field.label}{': ' + field.help if field.help else ''} (default: {shown})"
    if isinstance(field.default, dict):
        parser.add_argument(field.flag, action="append", default=[], metavar="NAME=VALUE", help=help_text)
    elif isinstance(field.default, bool):
        parser.add_argument(field.flag, action=argparse.BooleanOptionalAction, default=field.default, help=help_text)
    elif isinstance(field.default, list):
        parser.add_argument(
            field.flag, nargs="+", default=list(field.default), choices=field.options(()) or None, help=help_text
        )
    elif field.tasks:
        parser.add_argument(field.flag, default=None, help=help_text)
    else:
        kind = type(field.default)
        parser.add_argument(
            field.flag, type=kind, default=field.default, choices=field.options(()) or None, help=help_text
        )


def _run_form(form: JobForm, args: argparse.Namespace) -> int:
    home, policy = DataHome.from_env().ensure(), DataHome.shell_policy()
    ref = _reference(args, home=home, policy=policy)
    values = {f.name: _value(form, f, getattr(args, f.name)) for f in form.fields if getattr(args, f.name) is not None}
    job_args = form.arguments(values, tasks=ref.tasks, home=home)
    if getattr(args, "ray", None):
        job_args |= {"ray": args.ray, "workers": args.workers}
    chosen = {**form.defaults(ref.tasks), **values}
    spec = JobSpec(form.kind, ref, job_args, name=form.title(chosen))
    if args.print_spec:
        print(spec.to_json())
        return 0
    return run_spec(spec, home=home, policy=policy)


def _value(form: JobForm, field: Field, raw: Any) -> Any:
    """A flag's value as the page's widget gives it: `NAME=VALUE` items of a method's parameters as a dict."""
    if not isinstance(field.default, dict):
        return raw
    values = {}
    for item in raw:
        name, sep, number = item.partition("=")
        try:
            values[name] = float(number)
        except ValueError:
            sep = ""
        if not sep:
            raise ParameterError(f"{form.command} {field.flag}", f"{item!r} is not NAME=NUMBER", fix="e.g. steps=300")
    return values


def _reference(args: argparse.Namespace, *, home: DataHome, policy: PathPolicy) -> WorkspaceRef:
    """The workspace the flags name, by value (sidecars only: the job opens the checkpoints and checks them)."""
    collection = open_for_user(args.collection, home=home, policy=policy)  # an unreadable entry refuses the pool
    tasks = tuple(args.tasks or collection.task_names)
    ref = WorkspaceRef.of_selection(
        collection, tasks=tasks, variants=_variants(args.variant, tasks), device=str(pick_device(args.device))
    )
    return replace(ref, collection=str(policy.resolve(args.collection)))


def _variants(raw: list[str], tasks: tuple[str, ...]) -> dict[str, str]:
    """`--variant NAME` for every task, `--variant TASK=NAME` for one (a later one wins)."""
    variants: dict[str, str] = {}
    for item in raw:
        task, sep, name = item.rpartition("=")
        if sep and task not in tasks:
            raise SchemaError("--variant", f"{item!r} names no task of the selection {list(tasks)}", fix="TASK=NAME")
        variants.update({task: name} if sep else dict.fromkeys(tasks, name))
    return variants


def _run_spec_file(args: argparse.Namespace) -> int:
    home, policy = DataHome.from_env().ensure(), DataHome.shell_policy()
    if (args.spec is None) == (args.job_id is None):
        raise ParameterError("job", "needs a spec file or --job-id, and not both", fix="e.g. `job spec.json`")
    if args.spec is not None:
        path = policy.resolve(args.spec)
        spec = read_spec(_read_text(path), source=str(path))
    else:
        spec = read_spec(json.dumps(_recorded_spec(home, args.job_id)), source=f"job #{args.job_id}")
    ref = spec.workspace
    if args.collection is not None:
        ref = replace(ref, collection=str(policy.resolve(args.collection)))
    if args.device is not None:
        ref = replace(ref, device=str(pick_device(args.device)))
    spec = replace(spec, workspace=ref)
    if args.print_spec:
        print(spec.to_json())
        return 0
    return run_spec(spec, home=home, policy=policy)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SchemaError(path, f"cannot be read ({exc.strerror})", fix="give the path of a job spec") from exc


def _recorded_spec(home: DataHome, job_id: int) -> Any:
    """The spec the jobs table keeps for job #`job_id` (as the Jobs & runs page numbers them)."""
    log = RunLog(home.runs / "runs.sqlite3")
    try:
        return log.job(job_id).spec
    except KeyError as exc:
        raise SchemaError(
            f"job #{job_id}", f"is not in the run log {log.path}", fix="see the Jobs & runs page"
        ) from exc


def read_spec(text: str, *, source: str) -> JobSpec:
    """A job spec from its JSON, its arguments checked against its job's: a SchemaError names `source` (the
    file, or the run log's job) and the key."""
    try:
        spec = JobSpec.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise SchemaError(source, f"is not a job spec ({type(exc).__name__}: {exc})", fix=_SPEC_FIX) from exc
    except SchemaError as exc:
        raise SchemaError(source, f"{exc.subject} {exc.problem}", fix=exc.fix) from exc
    kind = JOB_KINDS[spec.kind]
    accepted = set(inspect.signature(kind.fn).parameters) - {"ctx", "workspace", "run_log"}
    unknown = sorted(set(spec.args) - accepted)
    if unknown:
        raise SchemaError(
            source, f"args.{unknown[0]} is no argument of a {spec.kind} job", fix=f"use {sorted(accepted)}"
        )
    try:
        kind.arguments(spec.args)  # configs check their fields now, not in the job
    except MergelabError as exc:
        raise SchemaError(source, f"{exc.subject}: {exc.problem}", fix=exc.fix) from exc
    return spec


_SPEC_FIX = "write the JSON a job's spec is (`python -m engine <job> --print-spec`, or the run log's jobs table)"


def run_spec(spec: JobSpec, *, home: DataHome, policy: PathPolicy) -> int:
    """Run a spec as the dashboard does (recorded in the run log); print and write its outcome."""
    log = RunLog(home.runs / "runs.sqlite3")
    runner = LocalRunner(run_log=log, threads=home.job_threads())  # MERGELAB_JOB_THREADS pins the bits' thread count
    job_id = submit(runner, spec, owner="cli", resolve=lambda ref: open_workspace(ref, home=home, policy=policy))
    with tqdm(desc=spec.name or spec.kind, disable=None, file=sys.stderr) as bar:
        try:
            status = _follow(runner, job_id, bar)
        except KeyboardInterrupt:
            runner.cancel(job_id)
            status = runner.wait(job_id)
    if status.state is JobState.FAILED:
        print(f"error: {status.error.strip().splitlines()[-1]}", file=sys.stderr)
        return 1
    document = _outcome(log, spec, status)
    print(json.dumps(document, indent=2))
    return 0 if status.state is JobState.DONE else CANCELLED_EXIT


def _follow(runner: LocalRunner, job_id: int, bar: tqdm) -> JobStatus:
    """Poll the job, showing its step and its own progress line (the page's message), until it finishes."""
    while (status := runner.status(job_id)).state not in FINISHED:
        bar.total = status.total or None
        bar.set_postfix_str(status.message[-80:], refresh=False)
        bar.update(status.step - bar.n)
        _pause(status)
    bar.update(status.step - bar.n)
    return status


def _pause(status: JobStatus) -> None:
    """Wait between two looks at the job (where Ctrl-C arrives, as KeyboardInterrupt)."""
    time.sleep(POLL_S)


def _outcome(log: RunLog, spec: JobSpec, status: JobStatus) -> dict[str, Any]:
    """What the job returned (done) or logged as reached (cancelled), written beside its run-log row."""
    rows = [r for r in log.runs(job_id=status.id) if r.parent_id is None]
    run = rows[0] if rows else None
    done = status.state is JobState.DONE
    outcome = _jsonable(status.result) if done else (dict(run.outputs) if run else None)
    document: dict[str, Any] = {
        "job": status.id,
        "kind": spec.kind,
        "status": status.state.value,
        "run": None if run is None else run.id,
        "outcome": outcome,
    }
    if run is not None:
        path = outcome_path(log, run.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({**document, "spec": json.loads(spec.to_json())}, indent=2))
        document["outcome_file"] = str(path)
    return document


def outcome_path(log: RunLog, run_id: int) -> Path:
    """Where a command writes the outcome of the run-log row `run_id`: beside the run log."""
    return log.path.parent / "outcomes" / f"run-{run_id}.json"


def _jsonable(result: Any) -> Any:
    return result.to_json() if hasattr(result, "to_json") else result
