"""Trials on Ray actors: each worker opens the collection once from a `WorkerSpec` (the collection's path,
each task's checkpoint choice and every checkpoint's sha256: a few hundred bytes, where a pickled Workspace
would be gigabytes), checks the sha256, and then merges and evaluates trial after trial on its device
(`num_gpus=1` where the cluster has GPUs). Only the driver writes the run log; workers return results.

The driver keeps one trial in flight per worker, so a cancel has nothing queued on a worker to drain, and
every trial first asks the sweep's `TrialGate` whether it may start: `cancel()` closes the gate before it
returns, so no trial starts afterwards, and cancels the trials still outstanding. A worker that dies takes
its trial with it; the driver gives that trial to another worker (`retried` counts them), so each trial's
result comes back exactly once.

`MERGELAB_RAY` chooses the cluster: unset, no Ray (engine/search/backend.py); `local`, Ray started in this
process with its processes bound to 127.0.0.1 and its dashboard off (Ray runs whatever code it is sent);
`auto` or an address, an existing cluster, which must sit on a trusted network.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.errors import MergelabError
from engine.home import DataHome
from engine.pool.access import open_for_user
from engine.pool.backing import plan_for
from engine.search.ref import WorkspaceRef
from engine.search.trials import Stop, TrialRequest, TrialResult, evaluate_trial, worker_name
from engine.workspace import Workspace

RAY_ENV = "MERGELAB_RAY"
LOOPBACK = "127.0.0.1"
POLL_S = 0.2  # how often a waiting driver looks at its stop flag


class WorkersLostError(MergelabError):
    """Every Ray worker of a sweep died with trials still to run."""


@dataclass(frozen=True)
class WorkerSpec:
    workspace: WorkspaceRef
    home: str | None = None  # the data home whose caches workers use (default: each worker's MERGELAB_HOME)
    workers: int = 1  # workers opening the pool at once: the memory plan shares the machine's room among them


def connect(setting: str, *, num_cpus: int | None = None) -> None:
    """Join the Ray cluster `setting` names ("local": start one in this process, on the loopback only)."""
    if setting == "local":
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's switch to keep a node on 127.0.0.1
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        return
    if setting != "local":
        try:
            ray.init(address=setting, log_to_driver=False)
        except ConnectionError as exc:
            raise MergelabError(
                f"Ray cluster {setting!r}", f"is not reachable ({exc})", fix="start it with `ray start --head`"
            ) from exc
        return
    ray_constants.ENABLE_RAY_CLUSTER = False  # the same switch, when ray was imported before the variable was set
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    node = ray.util.get_node_ip_address()
    if node != LOOPBACK:
        ray.shutdown()
        raise MergelabError(f"Ray node at {node}", f"did not bind to {LOOPBACK}", fix=f"unset {RAY_ENV}")


def open_worker_workspace(spec: WorkerSpec) -> Workspace:
    """The workspace a worker evaluates on: the spec's checkpoints (sha256 checked), on CUDA when present.
    Paths are the driver's, which checked them under its own policy; the worker does not confine them again."""
    import torch

    home = (DataHome(Path(spec.home)) if spec.home else DataHome.from_env()).ensure()
    ref = replace(spec.workspace, device="cuda" if torch.cuda.is_available() else "cpu")
    # the driver refused or consented to a pool's unreadable entries; the reference names each task it kept
    collection = open_for_user(ref.collection, home=home, policy=DataHome.shell_policy(), skip_unreadable=True)
    tasks = [task for task, _ in ref.checkpoints_sha256]  # the driver's tasks, in its order
    plan = plan_for(  # the home's store choice; out of core, every worker maps the one built store (page cache)
        collection,
        tasks=tasks,
        variants=dict(ref.choice),
        folder=home.stores,
        choice=home.store_choice(),
        cache_budget=home.cache_budget_bytes(),
        jobs=spec.workers,
        device=ref.device,
    )
    workspace = Workspace.from_collection(
        collection, cache_dir=home.cache, device=ref.device, variants=dict(ref.choice), tasks=tasks, store=plan
    )
    return ref.check(workspace)


class TrialGate:
    """A Ray actor every trial asks before it starts; closed once, by a cancel. It notes when it let each
    trial start (this host's clock), which is how a cancelled sweep shows that nothing started after."""

    def __init__(self) -> None:
        self._open, self._starts = True, []

    def admit(self) -> bool:
        if self._open:
            self._starts.append(time.time())
        return self._open

    def close(self) -> None:
        self._open = False

    def starts(self) -> list[float]:
        return list(self._starts)


class TrialWorker:
    """A Ray actor: one opened workspace, many trials."""

    def __init__(self, spec: WorkerSpec, gate: Any) -> None:
        import ray
        import torch

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(max(1, int(cpus)))  # its share of the node's cores, no more (no oversubscription)
        self._workspace = open_worker_workspace(spec)
        self._gate = gate

    def where(self) -> str:
        return worker_name()

    def evaluate(self, request: TrialRequest) -> TrialResult | None:
        """The trial's result, or None when the sweep was cancelled before it could start."""
        import ray

        if not ray.get(self._gate.admit.remote()):
            return None
        return evaluate_trial(self._workspace, request)


class RayEvaluator:
    """`workers` actors (default: one per GPU of the cluster, else one per CPU), each opening the workspace."""

    def __init__(self, spec: WorkerSpec, *, workers: int | None = None) -> None:
        import ray

        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        self.workers = workers or gpus or max(int(resources.get("CPU", 1)), 1)
        options = {"num_cpus": _cpus_per_worker(self.workers, gpus), "num_gpus": 1 if gpus else 0, "max_restarts": 0}
        self._gate = ray.remote(TrialGate).options(num_cpus=0).remote()
        worker = ray.remote(TrialWorker).options(**options)
        spec = replace(spec, workers=self.workers)  # all on one machine at worst: each plans with its share
        self._actors = [worker.remote(spec, self._gate) for _ in range(self.workers)]
        self.names = ray.get([a.where.remote() for a in self._actors])  # each has opened its workspace
        self._running: dict[Any, tuple[Any, TrialRequest]] = {}
        self._cancelled = False
        self._starts: tuple[float, ...] | None = None  # the gate's record, kept when it is closed
        self.retried = 0  # trials given to another worker after theirs died

    def run(self, requests: Sequence[TrialRequest], *, stop: Stop = lambda: False) -> Iterator[TrialResult]:
        import ray

        pending, idle = deque(requests), list(self._actors)

        def fill() -> None:
            while idle and pending and not (self._cancelled or stop()):
                actor, request = idle.pop(0), pending.popleft()
                self._running[actor.evaluate.remote(request)] = (actor, request)

        fill()
        try:
            while self._running:
                done, _ = ray.wait(list(self._running), num_returns=1, timeout=POLL_S)
                for ref in done:  # finished (so started) before any cancel: still handed on
                    actor, request = self._running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.TaskCancelledError:  # a cancel from another thread got to it first
                        continue
                    except ray.exceptions.RayActorError:
                        self._lost(actor, request, pending)
                        continue
                    idle.append(actor)
                    fill()  # the worker's next trial goes out before this one's result is handed on
                    if result is not None:
                        yield result
                if self._cancelled or stop():
                    self.cancel()
                    return
                fill()
                if pending and not self._actors:
                    raise WorkersLostError("the sweep's Ray workers", "all died", fix="check the workers' logs")
        finally:
            for ref in list(self._running):  # the caller stopped early: nothing of this batch runs on
                ray.cancel(ref)
            self._running.clear()

    def _lost(self, actor: Any, request: TrialRequest, pending: deque) -> None:
        self._actors.remove(actor)
        pending.appendleft(request)
        self.retried += 1

    def cancel(self) -> None:
        """Close the gate (no trial starts after this returns) and cancel the outstanding trials."""
        import ray

        self._cancelled = True
        ray.get(self._gate.close.remote())
        for ref in tuple(self._running):
            ray.cancel(ref)

    def starts(self) -> tuple[float, ...]:
        """When each trial started (epoch seconds), in order."""
        import ray

        return self._starts if self._starts is not None else tuple(ray.get(self._gate.starts.remote()))

    def close(self) -> None:
        import ray

        if self._starts is None:
            self._starts = self.starts()
        for actor in [*self._actors, self._gate]:
            ray.kill(actor)
        self._actors = []


def _cpus_per_worker(workers: int, gpus: int) -> int:
    """A GPU worker needs one core; CPU workers share the cores evenly, at most one node's worth each."""
    import ray

    if gpus:
        return 1
    nodes = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    total = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(total // workers, int(max(nodes, default=1))))
