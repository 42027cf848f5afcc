"""No behaviour change: the merged vector of every registered method on the shipped zoo, bit for bit.

tests/data/merge_sha256.json holds the sha256 of the float32 bytes of θ [P] for each case below: every
registered method at its default parameters, and a few other settings (per-task λ, other densities, drop rates
and seeds, ranks and shares, and a non-consecutive task subset, rows 0, 3 and 5). It was recorded before the
task store (issue 30) changed how merges read their task vectors, so a refactor that keeps every hash
changed nothing a user can see. The merges run on `THREADS` threads whatever the machine: LAPACK's SVDs (TSV-M,
Iso-C, Iso-CTS, CART) give other last bits on 1, 2 or 4 threads, and on one thread Iso-CTS's polar step does not
even converge on the subset (found while recording; 2 threads do). A torch upgrade may change the bits too: the
fixture names the torch it was recorded with, and after an upgrade the cases are re-recorded on purpose
(`python -m tests.test_merge_hashes`) once the summaries (float64 sums, checked to 1e-6 here) still agree.

WUDI runs 30 Adam steps instead of its default 300 (the same code path, a tenth of the time).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from engine.merge import METHODS, apply
from engine.params import TaskMatrix
from engine.pool.collection import Collection, load_collection, task_matrix
from engine.sta.importance import load_importance

ZOO = Path(__file__).resolve().parents[1] / "assets" / "zoo"
FIXTURE = Path(__file__).resolve().parent / "data" / "merge_sha256.json"
SUBSET = (0, 3, 5)  # rows of a non-consecutive subset: today a copy, tomorrow a list of indices
THREADS = 2  # the merges' thread count, fixed: the SVDs' last bits depend on it
FAST = {"wudi": {"steps": 30.0}}  # same path as the default, fewer Adam steps
OTHER = {  # settings off the defaults, beside them
    "task_arithmetic": [{"lam": [0.2, 0.5, -0.1, 0.3, 0.0, 0.7, 0.4, 0.1]}],
    "ties": [{"density": 0.5, "lam": 0.7}],
    "dare": [{"drop": 0.5, "seed": 7.0, "lam": 0.4}],
    "dare_ties": [{"drop": 0.3, "seed": 3.0}],
    "magnitude": [{"density": 0.05, "lam": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}],
    "sta": [{"threshold": 0.2, "lam": 0.8}],
    "iso_cts": [{"share": 0.5, "alpha": 1.3}],
    "cart": [{"rank_share": 0.3, "lam": 1.5}],
    "tsv_m": [{"alpha": 0.6}],
}


def cases() -> list[tuple[str, str, dict, tuple[int, ...] | None]]:
    """(case id, method, params, task rows or None for all) for every registered method."""
    found = []
    for name in sorted(METHODS):
        default = FAST.get(name, {})
        found.append((f"{name}/default", name, default, None))
        found.append((f"{name}/default/subset", name, default, SUBSET))
        for i, params in enumerate(OTHER.get(name, [])):
            found.append((f"{name}/other{i}", name, {**default, **params}, None))
    return found


@contextmanager
def fixed_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def zoo_importance(collection: Collection, matrix: TaskMatrix, kind: str) -> torch.Tensor:
    """The zoo's shipped importance codes uint8 [K, P] of `kind`, rows in T's order."""
    rows = [
        load_importance(
            collection.importance_path(task, kind),
            checkpoint_sha=collection.finetuned_sha256(task),
            numel=matrix.spec.numel,
        )
        for task in matrix.task_names
    ]
    return torch.stack(rows)  # [K, P]


def merged(
    collection: Collection, matrix: TaskMatrix, method: str, params: dict, rows: tuple[int, ...] | None
) -> torch.Tensor:
    kind = METHODS[method].importance
    importance = None if kind is None else zoo_importance(collection, matrix, kind)
    T = matrix.T if rows is None else matrix.T[list(rows)]  # [k, P]
    if rows is not None and importance is not None:
        importance = importance[list(rows)]
    if rows is not None and isinstance(params.get("lam"), list):
        params = {**params, "lam": [params["lam"][r] for r in rows]}
    with fixed_threads():
        return apply(method, matrix.theta0, T, params, importance=importance, spec=matrix.spec)  # [P]


def fingerprint(theta: torch.Tensor) -> dict:
    """sha256 of θ's float32 bytes, and float64 summaries that survive a change of the last bit."""
    values = theta.detach().cpu().contiguous().float()
    as64 = values.double()
    return {
        "sha256": hashlib.sha256(values.numpy().tobytes()).hexdigest(),
        "sum": float(as64.sum()),
        "abs_sum": float(as64.abs().sum()),
        "square_sum": float(as64.square().sum()),
    }


def compute_all() -> dict[str, dict]:
    collection = load_collection(ZOO)
    matrix = task_matrix(collection)
    return {case: fingerprint(merged(collection, matrix, m, p, r)) for case, m, p, r in cases()}


@pytest.fixture(scope="module")
def zoo():
    collection = load_collection(ZOO)
    return collection, task_matrix(collection)


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def test_the_fixture_covers_every_registered_method(recorded):
    assert sorted({case.split("/")[0] for case in recorded["cases"]}) == sorted(METHODS)
    assert sorted(recorded["cases"]) == sorted(case for case, *_ in cases())


@pytest.mark.parametrize("case, method, params, rows", cases(), ids=[c[0] for c in cases()])
def test_every_method_merges_the_zoo_to_the_recorded_bits(zoo, recorded, case, method, params, rows):
    assert recorded["torch"] == torch.__version__, "recorded with another torch: compare summaries, then re-record"
    got = fingerprint(merged(*zoo, method, params, rows))
    want = recorded["cases"][case]
    for key in ("sum", "abs_sum", "square_sum"):
        assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-6), key
    assert got["sha256"] == want["sha256"]


def test_seeded_methods_merge_to_the_same_bits_twice(zoo):
    """DARE's drop mask comes from its seed alone: two merges are bit-identical (so the hashes can be fixed)."""
    for method in ("dare", "dare_ties"):
        first = fingerprint(merged(*zoo, method, {"seed": 11.0}, None))
        assert fingerprint(merged(*zoo, method, {"seed": 11.0}, None)) == first
        assert fingerprint(merged(*zoo, method, {"seed": 12.0}, None))["sha256"] != first["sha256"]


if __name__ == "__main__":  # re-record (only on purpose: see the module docstring)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    document = {"torch": torch.__version__, "threads": THREADS, "cases": compute_all()}
    FIXTURE.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {len(document['cases'])} cases to {FIXTURE}")
