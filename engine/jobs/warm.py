"""Warm a pool before a class: compute once what the dashboard's pages compute on their first open.

On a fresh server a page's first open pays for: the tasks' images and zero-shot heads (the suite's caches),
the Merge page's opening numbers (the fine-tuned and merged models evaluated on the interactive split, stored
as engine/eval/stored.py says), the tangent features of the interactive split (Merge's preview, the λ
landscape's preview, Interference's λ slider), the τJp matrix (Interference), the STA importance maps (STA
merges, Forgetting), and a slow method's parts (WUDI's Adam steps; a large model's SVDs) at the setting the
Merge page opens it with. `warm_workspace` computes each that is missing into the workspace's cache folder (the
data home's, where the pages read), and times it: a second run only reads.

A collection may ship the opening numbers, the tangent features and the parts (its manifest's "warm" folder,
laid out as the data home's cache: `results/`, `jvp/`, `merge_parts/`): each is keyed by the checkpoints'
tensors_sha256, the evaluation data (images' sha256, or a generated task's seeded entry) and the setting, never
by a path, so they are found wherever the collection is unpacked. The demo zoo ships
its own (`python -m engine zoo add-warm`).

A slow method opens at the setting the collection's stored method comparison chose on val (the zoo's
report.json → methods; Compare's table), where it has one, else at its declared defaults: WUDI on the zoo
opens at 1000 steps, where it beats task arithmetic, instead of 300, where it does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from engine.merge import METHODS, MergeMethod
from engine.workspace import Workspace

Progress = Callable[[str], None]  # the step about to run
IMPORTANCE_KINDS = ("tau", "theta", "grad0")  # STA merges (tau, theta) and Forgetting (grad0)
OPENING_METHOD = "task_arithmetic"  # what the Merge page opens with: every task, the method's declared defaults


@dataclass(frozen=True)
class WarmStep:
    name: str  # e.g. "tangent features (interactive)", "parts: wudi steps=1000"
    seconds: float  # to compute it, or to read it when it was stored already


@dataclass(frozen=True)
class WarmReport:
    collection: str
    tasks: tuple[str, ...]
    steps: tuple[WarmStep, ...]

    @property
    def seconds(self) -> float:
        return round(sum(s.seconds for s in self.steps), 2)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": self.seconds}


def opening_setting(report: Mapping[str, Any] | None, method: MergeMethod) -> dict[str, float]:
    """The expensive parameters a slow (iterative) method opens with, given its collection's build report
    (`Collection.build_report`): the ones its stored comparison chose on val, else {} (the declared defaults).
    Other methods open at their declared defaults."""
    if not method.iterative:
        return {}
    rows = (report or {}).get("methods", {}).get("results", [])
    chosen = next((row["params"] for row in rows if row.get("method") == method.name), {})
    return {name: float(chosen[name]) for name in method.expensive if name in chosen}


def warm_workspace(ws: Workspace, *, progress: Progress | None = None) -> WarmReport:
    """Every first-open computation of the pages for `ws`'s tasks, into its cache folder (see the module)."""
    say = progress or (lambda name: None)
    steps: list[WarmStep] = []

    def timed(name: str, compute: Callable[[], object]) -> None:
        say(name)
        start = time.perf_counter()
        compute()
        steps.append(WarmStep(name, round(time.perf_counter() - start, 3)))

    timed("Merge's opening numbers (interactive)", lambda: ws.compare(ws.task_names, OPENING_METHOD, {}, store=True))
    timed("tangent features (interactive)", lambda: ws.taujp.tangent_preview("interactive"))
    timed("τJp matrix (val)", ws.taujp.matrix)
    for kind in IMPORTANCE_KINDS:
        timed(f"importance maps ({kind})", lambda kind=kind: ws.importance.codes(kind))
    for method, params in slow_settings(ws).items():
        shown = " ".join(f"{k}={v:g}" for k, v in params.items())
        timed(f"parts: {method} {shown}".rstrip(), lambda m=method, p=params: ws.merges.parts(ws.task_names, m, p))
    return WarmReport(str(ws.collection.root), ws.task_names, tuple(steps))


def slow_settings(ws: Workspace) -> dict[str, Mapping[str, float]]:
    """The opening setting of each method whose parts the Merge page computes in a background job (iterative,
    or a large model's factorizations: `MergeSession.slow`)."""
    report = ws.collection.build_report()  # read once, not per method
    return {
        name: opening_setting(report, method)
        for name, method in METHODS.items()
        if method.scale_parts is not None and ws.merges.slow(method)
    }
