"""Jobs described by value: what a job runs on and with, as JSON, so it can be recorded, shown after a
restart, and sent to another process or machine (a live Workspace holds gigabytes and cannot be).

A `JobSpec` names the job's kind (a key of `JOB_KINDS`), the workspace it runs on (`WorkspaceRef`: the
collection path, the device, each task's checkpoint choice, and the sha256 of the pretrained and every
fine-tuned checkpoint) and the job's own arguments, configs as their fields. Whoever runs it resolves
the reference to a workspace (the dashboard to its cached one) and checks the sha256 first, so a job
never runs on files other than the ones it was asked for. A sweep on Ray runs on the reference itself
(`JobKind.by_reference`): its collection is checked under the dashboard's policy and its workers open it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from engine.errors import SchemaError
from engine.home import DataHome, PathPolicy
from engine.jobs.benchmark import benchmark_job
from engine.jobs.compare import compare_job
from engine.jobs.finetune import finetune_job
from engine.jobs.importance import importance_job
from engine.jobs.landscape import landscape_job
from engine.jobs.learn import learn_job
from engine.jobs.parts import merge_parts_job
from engine.jobs.runner import JobContext, LocalRunner
from engine.jobs.search import grid_sweep_job, runs_on_ray, search_job
from engine.jobs.sweep import sweep_job
from engine.jobs.taujp import taujp_job
from engine.learn.coefficients import LearnConfig
from engine.learn.dvbasi import DvBasiConfig
from engine.pool.access import open_for_user
from engine.search.ref import WorkspaceRef
from engine.train.finetune import FinetuneConfig
from engine.workspace import Workspace

SPEC_VERSION = 1


@dataclass(frozen=True)
class JobSpec:
    kind: str
    workspace: WorkspaceRef
    args: Mapping[str, Any] = field(default_factory=dict)  # JSON values only
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in JOB_KINDS:
            raise SchemaError("job spec", f"kind {self.kind!r} is unknown", fix=f"use one of {sorted(JOB_KINDS)}")
        json.dumps(dict(self.args))  # TypeError now, not when the job is recorded

    def to_json(self) -> str:
        return json.dumps({"version": SPEC_VERSION, **dataclasses.asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        data = json.loads(text)
        if data.pop("version", None) != SPEC_VERSION:
            raise SchemaError("job spec", "has no or another version", fix=f"write version {SPEC_VERSION}")
        ref = data.pop("workspace")
        workspace = WorkspaceRef(
            ref["collection"],
            ref["device"],
            tuple(tuple(c) for c in ref["choice"]),
            ref["pretrained_sha256"],
            tuple(tuple(c) for c in ref["checkpoints_sha256"]),
        )
        return cls(workspace=workspace, **data)


@dataclass(frozen=True)
class JobKind:
    """A job function and how its JSON arguments become Python ones: configs (by field) and paths."""

    fn: Callable[..., Any]
    configs: Mapping[str, type] = field(default_factory=dict)
    paths: tuple[str, ...] = ()
    # for these arguments, the job runs on the spec's reference, unopened (a sweep whose Ray workers open it)
    by_reference: Callable[[Mapping[str, Any]], bool] = lambda _args: False

    def arguments(self, args: Mapping[str, Any]) -> dict[str, Any]:
        decoded = dict(args)
        for name, cls in self.configs.items():
            if decoded.get(name) is not None:
                decoded[name] = from_fields(cls, decoded[name])
        for name in self.paths:
            if decoded.get(name) is not None:
                decoded[name] = Path(decoded[name])
        return decoded


JOB_KINDS: Mapping[str, JobKind] = MappingProxyType(
    {
        "sweep": JobKind(sweep_job),
        "grid_sweep": JobKind(grid_sweep_job, by_reference=runs_on_ray),
        "search": JobKind(search_job, by_reference=runs_on_ray),
        "compare": JobKind(compare_job),
        "benchmark": JobKind(benchmark_job, paths=("out",)),
        "finetune": JobKind(finetune_job, configs={"config": FinetuneConfig}, paths=("out_root",)),
        "learn": JobKind(learn_job, configs={"atlas_config": LearnConfig, "config": DvBasiConfig}, paths=("out_dir",)),
        "importance": JobKind(importance_job),
        "taujp": JobKind(taujp_job),
        "merge_parts": JobKind(merge_parts_job),
        "landscape": JobKind(landscape_job),
    }
)


def to_fields(value: Any) -> Any:
    """A config dataclass as JSON fields (nested ones too), for `JobSpec.args`."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def from_fields(cls: type, data: Mapping[str, Any]) -> Any:
    """A config dataclass from its fields, nested config dataclasses and tuples restored; it validates itself."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, hint = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            value = from_fields(hint, value)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


def open_workspace(ref: WorkspaceRef, *, home: DataHome, policy: PathPolicy) -> Workspace:
    """A fresh workspace of the reference's tasks (what a runner without a cache of its own does), checked
    against it."""
    # the reference names every task with its checkpoint's sha256 (checked below): what its page opened, a
    # discovered pool's unreadable entries left out only where that page's user confirmed it
    collection = open_for_user(ref.collection, home=home, policy=policy, skip_unreadable=True)
    workspace = Workspace.from_collection(
        collection,
        cache_dir=home.cache,
        device=ref.device,
        variants=dict(ref.choice),
        tasks=ref.tasks or None,
        store=home.store_choice(),
    )
    return ref.check(workspace)


Resolve = Callable[[WorkspaceRef], Workspace]


def submit(runner: LocalRunner, spec: JobSpec, *, owner: str = "", resolve: Resolve | None = None) -> int:
    """Queue the job a spec describes on `runner`. The workspace is resolved in the job's own thread (a page
    never waits for a pool to open) by `resolve` (the dashboard: its cached workspace; default: opened
    afresh under the dashboard's path policy) and checked against the spec's sha256 before the job starts."""
    kind = JOB_KINDS[spec.kind]

    def run(ctx: JobContext) -> Any:
        if kind.by_reference(spec.args):  # its workers open the workspace and check the sha256 as they read
            ref = _checked_unopened(spec.workspace)
            return kind.fn(ctx, workspace=ref, run_log=runner.run_log, **kind.arguments(spec.args))
        ctx.starting("opening the workspace")
        opened = resolve(spec.workspace) if resolve else _open_confined(spec.workspace)
        workspace = spec.workspace.check(opened)
        return kind.fn(ctx, workspace=workspace, run_log=runner.run_log, **kind.arguments(spec.args))

    run.__name__ = kind.fn.__name__  # the jobs table's kind
    described = json.loads(spec.to_json())
    return runner.submit(spec.name or spec.kind, run, device=spec.workspace.device, owner=owner, described=described)


def _checked_unopened(ref: WorkspaceRef) -> WorkspaceRef:
    """The reference with its collection's path resolved under the dashboard's path policy (a path typed in
    the sidebar may be relative to the data home; workers take it as it is), the collection opened there
    (manifest and sidecars, no tensor) and its sidecars' sha256 checked against the reference's."""
    home = DataHome.from_env().ensure()
    collection = open_for_user(ref.collection, home=home, policy=home.dashboard_policy(), skip_unreadable=True)
    ref.check_ref(WorkspaceRef.of_selection(collection, tasks=ref.tasks, variants=dict(ref.choice)))
    return dataclasses.replace(ref, collection=str(collection.root))


def _open_confined(ref: WorkspaceRef) -> Workspace:
    home = DataHome.from_env().ensure()
    return open_workspace(ref, home=home, policy=home.dashboard_policy())
