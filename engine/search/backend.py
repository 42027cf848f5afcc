"""Which evaluator runs a sweep's trials: in this process on the open workspace (`MERGELAB_RAY` unset and
no address given: everything as before Ray), or Ray actors on the cluster the setting names."""

from __future__ import annotations

import os

from engine.home import DataHome
from engine.jobs.ref import WorkspaceRef
from engine.search.ray_trials import RAY_ENV, RayEvaluator, WorkerSpec, connect
from engine.search.trials import LocalEvaluator, TrialEvaluator
from engine.workspace import Workspace


def ray_setting(address: str | None = None) -> str:
    """The cluster to use: `address` if given, else `MERGELAB_RAY` ("" for none)."""
    return address or os.environ.get(RAY_ENV, "")


def trial_evaluator(
    workspace: Workspace, *, ray: str | None = None, collection: str | None = None, workers: int | None = None
) -> TrialEvaluator:
    """Trials on `workspace` in process, or on Ray workers opening the same checkpoints (`collection`: the
    path as the user gave it; a local cluster shares this process's data home and its caches)."""
    setting = ray_setting(ray)
    if not setting:
        return LocalEvaluator(workspace)
    connect(setting)
    home = str(DataHome.from_env().root) if setting == "local" else None
    return RayEvaluator(WorkerSpec(WorkspaceRef.of(workspace, collection=collection), home), workers=workers)
