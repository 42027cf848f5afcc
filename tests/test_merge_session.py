"""The merge session on its own: each call is planned once (one resolve of the method's parameters, the scale of
its final step found), its parts keep their data-home key, and it merges like the registry's kernels. The
incremental-merge guarantees through the Workspace are tests/test_incremental_merge.py."""

import dataclasses
import json

import pytest
import torch

from engine.cache.memory import ComputeCache
from engine.io.tensor_store import TensorStore
from engine.merge import METHODS, MergeMethod, apply
from engine.merge.session import MergeSession
from engine.pool.collection import load_collection, task_matrix


@pytest.fixture(scope="module")
def matrix(tiny_collection_dir):
    return task_matrix(load_collection(tiny_collection_dir))


def _session(matrix, tmp_path) -> MergeSession:
    def no_importance(kind: str) -> torch.Tensor:
        raise AssertionError(f"no method here reads importance ({kind})")

    return MergeSession(matrix, ComputeCache(), "pool-fingerprint", TensorStore(tmp_path / "parts"), no_importance)


@pytest.fixture
def resolves(monkeypatch):
    """Counts MergeMethod.resolve calls."""
    calls, original = [], MergeMethod.resolve

    def counted(self, given, *, num_tasks):
        calls.append(self.name)
        return original(self, given, num_tasks=num_tasks)

    monkeypatch.setattr(MergeMethod, "resolve", counted)
    return calls


@pytest.mark.parametrize(
    "name, first, moved",
    [
        ("ties", {"density": 0.3}, {"density": 0.3, "lam": 1.5}),  # parts, then a λ move from them
        ("dare", {"lam": [0.2, 0.5, 0.9]}, {"lam": [0.7, 0.1, 0.4]}),  # the cached mask, per-task λ
        ("task_arithmetic", {"lam": 0.3}, {"lam": 0.6}),  # no parts: the kernel each time
    ],
)
def test_each_merge_resolves_its_parameters_once(matrix, tmp_path, resolves, name, first, moved):
    session = _session(matrix, tmp_path)
    tasks = matrix.task_names
    for params in (first, moved):
        resolves.clear()
        merged = session.merge(tasks, name, params)
        assert resolves == [name]
        torch.testing.assert_close(merged, apply(name, matrix.theta0, matrix.T, params, spec=matrix.spec))


def test_the_plan_finds_the_scale_of_the_final_step(matrix, tmp_path):
    session, tasks = _session(matrix, tmp_path), matrix.task_names
    assert session.plan(tasks, "dare", {"lam": [0.4, 0.4, 0.4]}).scale == pytest.approx(0.4)
    assert session.plan(tasks, "dare", {"lam": [0.4, 0.5, 0.4]}).scale is None  # merged from the mask instead
    assert session.plan(tasks, "task_arithmetic", {"lam": 0.4}).scale is None  # no parts to scale
    plan = session.plan(tasks, METHODS["ties"], {"lam": 2.0})
    assert plan.scale == 2.0 and plan.expensive == (("density", 0.2),) and dict(plan.resolved)["lam"] == 2.0


def test_the_parts_key_is_the_data_homes_key(matrix, tmp_path):
    """Parts kept in the data home by an earlier version are found again: the key's fields are unchanged."""
    session, tasks = _session(matrix, tmp_path), matrix.task_names
    key = session.parts_key(session.plan(tasks, "iso_cts", {"share": 0.5, "alpha": 2.0}))
    assert json.loads(key) == {"workspace": "pool-fingerprint", "tasks": list(tasks), "method": "iso_cts", "share": 0.5}
    assert key == json.dumps({"workspace": "pool-fingerprint", "tasks": list(tasks), "method": "iso_cts", "share": 0.5})


@pytest.mark.parametrize("method", ["tsv_m", "iso_cts"])
def test_a_one_shot_session_keeps_no_factorization(matrix, tmp_path, method):
    """The merge command merges once: its session (keep_factors=False) leaves no per-layer factorization in the
    cache, and merges to the same bits as a session that keeps them for later moves."""
    keeping = _session(matrix, tmp_path / "a")
    one_shot = dataclasses.replace(_session(matrix, tmp_path / "b"), keep_factors=False)
    tasks = matrix.task_names
    assert torch.equal(keeping.merge(tasks, method, {}), one_shot.merge(tasks, method, {}))
    factors = lambda session: [k for k in session.cache._entries if "factors" in k]  # noqa: E731
    assert factors(keeping) and not factors(one_shot)
