"""Process-wide cached resources: a workspace per (collection path, device, checkpoint choice), shared by
all sessions. The choice names the non-standard fine-tuned checkpoint of each task, ((task, name), ...).

Keys are strings and tuples of strings, never tensors. The cached objects are read-only: merges allocate
their own outputs (engine/workspace.py), so no session can change what another sees.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st
import torch

from engine.cache.memory import ComputeCache
from engine.home import ASSETS_DIR, DataHome
from engine.jobs.compare import MethodsComparison
from engine.jobs.plane import StoragePlane, load_plane
from engine.jobs.runner import LocalRunner
from engine.jobs.spec import JobSpec, WorkspaceRef
from engine.jobs.spec import submit as submit_spec
from engine.merge.analysis import cosine_similarity_matrix
from engine.merge.forgetting import ALPHAS, STA_MARGIN, STA_THRESHOLD, ForgettingCurve, negation_curve
from engine.models import pick_device
from engine.pool.access import open_for_user, unreadable_entries
from engine.pool.collection import CheckpointProgress, Collection
from engine.pool.convert import convert_pool as engine_convert_pool
from engine.pool.info import CheckpointInfo, checkpoint_family, pool_suite
from engine.pool.info import pool_checkpoints as engine_pool_checkpoints
from engine.runs.log import JobRecord, RunLog
from engine.sta.stats import ImportanceSummary
from engine.sta.stats import importance_summary as summarize_importance
from engine.workspace import Workspace
from ui import messages
from ui.figures import stored_forgetting_curve

DEFAULT_COLLECTION = str(ASSETS_DIR / "zoo")
Choice = tuple[tuple[str, str], ...]  # (task, checkpoint name) for tasks not on "standard"


def device_name() -> str:
    return pick_device().type


def allowed_collection(collection: str) -> Collection:
    """The collection (or pool) at a typed path as it is, every path it names confined to the allowed roots.
    A discovered pool's unreadable entries are left out here and refused per session by `workspace_or_stop`
    until its user confirms (the cached workspace is shared by every session)."""
    home = DataHome.from_env().ensure()
    return open_for_user(collection, home=home, policy=home.dashboard_policy(), finetunes=False, skip_unreadable=True)


def user_collection(collection: str) -> Collection:
    """The allowed collection plus the user's fine-tunes of its pretrained model (read on every call: a
    finished fine-tune job shows up at the next rerun); unreadable entries as in `allowed_collection`."""
    home = DataHome.from_env().ensure()
    return open_for_user(collection, home=home, policy=home.dashboard_policy(), skip_unreadable=True)


@dataclass(eq=False)
class WorkspaceSlot:
    """Holds one workspace once built. The slot, not the workspace, is cached, so a page can build it
    outside any cached function and show a progress bar while large pools are read."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    workspace: Workspace | None = None

    def get(self, build: Callable[[], Workspace]) -> Workspace:
        with self.lock:  # sessions asking at once wait for one build
            if self.workspace is None:
                self.workspace = build()
            return self.workspace


@st.cache_resource(show_spinner=False)
def compute_cache() -> ComputeCache:
    """The process's one cache of computed results, shared by every workspace (budget from config.json)."""
    return ComputeCache(DataHome.from_env().cache_budget_bytes())


@st.cache_resource(max_entries=6, show_spinner=False)
def _workspace_slot(collection: str, device: str, choice: Choice, store: str) -> WorkspaceSlot:
    """One slot per pool, device, checkpoint choice and config.json's "store" (changing it opens the pool anew)."""
    return WorkspaceSlot()


def _configured_store() -> str:
    """config.json's "store" ("auto" where config.json cannot be read: opening the workspace then reports it)."""
    from engine.errors import MergelabError

    try:
        return DataHome.from_env().store_choice()
    except MergelabError:
        return "auto"


def workspace(
    collection: str, device: str, choice: Choice = (), *, progress: CheckpointProgress | None = None
) -> Workspace:
    """The workspace of (collection, device, choice), built once per process."""

    def build() -> Workspace:
        home = DataHome.from_env().ensure()
        return Workspace.from_collection(
            user_collection(collection),
            cache_dir=home.cache,
            device=device,
            variants=dict(choice),
            on_checkpoint=progress,
            cache=compute_cache(),
            store=store,  # config.json's "store", else the memory plan's pick
        )

    store = _configured_store()
    return _workspace_slot(collection, device, tuple(choice), store).get(build)


@st.cache_resource(max_entries=4, show_spinner=False)
def task_similarity(collection: str, device: str, choice: Choice = ()) -> torch.Tensor:
    return cosine_similarity_matrix(workspace(collection, device, choice).matrix.T)


def pool_checkpoints(collection: str) -> tuple[CheckpointInfo, ...]:
    """What each checkpoint of the collection is (format, architecture, towers, variant), headers only."""
    return engine_pool_checkpoints(user_collection(collection))


def pool_summary(collection: str) -> str:
    """Which suite the pool's tasks make up (TA8, TALL14, TALL20) and whose fine-tunes they are."""
    opened = user_collection(collection)
    suite = pool_suite(opened)
    family = checkpoint_family(engine_pool_checkpoints(opened))
    return f"Suite: {'none of TA8, TALL14, TALL20' if suite is None else suite.describe()}. Checkpoints: {family}."


def default_conversion_folder(collection: str) -> str:
    return str(DataHome.from_env().root / "collections" / f"{Path(collection).stem}-safetensors")


def convert_pool(collection: str, target: str, *, progress: CheckpointProgress) -> Path:
    """Write the collection as a native one at `target` (a new folder under the allowed roots)."""
    home = DataHome.from_env().ensure()
    return engine_convert_pool(allowed_collection(collection), home.resolve_user_path(target), on_checkpoint=progress)


def checkpoint_size(path: Path) -> int:
    return Path(path).stat().st_size


def job_runner() -> LocalRunner:
    """One runner per server process and run log: jobs outlive the page (and session) that started them,
    and are recorded in the run log, so a reload or a restarted server still lists them."""
    return _job_runner(str(DataHome.from_env().ensure().runs / "runs.sqlite3"))


@st.cache_resource(max_entries=4)
def _job_runner(path: str) -> LocalRunner:
    home = DataHome.from_env()
    return LocalRunner(run_log=_run_log(path), threads=home.job_threads(), cpu_slots=home.job_slots())


def submit_job(spec: JobSpec) -> int:
    """Queue a job described by value; it runs on this process's cached workspace of the spec's reference."""
    return submit_spec(job_runner(), spec, owner=session_owner(), resolve=resolve_workspace)


def job_spec(kind: str, ws: Workspace, collection: str, choice: Choice, args: dict, *, name: str) -> JobSpec:
    """The spec of a job on the page's workspace: the one `workspace(collection, device_name(), choice)` gives."""
    ref = WorkspaceRef.of(ws, collection=collection, device=device_name())
    return JobSpec(kind, dataclasses.replace(ref, choice=tuple(choice)), args, name=name)


def resolve_workspace(ref: WorkspaceRef) -> Workspace:
    return workspace(ref.collection, ref.device, ref.choice)


def session_owner() -> str:
    """The browser's owner id (ui/owner.py: a cookie's token, hashed): the owner recorded with each job it
    starts, the same after a reload and in another tab of the same browser."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    from ui import owner

    return owner.owner() if get_script_run_ctx() is not None else "script"


def job_owner(job_id: int) -> str:
    """The session recorded as the job's owner ("" when the run log has no such job)."""
    log = job_runner().run_log
    try:
        return log.job(job_id).owner if log is not None else ""
    except KeyError:
        return ""


def owns_job(job_id: int) -> bool:
    """Whether this browser session started the job: on a shared server only it may cancel the job."""
    owner = job_owner(job_id)
    return bool(owner) and owner == session_owner()


def latest_job(kind: str, collection: str) -> JobRecord | None:
    """The newest job of `kind` on `collection` that this server's runner holds, whoever started it: after a
    reload (a new session; the same browser, so the same owner) the page finds the job it started. A job of
    an earlier server process (interrupted) is listed on Jobs & runs only."""
    held = {job.id for job in job_runner().jobs()}
    for record in run_log().jobs():
        on = record.spec.get("workspace", {}).get("collection")
        if record.kind == kind and record.id in held and on == collection:
            return record
    return None


def cancel_job(job_id: int) -> bool:
    """Cancel the job if this session owns it; another session's job is left running (returns False)."""
    if not owns_job(job_id):
        return False
    job_runner().cancel(job_id)
    return True


def run_log() -> RunLog:
    return _run_log(str(DataHome.from_env().ensure().runs / "runs.sqlite3"))


@st.cache_resource(max_entries=4)
def _run_log(path: str) -> RunLog:
    """One RunLog per file: its schema set-up runs once, not on every rerun (connections stay per call)."""
    return RunLog(Path(path))


@st.cache_resource(max_entries=32, show_spinner="Sweeping α over linspace(0, 2, 41)…")
def forgetting_curve(
    collection: str,
    device: str,
    target: str,
    method: str = "task_arithmetic",
    threshold: float = STA_THRESHOLD,
    margin: float = STA_MARGIN,
    choice: Choice = (),
) -> ForgettingCurve:
    """The negation curve of one target on the interactive split, computed once: moving α only reads it."""
    return negation_curve(
        workspace(collection, device, choice),
        target,
        method=method,
        threshold=threshold,
        margin=margin,
        alphas=ALPHAS,
        split="interactive",
    )


def shown_forgetting_curve(
    collection: str,
    device: str,
    target: str,
    method: str = "task_arithmetic",
    threshold: float = STA_THRESHOLD,
    margin: float = STA_MARGIN,
    choice: Choice = (),
) -> ForgettingCurve:
    """The curve the Forgetting page draws: the build's stored val sweep where it is of this setting (the
    collection's own checkpoints, the method's stored κ and ρ), so its chosen α is the one the stored methods
    table reports and changing target or method reads a file; else the sweep on the interactive split."""
    stored = stored_forgetting(collection) if not choice else None
    entry = ((stored or {}).get("targets", {}).get(target) or {}).get(method)
    if entry is not None:
        curve = stored_forgetting_curve(entry["curve"])
        if method == "task_arithmetic" or (curve.threshold, curve.margin) == (threshold, margin):
            return curve
    return forgetting_curve(collection, device, target, method, threshold, margin, choice)


@st.cache_resource(max_entries=16, show_spinner="Summarising the importance maps…")
def importance_summary(
    collection: str, device: str, kind: str, threshold: float, choice: Choice = ()
) -> ImportanceSummary:
    ws = workspace(collection, device, choice)
    return summarize_importance(ws.importance.codes(kind), ws.matrix.spec, tasks=ws.task_names, threshold=threshold)


SKIP_CONFIRMED = "skip_unreadable_confirmed"  # session state: collections whose unreadable entries were confirmed


def workspace_or_stop(collection: str, choice: Choice = ()) -> Workspace:
    """The cached workspace, or the engine's error on the page and the rest of the page skipped. A discovered
    pool with entries it cannot read is refused the same way, naming them, with a button to go on without
    them: the explicit confirmation, kept for this session and this collection."""
    from engine.errors import MergelabError

    slot = _workspace_slot(collection, device_name(), tuple(choice), _configured_store())
    bar = st.progress(0.0, text="Opening the collection…") if slot.workspace is None else None

    def report(done: int, total: int, task: str) -> None:
        if bar is not None:
            bar.progress(done / total, text=f"Read {done} of {total} fine-tuned checkpoints ({task})")

    try:
        opened = workspace(collection, device_name(), choice, progress=report)
    except MergelabError as exc:
        opened = None
        st.error(messages.shown(exc))
    if bar is not None:
        bar.empty()
    if opened is not None and opened.collection.skipped and collection not in st.session_state.get(SKIP_CONFIRMED, ()):
        st.error(messages.shown(unreadable_entries(opened.collection)))
        st.button("Open without them", key="confirm_skip_unreadable", on_click=_confirm_skip, args=(collection,))
        opened = None
    if opened is None:
        st.stop()
    return opened


def _confirm_skip(collection: str) -> None:
    st.session_state[SKIP_CONFIRMED] = (*st.session_state.get(SKIP_CONFIRMED, ()), collection)


@st.cache_data(max_entries=8, show_spinner=False)
def build_report(collection: str) -> dict | None:
    """The collection's report.json as stored at build time (None if it has none). Read from the collection
    alone, not its workspace: a page can draw the stored numbers before the tasks, heads and checkpoints load."""
    return allowed_collection(collection).build_report()


@st.cache_data(max_entries=8, show_spinner=False)
def variant_table(collection: str, variant: str) -> dict | None:
    """The collection's stored table of merges of `variant`'s checkpoints (the zoo's lora.json), None if none."""
    return allowed_collection(collection).variant_table(variant)


@st.cache_data(max_entries=8, show_spinner=False)
def stored_plane(collection: str) -> tuple[MethodsComparison, StoragePlane] | None:
    """The collection's stored comparison and storage–accuracy plane (the zoo's plane.json; None if none)."""
    return load_plane(allowed_collection(collection).root)


@st.cache_data(max_entries=8, show_spinner=False)
def stored_forgetting(collection: str) -> dict | None:
    """The collection's forgetting report as stored at build time (None if it has none), read like `build_report`."""
    return allowed_collection(collection).forgetting_report()
