"""Which evaluator runs a sweep's trials: in this process on the open workspace (`MERGELAB_RAY` unset and
no address given: everything as before Ray), or Ray actors on the cluster the setting names.

On Ray the driver holds a `WorkspaceRef` only (the collection's path, each task's checkpoint choice, the
sha256 of every checkpoint: read from the sidecars), never a Workspace: θ₀, T and the evaluation suite live
on the workers, which check the sha256 as they read the files. The objective needs nothing more in the
driver: each worker computes its trials' normalized accuracy against the fine-tuned baselines of its own
workspace (`Workspace.finetuned`, evaluated once per worker and split), and the results carry it."""

from __future__ import annotations

import os

from engine.errors import ParameterError
from engine.home import DataHome
from engine.search.ray_trials import RAY_ENV, RayEvaluator, WorkerSpec, connect
from engine.search.ref import WorkspaceRef
from engine.search.trials import LocalEvaluator, TrialEvaluator
from engine.workspace import Workspace

Source = Workspace | WorkspaceRef  # an open workspace, or (on Ray) the reference its workers open


def ray_setting(address: str | None = None) -> str:
    """The cluster to use: `address` if given, else `MERGELAB_RAY` ("" for none)."""
    return address or os.environ.get(RAY_ENV, "")


def reference(source: Source) -> WorkspaceRef:
    return source if isinstance(source, WorkspaceRef) else WorkspaceRef.of(source)


def trial_evaluator(source: Source, *, ray: str | None = None, workers: int | None = None) -> TrialEvaluator:
    """Trials on the open workspace in process, or on Ray workers opening the reference's checkpoints (a
    local cluster shares this process's data home and its caches)."""
    setting = ray_setting(ray)
    if not setting:
        if not isinstance(source, Workspace):
            raise ParameterError(
                f"trials on {source.collection}", "run in process but no workspace is open", fix=f"set {RAY_ENV}"
            )
        return LocalEvaluator(source)
    connect(setting)
    home = str(DataHome.from_env().root) if setting == "local" else None
    return RayEvaluator(WorkerSpec(reference(source), home), workers=workers)
