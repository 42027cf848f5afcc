import pytest
import torch

from engine.eval.evaluate import evaluate
from engine.merge import apply
from engine.merge.analysis import cosine_similarity_matrix
from engine.workspace import Workspace


@pytest.fixture(scope="module")
def workspace(tiny_collection_dir, tmp_path_factory):
    return Workspace.open(tiny_collection_dir, cache_dir=tmp_path_factory.mktemp("cache"))


def test_compare_matches_a_direct_engine_call(workspace):
    tasks = ["colour", "texture"]
    comparison = workspace.compare(tasks, "task_arithmetic", {"lam": 0.4})
    m = workspace.matrix
    direct = evaluate(
        apply("task_arithmetic", m.theta0, m.T[[0, 2]], {"lam": 0.4}), workspace.suite, "interactive", tasks=tasks
    )
    assert comparison.merged.correct == direct.correct
    assert comparison.tasks == tuple(tasks) and set(comparison.finetuned) == set(tasks)
    own = evaluate(m.theta0 + m.T[2], workspace.suite, "interactive", tasks=["texture"]).accuracy["texture"]
    assert comparison.finetuned["texture"] == own
    assert comparison.mean_normalized == pytest.approx(
        sum(direct.accuracy[t] / comparison.finetuned[t] for t in tasks) / 2
    )


def test_sweep_best_value_maximises_normalized_accuracy(workspace):
    sweep = workspace.sweep(workspace.task_names, "task_arithmetic", {}, param="lam", values=[0.0, 0.5, 1.0])
    assert len(sweep.mean_accuracy) == 3 and set(sweep.per_task) == set(workspace.task_names)
    best = max(range(3), key=lambda i: (sweep.mean_normalized[i], -sweep.values[i]))
    assert sweep.best_value == sweep.values[best]
    at_zero = workspace.zero_shot("interactive")
    assert sweep.per_task["colour"][0] == at_zero["colour"]


def test_cosine_similarity_matrix():
    T = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    sim = cosine_similarity_matrix(T)
    assert torch.allclose(sim, torch.tensor([[1.0, 0, -1], [0, 1, 0], [-1, 0, 1]], dtype=torch.float64))


def test_a_dropped_workspace_is_freed_with_its_memoized_results(tiny_collection_dir, tmp_path):
    """The dashboard evicts workspaces of GBs; nothing in the engine may keep one alive."""
    import gc
    import weakref

    ws = Workspace.open(tiny_collection_dir, cache_dir=tmp_path / "cache")
    assert ws.zero_shot("test") is ws.zero_shot("test")  # memoized per instance
    ref = weakref.ref(ws)
    del ws
    gc.collect()
    assert ref() is None


def test_tangent_pair_drops_read_from_the_stored_products_equal_a_fresh_computation(workspace, tmp_path):
    """The workspace's drops come from J f(x; θ₀)·τ stored in the data home and kept per λ; a workspace on an
    empty cache directory, computing every product anew, gives the same drops."""
    from engine.taujp.preview import TangentPreview, tangent_pair_drops

    first = workspace.taujp.tangent_pair_drops(0.4)
    assert list((workspace.cache_dir / "jvp").rglob("*.safetensors")), "the products are stored"
    assert workspace.taujp.tangent_pair_drops(0.4) is first  # a second call at the same λ reads the cache
    m = workspace.matrix
    fresh = TangentPreview.build(workspace.suite, m.theta0, m.T, vectors=workspace.task_names)
    assert tangent_pair_drops(fresh, lam=0.4) == pytest.approx(first, abs=1e-6)


def test_the_workspace_is_a_thin_facade_of_at_most_fifteen_public_methods():
    """The Workspace opens a pool and delegates (docs: the house): merges to its `merges` session, importance maps
    to `importance` (engine/sta/store.py), τJp and the tangent features to `taujp` (engine/taujp/store.py)."""
    import inspect

    from engine.merge.session import MergeSession
    from engine.sta.store import ImportanceStore
    from engine.taujp.store import TauJpStore
    from engine.workspace import Workspace

    fields = set(Workspace.__dataclass_fields__)
    public = [name for name, _ in inspect.getmembers(Workspace) if not name.startswith("_") and name not in fields]
    assert len(public) <= 15, public
    hints = inspect.get_annotations(Workspace.merges.func, eval_str=True)
    assert hints["return"] is MergeSession
    assert inspect.get_annotations(Workspace.importance.func, eval_str=True)["return"] is ImportanceStore
    assert inspect.get_annotations(Workspace.taujp.func, eval_str=True)["return"] is TauJpStore
