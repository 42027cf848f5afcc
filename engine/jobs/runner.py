"""Background jobs: progress, cooperative cancel, a few jobs at a time per device, the rest queued.

A job is a plain function `fn(ctx: JobContext, **kwargs) -> result` that calls `ctx.report(...)`
between steps and `ctx.check_cancelled()` where stopping is safe. `LocalRunner` runs jobs on threads,
one worker per device: threads share the process's cached models and CUDA context (a process per job
would reload every model and could not share GPU tensors), and torch releases the GIL inside its
kernels. A GPU runs one job at a time (one queue slot per device: jobs there are big and share its memory);
the CPU runs `cpu_slots` at once (the dashboard's: config.json's `job_slots`), so a sweep need not wait
behind a fine-tune. `JobRunner` is the interface pages use, so another backend (e.g. Ray) can be added later
without touching pages or jobs.
Given a run log, the runner records every job there from its submission on (engine/runs/log.py): its
owner, a JSON description of what it runs with, its state, progress and last metrics; so a reload or a
restarted server finds it, and a runner started after a crash marks the jobs it left as interrupted.
A cancelled job that logged no run of its own is logged as a partial run with what it reached.
A job reads "starting" the moment a worker takes it, and each job names its expensive set-up (opening the
workspace, building heads, a zero-shot evaluation) before doing it, so a page never shows seconds of silence.
Each job runs with its share of the cores (`job_threads`), set in its worker thread when it starts and again
at each progress report: two OpenMP threads on a 2-core machine that other processes keep busy made a τJp
step 5–10× slower than one thread did (each parallel region waits for its descheduled thread), the main
reason a 60-step fine-tune took minutes instead of seconds on a loaded machine.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import torch

from engine.faults import fault_point
from engine.runs.log import RunLog
from engine.search.ref import WorkspaceRef
from engine.workspace import Workspace


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)
PROGRESS_WRITE_S = 0.5  # progress goes to the run log's jobs table at most this often (states at once)
STARTING = "starting"  # a job's message from the moment a worker takes it until the job reports its set-up


class Cancelled(Exception):
    """Raised by `JobContext.check_cancelled` once a cancel was requested."""


@dataclass(frozen=True)
class JobStatus:
    id: int
    name: str
    device: str
    state: JobState = JobState.QUEUED
    step: int = 0
    total: int = 0
    message: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)  # partial results so far
    result: Any = None
    error: str = ""  # the traceback of a failed job
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    stepping_since: float | None = None  # when the first step (or the first of this total) was reported
    stepping_from: int = 0  # the step reported then (engine/jobs/progress.py takes the rate from there)

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


class JobContext:
    """What a running job sees: its id (runs it logs name it), a progress reporter and the cancel flag."""

    def __init__(
        self,
        update: Callable[..., None],
        cancel: threading.Event,
        *,
        job_id: int | None = None,
        on_cancel: list[Callable[[], None]] | None = None,
    ) -> None:
        self._update, self._cancel = update, cancel
        self.job_id = job_id
        self._on_cancel = on_cancel if on_cancel is not None else []

    def on_cancel(self, stop: Callable[[], None]) -> None:
        """Have the runner's `cancel` call `stop` before it returns (a Ray sweep closes its gate there, so no
        trial starts once cancel has returned); called at once when the job is already cancelled."""
        self._on_cancel.append(stop)
        if self._cancel.is_set():
            stop()

    def report(self, step: int, total: int, message: str = "", metrics: Mapping[str, Any] | None = None) -> None:
        """Record how far the job got (in the run log too, when the runner has one)."""
        self._update(
            step=step, total=total, message=message, **({"metrics": dict(metrics)} if metrics is not None else {})
        )
        fault_point("job.mid_run")  # crash tests: die running, with this step on record

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()

    def starting(self, doing: str, *, total: int = 0) -> None:
        """Say which expensive set-up comes next, before the first step ("starting: building heads")."""
        self.report(0, total, f"{STARTING}: {doing}")


JobFn = Callable[..., Any]


class JobRunner(Protocol):
    def submit(self, name: str, fn: JobFn, *, device: str = "cpu", owner: str = "", **kwargs: Any) -> int: ...
    def status(self, job_id: int) -> JobStatus: ...
    def jobs(self) -> list[JobStatus]: ...
    def cancel(self, job_id: int) -> None: ...
    def wait(self, job_id: int, timeout: float | None = None) -> JobStatus: ...


class LocalRunner:
    """Threads, one FIFO queue per device with its slots' workers; all state lives in the instance (and,
    given `run_log`, in its jobs table too)."""

    def __init__(self, *, run_log: RunLog | None = None, threads: int | None = None, cpu_slots: int = 1) -> None:
        """`threads`: torch threads per job (None: `job_threads`' share of the cores, fewer on a busy machine);
        `cpu_slots`: jobs the CPU runs at once (a GPU device runs one)."""
        for name, n in (("threads", threads), ("cpu_slots", cpu_slots)):
            if n is not None and n < 1:
                raise ValueError(f"{name} must be at least 1, got {n}")
        self.threads, self.cpu_slots = threads, cpu_slots
        self._threads_in_use: dict[int, tuple[int, int]] = {}  # running job → (its worker thread, its threads)
        self._logged_at: dict[int, float] = {}  # job → when its progress last went to the run log (monotonic)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._status: dict[int, JobStatus] = {}
        self._cancel: dict[int, threading.Event] = {}
        self._on_cancel: dict[int, list[Callable[[], None]]] = {}
        self._queues: dict[str, queue.Queue] = {}
        self._ids = itertools.count(1)
        self.run_log = run_log
        if run_log is not None:
            run_log.mark_interrupted()  # what a crashed earlier server left queued or running

    def submit(
        self,
        name: str,
        fn: JobFn,
        *,
        device: str = "cpu",
        owner: str = "",
        described: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> int:
        """Queue `fn(ctx, **kwargs)` on `device`'s worker; `owner` is the session that asked for it, and
        `described` what the jobs table records of it (default: `describe(kwargs)`; a JobSpec's JSON)."""
        recorded = None
        if self.run_log is not None:
            kind = fn.__name__.removesuffix("_job")
            spec = describe(kwargs) if described is None else described
            recorded = self.run_log.add_job(name=name, kind=kind, owner=owner, device=device, spec=spec)
        with self._lock:
            job_id = recorded or next(self._ids)
            self._status[job_id] = JobStatus(id=job_id, name=name, device=device)
            self._cancel[job_id] = threading.Event()
            self._on_cancel[job_id] = []
            if device not in self._queues:
                self._queues[device] = queue.Queue()
                for slot in range(self.cpu_slots if device == "cpu" else 1):
                    threading.Thread(
                        target=self._worker, args=(device,), daemon=True, name=f"mergelab-jobs-{device}-{slot}"
                    ).start()
        self._queues[device].put((job_id, fn, kwargs))
        return job_id

    def status(self, job_id: int) -> JobStatus:
        with self._lock:
            if job_id not in self._status:
                raise KeyError(f"no job {job_id} in this runner")
            return self._status[job_id]

    def jobs(self) -> list[JobStatus]:
        with self._lock:
            return list(self._status.values())

    def cancel(self, job_id: int) -> None:
        """Ask a job to stop; a queued job is cancelled before it starts. What the job registered with
        `JobContext.on_cancel` runs before this returns."""
        self.status(job_id)  # KeyError for unknown ids
        self._cancel[job_id].set()
        for stop in list(self._on_cancel[job_id]):
            stop()

    def wait(self, job_id: int, timeout: float | None = None) -> JobStatus:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._status[job_id].state not in FINISHED:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"job {job_id} still {self._status[job_id].state.value} after {timeout} s")
                self._changed.wait(left)
            return self._status[job_id]

    def _update(self, job_id: int, **changes: Any) -> None:
        changes.update(self._stepping(self._status[job_id], changes))
        with self._lock:
            updated = replace(self._status[job_id], **changes)
        if self.run_log is not None and self._log_due(job_id, changes):  # first the file, so whoever the change
            state = changes.get("state")  # wakes finds it recorded
            progress = ("step", "total", "message", "metrics", "stepping_since", "stepping_from")
            self.run_log.update_job(
                job_id,
                state=state.value if state is not None else None,
                error=changes.get("error"),
                **{k: getattr(updated, k) for k in progress},
            )
        with self._changed:
            self._status[job_id] = replace(self._status[job_id], **changes)  # on the latest (another thread's)
            self._changed.notify_all()

    def _log_due(self, job_id: int, changes: Mapping[str, Any]) -> bool:
        """Whether this change goes to the jobs table now: a new state, an error, a set-up message and the
        first step always; other progress at most every PROGRESS_WRITE_S (each write is a SQLite commit and
        close, 26 ms on the loaded 2-core machine, against a τJp step of ~0.1 s on a quiet one; the next write
        carries the latest progress, and this runner's status always has it)."""
        now = time.monotonic()
        urgent = any(k in changes for k in ("state", "error", "stepping_since"))
        urgent = urgent or str(changes.get("message", "")).startswith(STARTING)
        with self._lock:
            if not urgent and now - self._logged_at.get(job_id, -PROGRESS_WRITE_S) < PROGRESS_WRITE_S:
                return False
            self._logged_at[job_id] = now
        return True

    @staticmethod
    def _stepping(status: JobStatus, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Where the job's rate is counted from: its first step, and again when its total changes."""
        step, total = changes.get("step"), changes.get("total", status.total)
        if step is None or step < 1 or (status.stepping_since is not None and total == status.total):
            return {}
        return {"stepping_since": time.time(), "stepping_from": step}

    def _worker(self, device: str) -> None:
        while True:
            job_id, fn, kwargs = self._queues[device].get()
            self._run(job_id, fn, kwargs, device)

    def _run(self, job_id: int, fn: JobFn, kwargs: Mapping[str, Any], device: str) -> None:
        cancel = self._cancel[job_id]
        if cancel.is_set():
            self._update(job_id, state=JobState.CANCELLED, finished_at=time.time())
            return
        self._fit_threads(job_id)
        self._update(job_id, state=JobState.RUNNING, started_at=time.time(), message=STARTING)

        def report(**changes: Any) -> None:
            self._fit_threads(job_id)
            self._update(job_id, **changes)

        ctx = JobContext(report, cancel, job_id=job_id, on_cancel=self._on_cancel[job_id])
        try:
            result = fn(ctx, **kwargs)
            final = {"state": JobState.DONE, "result": result}
        except Cancelled:
            final = {"state": JobState.CANCELLED}
            self._log_partial(job_id, fn)
        except Exception:  # noqa: BLE001 - a job's failure is recorded, the runner keeps serving
            final = {"state": JobState.FAILED, "error": traceback.format_exc()}
        finally:
            with self._lock:
                self._threads_in_use.pop(job_id, None)
            _free_device_memory(device)
        self._update(job_id, finished_at=time.time(), **final)

    def _fit_threads(self, job_id: int) -> None:
        """Give the job its share of the cores now (called in the job's worker thread: torch's thread count is
        per thread once set; threads started later inherit the latest setting)."""
        me = threading.get_ident()
        with self._lock:
            worker, current = self._threads_in_use.get(job_id, (me, 0))
            if worker != me:  # a report from another thread (a Ray callback): not the job's compute thread
                return
            others = [n for j, (_, n) in self._threads_in_use.items() if j != job_id]
            wanted = self.threads or job_threads(
                running=len(others) + 1,
                cores=os.cpu_count() or 1,
                load=os.getloadavg()[0],
                in_use=sum(others) + current,
            )
            self._threads_in_use[job_id] = (me, wanted)
        if wanted != current:
            torch.set_num_threads(wanted)

    def _log_partial(self, job_id: int, fn: JobFn) -> None:
        """A cancelled job that logged nothing itself: log what it reached, marked partial."""
        if self.run_log is None or self.run_log.runs(job_id=job_id):
            return
        status, record = self.status(job_id), self.run_log.job(job_id)
        self.run_log.record(
            fn.__name__.removesuffix("_job"),
            inputs={"job": record.spec},
            outputs={
                "partial": True,
                "step": status.step,
                "total": status.total,
                "message": status.message,  # its last progress line: what it was doing when stopped
                "reached": dict(status.metrics),
            },
            status="cancelled",
            device=status.device,
            job_id=job_id,
        )


def job_threads(*, running: int, cores: int, load: float, in_use: int) -> int:
    """Torch threads for one of `running` jobs: its share of the `cores`, no more than the cores other
    processes leave idle (`load`, the 1-minute load average, less the `in_use` threads of this runner's
    jobs), and at least 1. Our choice: an oversubscribed OpenMP team is far slower than a smaller one."""
    share = max(1, cores // max(1, running))
    busy_elsewhere = max(0.0, load - in_use)
    return max(1, min(share, cores - round(busy_elsewhere)))


def describe(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON description of a job's arguments, as the jobs table keeps it: plain values as they are,
    configs as their fields, a workspace by its collection, device and checkpoints' sha256."""
    return {name: _describe(value) for name, value in kwargs.items()}


def _describe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, Workspace):
        return dataclasses.asdict(WorkspaceRef.of(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _describe(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return type(value).__name__  # a live object (the run log): named, not serialised


def _free_device_memory(device: str) -> None:
    """Return the finished job's cached GPU blocks to the driver."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
