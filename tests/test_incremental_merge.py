"""Incremental merges through the Workspace: a move of a method's cheap parameter (λ, α) after the first merge
re-composes from cached parts and equals the method recomputed from scratch; per-task λ of masking methods
re-merge from the cached keep mask; an expensive-parameter change computes again; the cache keeps to its
budget. Every registered method is covered by iterating the registry; `guarantees(method)` names the checks a
method's declaration holds it to, which tests/test_method_modules.py runs on a dropped-in method module.

Equality is to float32 tolerance (`torch.testing.assert_close`'s defaults: rtol 1.3e-6, atol 1e-5): the cached
path rounds base + λ·τ_m once where a method's own kernel may order its products differently."""

from collections.abc import Callable

import pytest
import torch

from engine.cache.memory import ComputeCache
from engine.merge import METHODS, MergeMethod, apply
from engine.merge.analysis import sparsity_report
from engine.merge.session import KEEP_MASK_SHARE
from engine.pool.collection import load_collection
from engine.workspace import Workspace
from tests.builders import build_tiny_collection


def masking_per_task(method: MergeMethod) -> bool:
    return method.scale.per_task and method.keep_mask is not None


PER_TASK = sorted(name for name, m in METHODS.items() if m.scale.per_task)
MASKING_PER_TASK = [name for name in PER_TASK if masking_per_task(METHODS[name])]


@pytest.fixture(scope="module")
def collection(tiny_collection_dir):
    return load_collection(tiny_collection_dir)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One data home for the module: STA's importance maps and WUDI's parts are computed once and then read
    (each test still has a fresh in-memory cache, whose misses it counts)."""
    return tmp_path_factory.mktemp("incremental-home")


def _workspace(collection, cache_dir, cache: ComputeCache | None = None) -> Workspace:
    return Workspace.from_collection(collection, cache_dir=cache_dir, cache=cache or ComputeCache())


def _recomputed(ws: Workspace, method: str | MergeMethod, params) -> torch.Tensor:
    """The merge from scratch: the registry's function on the workspace's tensors, nothing cached."""
    m = ws.matrix
    return apply(
        method, m.theta0, m.T, params, importance=ws.merges.method_importance(method, ws.task_names), spec=m.spec
    )


def _moved(method: MergeMethod) -> float:
    """A value of the method's scale other than its default, inside its range."""
    scale = method.scale
    value = round(scale.low + 0.7 * (scale.high - scale.low), 2)
    assert value != scale.default
    return value


def _changed(method: MergeMethod) -> dict[str, float]:
    """The method's first expensive parameter moved off its default, to the low end of its range (the high end
    where that is the default): DARE's drop 0, STA's κ 0 (a mask of None: every entry), WUDI's 0 steps."""
    param = next(p for p in method.params if p.name == method.expensive[0])
    return {param.name: param.low if param.low != param.default else param.high}


def scale_move_equals_the_method_recomputed(ws: Workspace, method: MergeMethod) -> None:
    tasks, scale = ws.task_names, method.scale.name
    base = {"steps": 30.0} if method.iterative else {}  # WUDI: fewer Adam steps than its default, same path
    first = ws.merge(tasks, method, {**base, scale: method.scale.default})
    before = ws.cache.stats()
    moved = ws.merge(tasks, method, {**base, scale: _moved(method)})
    assert ws.cache.stats().misses == before.misses  # the move computed nothing expensive
    torch.testing.assert_close(moved, _recomputed(ws, method, {**base, scale: _moved(method)}))
    torch.testing.assert_close(first, _recomputed(ws, method, {**base, scale: method.scale.default}))
    if method.scale_parts is not None:
        assert ws.cache.stats().hits > before.hits  # it read its parts


def expensive_change_computes_again(ws: Workspace, method: MergeMethod) -> None:
    tasks, scale = ws.task_names, method.scale.name
    ws.merge(tasks, method, {scale: _moved(method)})
    before = ws.cache.stats().misses
    params = {scale: _moved(method), **_changed(method)}
    changed = ws.merge(tasks, method, params)
    assert ws.cache.stats().misses > before  # new parts for the new setting
    torch.testing.assert_close(changed, _recomputed(ws, method, params))
    again = ws.cache.stats().misses
    ws.merge(tasks, method, {**params, scale: method.scale.default})
    assert ws.cache.stats().misses == again


def per_task_lambdas_equal_the_method_recomputed(ws: Workspace, method: MergeMethod) -> None:
    """Masking methods merge again from the cached mask: the second move computes nothing and reads the mask."""
    tasks = ws.task_names
    first = ws.merge(tasks, method, {"lam": [0.2, 0.5, 0.9]})
    torch.testing.assert_close(first, _recomputed(ws, method, {"lam": [0.2, 0.5, 0.9]}))
    before = ws.cache.stats()
    moved = ws.merge(tasks, method, {"lam": [0.7, 0.1, 0.4]})
    after = ws.cache.stats()
    torch.testing.assert_close(moved, _recomputed(ws, method, {"lam": [0.7, 0.1, 0.4]}))
    assert after.misses == before.misses
    if masking_per_task(method):
        assert after.hits == before.hits + 1  # the cached keep mask
        assert after.bytes >= len(tasks) * ws.matrix.spec.numel  # it is kept: bool [K, P]


def equal_per_task_lambdas_merge_from_the_parts_of_one(ws: Workspace, method: MergeMethod) -> None:
    tasks = ws.task_names
    one = ws.merge(tasks, method, {"lam": 0.4})
    before = ws.cache.stats()
    each = ws.merge(tasks, method, {"lam": [0.4] * len(tasks)})
    assert torch.equal(each, one) and ws.cache.stats().misses == before.misses
    torch.testing.assert_close(each, _recomputed(ws, method, {"lam": [0.4] * len(tasks)}))


def guarantees(method: MergeMethod) -> list[Callable[[Workspace, MergeMethod], None]]:
    """The checks above that apply to `method`, from its declaration: what a new method is held to."""
    return [
        scale_move_equals_the_method_recomputed,
        *([expensive_change_computes_again] if method.expensive else []),
        *([per_task_lambdas_equal_the_method_recomputed] if method.scale.per_task else []),
        *([equal_per_task_lambdas_merge_from_the_parts_of_one] if masking_per_task(method) else []),
    ]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_scale_move_after_the_first_merge_equals_the_method_recomputed(collection, home, name):
    scale_move_equals_the_method_recomputed(_workspace(collection, home), METHODS[name])


@pytest.mark.parametrize("name", sorted(n for n, m in METHODS.items() if m.expensive))
def test_an_expensive_change_computes_again_and_equals_the_method_recomputed(collection, home, name):
    expensive_change_computes_again(_workspace(collection, home), METHODS[name])


def test_the_registry_has_masking_methods_with_a_per_task_lambda():
    assert MASKING_PER_TASK  # so the per-task tests below cover the cached-mask path


@pytest.mark.parametrize("name", PER_TASK)
def test_per_task_lambdas_that_differ_equal_the_method_recomputed(collection, home, name):
    per_task_lambdas_equal_the_method_recomputed(_workspace(collection, home), METHODS[name])


@pytest.mark.parametrize("name", MASKING_PER_TASK)
def test_equal_per_task_lambdas_merge_from_the_parts_of_one_lambda(collection, home, name):
    equal_per_task_lambdas_merge_from_the_parts_of_one(_workspace(collection, home), METHODS[name])


def test_a_sparse_setting_costs_the_cache_one_vector(collection, home):
    """TIES's parts are (θ₀, τ_m): the base is θ₀ itself, so the cache holds one [P] for the setting."""
    ws = _workspace(collection, home)
    ws.merge(ws.task_names, "ties", {"density": 0.3})
    stats, vector = ws.cache.stats(), ws.matrix.spec.numel * 4
    assert stats.entries == 1 and vector <= stats.bytes < vector + 1024
    base, _ = ws.merges.parts(ws.task_names, "ties", {"density": 0.3})
    assert base is ws.matrix.theta0


def test_the_keep_panel_shares_the_mask_of_a_per_task_merge(collection, home):
    ws = _workspace(collection, home)
    tasks, params = ws.task_names, {"drop": 0.5, "seed": 3.0, "lam": [0.2, 0.5, 0.9]}
    ws.merge(tasks, "dare", params)
    before = ws.cache.stats()
    report = ws.merges.sparsity(tasks, "dare_ties", {"drop": 0.5, "seed": 3.0})  # DARE-TIES drops with the same mask
    assert ws.cache.stats().misses == before.misses and ws.cache.stats().hits == before.hits + 1
    direct = sparsity_report("dare_ties", ws.matrix.T, {"drop": 0.5, "seed": 3.0}, tasks=tasks, spec=ws.matrix.spec)
    assert report == direct
    before = ws.cache.stats()
    ws.merge(tasks, "dare_ties", {"drop": 0.5, "seed": 3.0, "lam": 1.5})  # its parts read the cached mask
    assert ws.cache.stats().misses == before.misses + 1 and ws.cache.stats().hits == before.hits + 1


def test_a_tiny_budget_is_kept_and_a_mask_too_big_for_its_share_is_recomputed(collection, home):
    """5·P bytes: one [P] float32 direction fits, a bool [3, P] mask exceeds its share (half): never cached."""
    P = _workspace(collection, home).matrix.spec.numel
    budget = 5 * P
    ws = _workspace(collection, home, ComputeCache(budget))
    tasks = ws.task_names
    assert not ws.merges.mask_fits(tasks) and len(tasks) * P <= budget and len(tasks) * P > KEEP_MASK_SHARE * budget
    steps = [
        ("dare", {"lam": [0.2, 0.5, 0.9]}),
        ("magnitude", {"density": 0.3, "lam": [0.9, 0.1, 0.4]}),
        ("dare", {"lam": [0.3, 0.3, 0.6]}),
    ]
    for name, params in steps:
        torch.testing.assert_close(ws.merge(tasks, name, params), _recomputed(ws, name, params))
        assert ws.cache.stats().entries == 0  # no mask kept
    for name, params in [("ties", {"density": 0.3}), ("ties", {"density": 0.5}), ("magnitude", {"lam": 0.5})]:
        torch.testing.assert_close(ws.merge(tasks, name, params), _recomputed(ws, name, params))
        stats = ws.cache.stats()
        assert stats.bytes <= budget and stats.entries == 1
    assert ws.cache.stats().evictions == 2
    report = ws.merges.sparsity(tasks, "ties", {"density": 0.3})
    assert report == sparsity_report("ties", ws.matrix.T, {"density": 0.3}, tasks=tasks, spec=ws.matrix.spec)
    assert ws.cache.stats().bytes <= budget


def test_changed_checkpoints_miss_the_cached_parts(tmp_path):
    root = build_tiny_collection(tmp_path / "pool", seed=0)
    cache = ComputeCache()
    old = _workspace(load_collection(root), tmp_path / "cache", cache)
    merged = old.merge(old.task_names, "ties", {"density": 0.3, "lam": 0.8})
    build_tiny_collection(root, seed=1)  # the same folder, every checkpoint rewritten
    new = _workspace(load_collection(root), tmp_path / "cache", cache)
    before = cache.stats().misses
    remerged = new.merge(new.task_names, "ties", {"density": 0.3, "lam": 0.8})
    assert cache.stats().misses == before + 1 and not torch.equal(remerged, merged)
    torch.testing.assert_close(remerged, _recomputed(new, "ties", {"density": 0.3, "lam": 0.8}))


def test_keep_is_only_for_masking_methods_and_must_match_the_task_vectors():
    from engine.errors import ParameterError

    T = torch.randn(2, 6)
    with pytest.raises(ParameterError, match="task_arithmetic.keep: is no masking method"):
        apply("task_arithmetic", torch.zeros(6), T, {}, keep=torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(ParameterError, match="ties.keep: got torch.bool \\(2, 5\\)"):
        apply("ties", torch.zeros(6), T, {}, keep=torch.ones(2, 5, dtype=torch.bool))
    keep = METHODS["ties"].kept(T, {"density": 0.5})
    given = apply("ties", torch.zeros(6), T, {"density": 0.5}, keep=keep)
    assert torch.equal(given, apply("ties", torch.zeros(6), T, {"density": 0.5}))


def test_another_choice_of_tasks_misses_the_parts_and_the_mask(collection, home):
    ws = _workspace(collection, home)
    ws.merge(ws.task_names, "dare", {"lam": [0.2, 0.5, 0.9]})
    ws.merge(ws.task_names, "dare", {"lam": 0.5})
    pair = ["texture", "colour"]
    before = ws.cache.stats().misses
    m = ws.matrix
    for params in ({"lam": [0.2, 0.9]}, {"lam": 0.5}):
        merged = ws.merge(pair, "dare", params)
        torch.testing.assert_close(merged, apply("dare", m.theta0, m.rows(pair), params))
    assert ws.cache.stats().misses == before + 2  # the pair's own mask and parts


def test_scale_parts_need_one_cheap_parameter_which_may_be_per_task():
    from engine.errors import ParameterError
    from engine.merge import CompareGrid, Param
    from engine.merge.sparse_methods import magnitude, magnitude_keep, magnitude_parts

    density = Param("density", 0.2, 0.01, 1.0, 0.01, "kept")
    lam = Param("lam", 1.0, 0.0, 2.0, 0.1, "scale", per_task=True)
    made = MergeMethod(
        "m", "M", "", (density, lam), magnitude, selection="magnitude", cheap=("lam",), keep_mask=magnitude_keep,
        scale_parts=magnitude_parts, grid=CompareGrid.none("a test's"),
    )  # fmt: skip
    assert made.common_scale({"density": 0.2, "lam": torch.tensor([0.5, 0.5])}) == 0.5
    assert made.common_scale({"density": 0.2, "lam": torch.tensor([0.5, 0.6])}) is None
    with pytest.raises(ParameterError, match="has scale_parts but not one cheap parameter"):
        MergeMethod(
            "m", "M", "", (density, lam), magnitude, selection="magnitude", cheap=("lam", "density"),
            keep_mask=magnitude_keep, scale_parts=magnitude_parts, grid=CompareGrid.none("a test's"),
        )  # fmt: skip
